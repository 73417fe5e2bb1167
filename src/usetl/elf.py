"""ELF64 reading: headers, program headers and the dynamic section.

Used by the loader (to place an executable and its interpreter in guest
memory) and by the image baker (to find the shared libraries a binary needs
without running ldd). Struct and field names follow <elf.h>.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

ELFMAG = b"\x7fELF"
ELFCLASS64 = 2
ELFDATA2LSB = 1
EM_X86_64 = 62

ET_EXEC = 2
ET_DYN = 3

PT_LOAD = 1
PT_DYNAMIC = 2
PT_INTERP = 3
PT_PHDR = 6
PT_GNU_STACK = 0x6474E551

PF_X = 1
PF_W = 2
PF_R = 4

DT_NULL = 0
DT_NEEDED = 1
DT_STRTAB = 5
DT_SONAME = 14
DT_STRSZ = 10
DT_RPATH = 15
DT_RUNPATH = 29


class ElfError(Exception):
    """The file is not an ELF64 x86-64 object this project can load."""


class Elf64_Ehdr(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [
        ("e_ident", ctypes.c_uint8 * 16),
        ("e_type", ctypes.c_uint16),
        ("e_machine", ctypes.c_uint16),
        ("e_version", ctypes.c_uint32),
        ("e_entry", ctypes.c_uint64),
        ("e_phoff", ctypes.c_uint64),
        ("e_shoff", ctypes.c_uint64),
        ("e_flags", ctypes.c_uint32),
        ("e_ehsize", ctypes.c_uint16),
        ("e_phentsize", ctypes.c_uint16),
        ("e_phnum", ctypes.c_uint16),
        ("e_shentsize", ctypes.c_uint16),
        ("e_shnum", ctypes.c_uint16),
        ("e_shstrndx", ctypes.c_uint16),
    ]


class Elf64_Phdr(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [
        ("p_type", ctypes.c_uint32),
        ("p_flags", ctypes.c_uint32),
        ("p_offset", ctypes.c_uint64),
        ("p_vaddr", ctypes.c_uint64),
        ("p_paddr", ctypes.c_uint64),
        ("p_filesz", ctypes.c_uint64),
        ("p_memsz", ctypes.c_uint64),
        ("p_align", ctypes.c_uint64),
    ]


class Elf64_Dyn(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [("d_tag", ctypes.c_int64), ("d_val", ctypes.c_uint64)]


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise ElfError(f"{where}: a name that is not UTF-8: {raw!r}") from None


@dataclass
class ElfFile:
    """A parsed ELF64 little-endian x86-64 file (the bytes are kept)."""

    data: bytes
    header: Elf64_Ehdr
    segments: list[Elf64_Phdr]
    interp: str | None = None
    needed: list[str] = field(default_factory=list)
    runpath: list[str] = field(default_factory=list)
    soname: str | None = None  # DT_SONAME: the name ld.so matches a DT_NEEDED entry against

    @classmethod
    def from_path(cls, path: str) -> ElfFile:
        with open(path, "rb") as f:
            return cls.parse(f.read(), name=path)

    @classmethod
    def parse(cls, data: bytes, name: str = "<bytes>") -> ElfFile:
        if len(data) < ctypes.sizeof(Elf64_Ehdr) or data[:4] != ELFMAG:
            raise ElfError(f"{name}: not an ELF file")
        eh = Elf64_Ehdr.from_buffer_copy(data)
        if eh.e_ident[4] != ELFCLASS64 or eh.e_ident[5] != ELFDATA2LSB:
            raise ElfError(f"{name}: not a 64-bit little-endian ELF file")
        if eh.e_machine != EM_X86_64:
            raise ElfError(f"{name}: not an x86-64 ELF file (e_machine={eh.e_machine})")
        if eh.e_type not in (ET_EXEC, ET_DYN):
            raise ElfError(f"{name}: not an executable or shared object (e_type={eh.e_type})")
        if eh.e_phentsize != ctypes.sizeof(Elf64_Phdr):
            raise ElfError(f"{name}: unexpected program header size {eh.e_phentsize}")
        end = eh.e_phoff + eh.e_phnum * eh.e_phentsize
        if end > len(data):
            raise ElfError(f"{name}: program headers run past the end of the file")
        segs = [
            Elf64_Phdr.from_buffer_copy(data, eh.e_phoff + i * eh.e_phentsize)
            for i in range(eh.e_phnum)
        ]
        elf = cls(data=data, header=eh, segments=segs)
        for ph in segs:
            if ph.p_offset + ph.p_filesz > len(data):
                raise ElfError(f"{name}: segment runs past the end of the file")
            if ph.p_type == PT_INTERP:
                raw = data[ph.p_offset : ph.p_offset + ph.p_filesz].split(b"\0")[0]
                elf.interp = _decode(raw, name)
            elif ph.p_type == PT_DYNAMIC:
                elf._read_dynamic(ph)
        return elf

    def _read_dynamic(self, dyn: Elf64_Phdr) -> None:
        entries = []
        size = ctypes.sizeof(Elf64_Dyn)
        for off in range(dyn.p_offset, dyn.p_offset + dyn.p_filesz - size + 1, size):
            d = Elf64_Dyn.from_buffer_copy(self.data, off)
            if d.d_tag == DT_NULL:
                break
            entries.append((d.d_tag, d.d_val))
        strtab = next((v for t, v in entries if t == DT_STRTAB), None)
        if strtab is None:
            return
        stroff = self.vaddr_to_offset(strtab)

        def string(idx: int) -> str:
            start = stroff + idx
            end = self.data.find(b"\0", start)
            if end < 0:
                raise ElfError("a dynamic-section string runs past the end of the file")
            return _decode(self.data[start:end], "dynamic section")

        for tag, val in entries:
            if tag == DT_NEEDED:
                self.needed.append(string(val))
            elif tag in (DT_RUNPATH, DT_RPATH):
                self.runpath.extend(p for p in string(val).split(":") if p)
            elif tag == DT_SONAME:
                self.soname = string(val)

    def vaddr_to_offset(self, vaddr: int) -> int:
        for ph in self.load_segments:
            if ph.p_vaddr <= vaddr < ph.p_vaddr + ph.p_filesz:
                return vaddr - ph.p_vaddr + ph.p_offset
        raise ElfError(f"address {vaddr:#x} is in no loaded segment")

    @property
    def load_segments(self) -> list[Elf64_Phdr]:
        return [ph for ph in self.segments if ph.p_type == PT_LOAD]

    @property
    def is_pie(self) -> bool:
        return self.header.e_type == ET_DYN

    def span(self) -> tuple[int, int]:
        """Lowest and highest virtual address covered by PT_LOAD segments."""
        loads = self.load_segments
        if not loads:
            raise ElfError("no PT_LOAD segments")
        lo = min(ph.p_vaddr for ph in loads)
        hi = max(ph.p_vaddr + ph.p_memsz for ph in loads)
        return lo, hi
