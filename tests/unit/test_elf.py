"""usetl.elf: ElfFile checked against binutils' readelf on real binaries.

The host interpreter, its libpython (when shared) and small programs built
here with gcc (static, PIE, non-PIE) are parsed and compared with what
`readelf` prints; malformed inputs must raise ElfError and nothing else.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from usetl.elf import ET_DYN, ET_EXEC, PT_INTERP, PT_LOAD, ElfError, ElfFile

READELF = shutil.which("readelf")
GCC = shutil.which("gcc")
needs_readelf = pytest.mark.skipif(READELF is None, reason="readelf (binutils) is not installed")
needs_gcc = pytest.mark.skipif(GCC is None, reason="gcc is not installed")


def interpreters() -> list[str]:
    """The host's CPython binary, found in ways that see through a venv."""
    paths = [os.path.realpath(sys._base_executable), os.path.realpath("/proc/self/exe")]
    return sorted(set(paths))


def libpython() -> str | None:
    libdir, name = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    if not libdir or not name or not name.endswith(".so") and ".so." not in name:
        return None
    path = os.path.join(libdir, name)
    return os.path.realpath(path) if os.path.exists(path) else None


def readelf(*args: str) -> str:
    assert READELF is not None
    return subprocess.run(
        [READELF, "-W", *args], capture_output=True, text=True, check=True,
        env={**os.environ, "LC_ALL": "C"},
    ).stdout


def readelf_interp(path: str) -> str | None:
    m = re.search(r"\[Requesting program interpreter: (.*)\]", readelf("-l", path))
    return m.group(1) if m else None


def readelf_dynamic(path: str, kind: str) -> list[str]:
    """Values of one dynamic tag: NEEDED -> library names, RUNPATH/RPATH -> paths."""
    out = []
    for line in readelf("-d", path).splitlines():
        m = re.search(rf"\({kind}\)\s+.*?\[(.*)\]", line)
        if m:
            out.append(m.group(1))
    return out


def readelf_loads(path: str) -> list[tuple[int, int, int, int]]:
    """(offset, vaddr, filesz, memsz) of each LOAD program header."""
    loads = []
    for line in readelf("-l", path).splitlines():
        fields = line.split()
        if fields and fields[0] == "LOAD":
            offset, vaddr, _paddr, filesz, memsz = (int(x, 16) for x in fields[1:6])
            loads.append((offset, vaddr, filesz, memsz))
    return loads


def readelf_type(path: str) -> str:
    m = re.search(r"^\s*Type:\s+(\w+)", readelf("-h", path), re.M)
    assert m
    return m.group(1)


def compile_c(tmp_path: Path, name: str, *flags: str, source: str | None = None) -> str:
    assert GCC is not None
    src = tmp_path / f"{name}.c"
    src.write_text(source or '#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n')
    out = tmp_path / name
    r = subprocess.run([GCC, *flags, "-o", str(out), str(src)], capture_output=True, text=True)
    if r.returncode and "-static" in flags and "cannot find -lc" in r.stderr:
        pytest.skip("no static libc (libc6-dev's libc.a) for gcc -static")
    assert r.returncode == 0, r.stderr
    return str(out)


# -- the host interpreter -------------------------------------------------------


@needs_readelf
@pytest.mark.parametrize("path", interpreters())
def test_host_interpreter_matches_readelf(path: str) -> None:
    elf = ElfFile.from_path(path)
    assert elf.interp == readelf_interp(path)
    assert elf.interp is not None and elf.interp.startswith("/")
    assert elf.needed == readelf_dynamic(path, "NEEDED")
    assert elf.needed, "the host CPython is dynamically linked: it needs at least libc"
    runpath = [p for v in readelf_dynamic(path, "RUNPATH") + readelf_dynamic(path, "RPATH")
               for p in v.split(":") if p]
    assert elf.runpath == runpath
    assert [(p.p_offset, p.p_vaddr, p.p_filesz, p.p_memsz) for p in elf.load_segments] == (
        readelf_loads(path)
    )
    assert elf.is_pie == (readelf_type(path) == "DYN")


@needs_readelf
def test_interpreter_of_python_is_itself_an_elf_without_interp() -> None:
    exe = ElfFile.from_path(interpreters()[0])
    ldso = ElfFile.from_path(os.path.realpath(exe.interp))
    assert ldso.interp is None
    assert ldso.header.e_type == ET_DYN
    lo, hi = ldso.span()
    assert lo == 0 and hi > 0x1000
    assert ldso.header.e_entry < hi


@needs_readelf
def test_libpython_matches_readelf() -> None:
    path = libpython()
    if path is None:
        pytest.skip("this CPython is linked statically against libpython")
    elf = ElfFile.from_path(path)
    assert elf.interp is None
    assert elf.header.e_type == ET_DYN
    assert elf.needed == readelf_dynamic(path, "NEEDED")
    assert "libc.so.6" in elf.needed


# -- programs built here ----------------------------------------------------------


@needs_gcc
@needs_readelf
def test_static_executable_has_no_interp_and_is_not_pie(tmp_path: Path) -> None:
    path = compile_c(tmp_path, "static", "-static", "-O1")
    elf = ElfFile.from_path(path)
    assert readelf_type(path) == "EXEC"
    assert elf.header.e_type == ET_EXEC
    assert elf.interp is None
    assert not elf.is_pie
    assert elf.needed == []
    assert not any(p.p_type == PT_INTERP for p in elf.segments)
    lo, hi = elf.span()
    assert lo >= 0x400000 and lo < elf.header.e_entry < hi
    assert [(p.p_offset, p.p_vaddr, p.p_filesz, p.p_memsz) for p in elf.load_segments] == (
        readelf_loads(path)
    )


@needs_gcc
@needs_readelf
def test_pie_has_is_pie_and_interp(tmp_path: Path) -> None:
    path = compile_c(tmp_path, "pie", "-fPIE", "-pie", "-O1")
    elf = ElfFile.from_path(path)
    assert elf.is_pie
    assert elf.interp == readelf_interp(path) is not None
    assert elf.needed == readelf_dynamic(path, "NEEDED") == ["libc.so.6"]
    assert elf.span()[0] == 0


@needs_gcc
@needs_readelf
def test_non_pie_dynamic_executable(tmp_path: Path) -> None:
    path = compile_c(tmp_path, "nopie", "-fno-PIE", "-no-pie", "-O1")
    elf = ElfFile.from_path(path)
    assert not elf.is_pie
    assert elf.interp == readelf_interp(path) is not None
    assert elf.needed == ["libc.so.6"]


@needs_gcc
@needs_readelf
def test_needed_and_runpath_of_a_shared_library(tmp_path: Path) -> None:
    path = compile_c(
        tmp_path, "libx.so", "-shared", "-fPIC", "-Wl,--no-as-needed", "-lm",
        "-Wl,-rpath,/opt/one:/opt/two", "-Wl,--enable-new-dtags", "-Wl,-soname,libx.so.1",
        source="int f(int x) { return x + 1; }\n",
    )
    elf = ElfFile.from_path(path)
    assert elf.needed == readelf_dynamic(path, "NEEDED")
    assert "libm.so.6" in elf.needed
    assert elf.runpath == ["/opt/one", "/opt/two"]
    assert elf.soname == readelf_dynamic(path, "SONAME")[0] == "libx.so.1"
    assert elf.interp is None


# -- malformed input ---------------------------------------------------------------


def elf64_header(**overrides: int) -> bytearray:
    """A minimal ELF64 x86-64 ET_EXEC header with no program headers."""
    fields = {
        "ei_class": 2, "ei_data": 1, "e_type": ET_EXEC, "e_machine": 62, "e_phoff": 64,
        "e_phentsize": 56, "e_phnum": 0,
    }
    fields.update(overrides)
    ident = b"\x7fELF" + bytes([fields["ei_class"], fields["ei_data"], 1]) + bytes(9)
    return bytearray(ident + struct.pack(
        "<HHIQQQIHHHHHH", fields["e_type"], fields["e_machine"], 1, 0x401000,
        fields["e_phoff"], 0, 0, 64, fields["e_phentsize"], fields["e_phnum"], 64, 0, 0,
    ))


def test_minimal_crafted_header_parses() -> None:
    # The baseline for the crafted cases below: it is accepted.
    elf = ElfFile.parse(bytes(elf64_header()))
    assert elf.segments == [] and elf.interp is None and not elf.is_pie


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(os.urandom(4096).replace(b"\x7fELF", b"xxxx"), id="garbage"),
        pytest.param(b"#!/bin/sh\necho not an elf\n" * 10, id="script"),
        pytest.param(b"\x7fELF", id="magic-only"),
        pytest.param(bytes(elf64_header())[:40], id="truncated-header"),
    ],
)
def test_not_elf_raises(data: bytes) -> None:
    with pytest.raises(ElfError):
        ElfFile.parse(data)


def elf32_header() -> bytes:
    """An ELF32 i386 executable header (52 bytes), padded past the ELF64 header size."""
    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
    hdr = ident + struct.pack("<HHIIIIIHHHHHH", ET_EXEC, 3, 1, 0x8048000, 52, 0, 0, 52,
                              32, 0, 40, 0, 0)
    return hdr + bytes(64)


def test_32_bit_elf_raises() -> None:
    with pytest.raises(ElfError, match="64-bit"):
        ElfFile.parse(elf32_header())


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"ei_data": 2}, "little-endian"),
        ({"e_machine": 183}, "x86-64"),  # aarch64
        ({"e_type": 1}, "executable or shared"),  # ET_REL
        ({"e_type": 4}, "executable or shared"),  # ET_CORE
        ({"e_phentsize": 32, "e_phnum": 1}, "program header size"),
        ({"e_phnum": 3}, "past the end"),
        ({"e_phoff": 1 << 40, "e_phnum": 1}, "past the end"),
    ],
)
def test_crafted_bad_headers_raise(overrides: dict[str, int], message: str) -> None:
    data = bytes(elf64_header(**overrides)) + bytes(64)
    with pytest.raises(ElfError, match=message):
        ElfFile.parse(data)


def test_segment_past_end_of_file_raises() -> None:
    data = elf64_header(e_phnum=1)
    data += struct.pack("<IIQQQQQQ", PT_LOAD, 5, 0, 0x400000, 0x400000, 0x10000, 0x10000, 0x1000)
    with pytest.raises(ElfError, match="segment"):
        ElfFile.parse(bytes(data))


@needs_gcc
def test_object_file_raises(tmp_path: Path) -> None:
    path = compile_c(tmp_path, "obj.o", "-c", source="int f(void) { return 1; }\n")
    with pytest.raises(ElfError, match="executable or shared"):
        ElfFile.from_path(path)


@needs_gcc
def test_truncated_real_executable_raises_elf_error_only(tmp_path: Path) -> None:
    data = Path(compile_c(tmp_path, "pie", "-fPIE", "-pie", "-O1")).read_bytes()
    whole = ElfFile.parse(data)
    assert whole.needed == ["libc.so.6"]
    # Any cut that loses part of a PT_LOAD segment must be rejected with ElfError.
    last = max(p.p_offset + p.p_filesz for p in whole.segments)
    for cut in list(range(0, last, 97)) + [last - 1]:
        with pytest.raises(ElfError):
            ElfFile.parse(data[:cut])


# -- crafted dynamic sections --------------------------------------------------------


def dynamic_elf(needed_index: int, strtab: bytes, interp: bytes | None = None) -> bytes:
    """A PIE whose one PT_LOAD covers the file (vaddr == offset): PT_DYNAMIC with
    DT_STRTAB and one DT_NEEDED, optionally a PT_INTERP, then the string table."""
    nph = 3 if interp is not None else 2
    data = elf64_header(e_type=ET_DYN, e_phnum=nph)
    dyn_off = 64 + 56 * nph
    dyn_len = 3 * 16
    str_off = dyn_off + dyn_len
    interp_off = str_off + len(strtab)
    total = interp_off + len(interp or b"")
    data += struct.pack("<IIQQQQQQ", PT_LOAD, 5, 0, 0, 0, total, total, 0x1000)
    data += struct.pack("<IIQQQQQQ", 2, 6, dyn_off, dyn_off, dyn_off, dyn_len, dyn_len, 8)
    if interp is not None:
        n = len(interp)
        data += struct.pack("<IIQQQQQQ", PT_INTERP, 4, interp_off, interp_off, interp_off, n, n, 1)
    data += struct.pack("<qQqQqQ", 5, str_off, 1, needed_index, 0, 0)
    return bytes(data + strtab + (interp or b""))


def test_crafted_dynamic_section_parses() -> None:
    elf = ElfFile.parse(dynamic_elf(1, b"\0libfoo.so.1\0", b"/lib/ld.so\0"))
    assert elf.needed == ["libfoo.so.1"]
    assert elf.interp == "/lib/ld.so"
    assert elf.is_pie


def test_strtab_outside_loaded_segments_raises() -> None:
    data = bytearray(dynamic_elf(1, b"\0libfoo.so.1\0"))
    dyn_off = 64 + 56 * 2
    struct.pack_into("<qQ", data, dyn_off, 5, 0x999999)  # DT_STRTAB nowhere
    with pytest.raises(ElfError):
        ElfFile.parse(bytes(data))


@pytest.mark.parametrize(
    "needed_index, strtab, interp",
    [
        pytest.param(1000, b"\0libfoo.so.1\0", None, id="needed-past-end"),
        pytest.param(1, b"\0libfoo", None, id="needed-unterminated"),
        pytest.param(1, b"\0\xff\xfe\0", None, id="needed-not-utf8"),
        pytest.param(1, b"\0a\0", b"\xff\xfe\0", id="interp-not-utf8"),
    ],
)
def test_malformed_dynamic_strings_raise_elf_error(
    needed_index: int, strtab: bytes, interp: bytes | None
) -> None:
    with pytest.raises(ElfError):
        ElfFile.parse(dynamic_elf(needed_index, strtab, interp))
