"""The ELF loader: an executable, its PT_INTERP dynamic loader and the initial stack.

What Linux's binfmt_elf does for a new process, into guest memory: map the
PT_LOAD segments, load the interpreter, and lay out argc, argv, envp and
auxv on the stack for ld.so to find.
"""

from __future__ import annotations

import errno
import os
import stat as st
import struct
from dataclasses import dataclass

from usetl.elf import PT_PHDR, ElfError, ElfFile
from usetl.vm.layout import PAGE_SIZE, USER_START

from .errors import LoadError, SyscallError
from .fs import ImageNode, Namespace, TmpFile
from .hostfs import HostNode
from .mm import AddressSpace, page_down, page_up
from .sharedtmp import SharedNode

AT_NULL, AT_PHDR, AT_PHENT, AT_PHNUM, AT_PAGESZ, AT_BASE = 0, 3, 4, 5, 6, 7
AT_FLAGS, AT_ENTRY, AT_UID, AT_EUID, AT_GID, AT_EGID = 8, 9, 11, 12, 13, 14
AT_PLATFORM, AT_HWCAP, AT_CLKTCK, AT_SECURE, AT_RANDOM = 15, 16, 17, 23, 25
AT_HWCAP2, AT_EXECFN, AT_SYSINFO_EHDR = 26, 31, 33

PIE_BASE = USER_START


@dataclass
class Program:
    """An executable and its interpreter, read and checked: all that execve can fail on
    before the process's old image is gone (in a sibling VM: before it is started)."""

    path: str
    exe: ElfFile
    interp: ElfFile | None


@dataclass
class LoadedProgram:
    entry: int
    stack_pointer: int
    base: int
    interp_base: int


def _host_hwcap() -> int:
    """The host's AT_HWCAP: ring-3 code sees the host's CPU anyway."""
    try:
        with open("/proc/self/auxv", "rb") as f:
            raw = f.read()
    except OSError:
        return 0
    for i in range(0, len(raw) - 15, 16):
        key, value = struct.unpack_from("<QQ", raw, i)
        if key == AT_HWCAP:
            return value
    return 0


HOST_HWCAP = _host_hwcap()


def read_program(ns: Namespace, path: str) -> Program:
    """The executable at `path` and its PT_INTERP interpreter, or LoadError with the errno
    Linux's execve gives: ENOEXEC for an executable binfmt_elf would not load; for the
    interpreter, ENOENT (or the lookup's errno) where it is missing, EACCES where it is no
    executable file, ELIBBAD where it is no loadable ELF file of its own."""
    exe = _read_elf(ns, path, errno.ENOEXEC)
    interp = None
    if exe.interp:
        interp = _read_elf(ns, exe.interp, errno.ELIBBAD, executable=True)
        if interp.interp:
            raise LoadError(f"{exe.interp} has an interpreter of its own", errno.ELIBBAD)
    return Program(path, exe, interp)


def _read_elf(ns: Namespace, path: str, bad: int, executable: bool = False) -> ElfFile:
    """The ELF file at `path`; `bad` is the errno where it is not one that can be loaded."""
    try:
        r = ns.resolve(path)
    except SyscallError as e:
        raise LoadError(f"cannot resolve {path} in the guest's filesystems: {e}",
                        e.errno) from None
    node = r.node
    if node is None:
        raise LoadError(f"{path} does not exist in the guest's filesystems", errno.ENOENT)
    if executable and not node.mode & 0o111:
        raise LoadError(f"{path} is not executable", errno.EACCES)
    if isinstance(node, (ImageNode, HostNode, SharedNode)) and st.S_ISREG(node.mode):
        data = bytes(node.read_at(0, node.size))
    elif isinstance(node, TmpFile):
        data = bytes(node.data)
    else:
        raise LoadError(f"{path} is not a file in the guest's filesystems", errno.EACCES)
    try:
        elf = ElfFile.parse(data, name=path)
        elf.span()  # it has PT_LOAD segments
    except ElfError as e:
        raise LoadError(str(e), bad) from None
    return elf


def _map_elf(mm: AddressSpace, ram_view: memoryview, elf: ElfFile, base: int | None,
             name: str) -> int:
    """Copy the PT_LOAD segments into guest memory; returns the load bias."""
    lo, hi = elf.span()
    lo, hi = page_down(lo), page_up(hi)
    if elf.is_pie:
        bias = (base if base is not None else mm.map(0, hi - lo, False, False, name)) - lo
        if base is not None:
            mm.reserve(base, base + hi - lo, name)
    else:
        bias = 0
        try:
            mm.reserve(lo, hi, name)
        except SyscallError:
            raise LoadError(f"{name} wants {lo:#x}-{hi:#x}, outside guest user memory",
                            errno.ENOMEM) from None
    for ph in elf.load_segments:
        dest = bias + ph.p_vaddr
        ram_view[dest : dest + ph.p_filesz] = elf.data[ph.p_offset : ph.p_offset + ph.p_filesz]
    return bias


def load_program(mm: AddressSpace, ram_view: memoryview, program: Program,
                 argv: list[str], envp: list[str], identity: tuple[int, int],
                 vdso: int | None = None) -> LoadedProgram:
    """`program` in guest memory, with its stack; fails only for want of memory (a
    SyscallError of the address space, or LoadError)."""
    exe, path = program.exe, program.path
    bias = _map_elf(mm, ram_view, exe, PIE_BASE, path)
    mm.set_brk_base(bias + exe.span()[1])
    entry = bias + exe.header.e_entry
    interp_base = 0
    if program.interp is not None:
        interp_base = _map_elf(mm, ram_view, program.interp, None, exe.interp)
        entry = interp_base + program.interp.header.e_entry
    phdr = next((ph.p_vaddr for ph in exe.segments if ph.p_type == PT_PHDR), None)
    if phdr is None:
        first = exe.load_segments[0]
        phdr = first.p_vaddr - first.p_offset + exe.header.e_phoff
    uid, gid = identity
    auxv = [
        (AT_PHDR, bias + phdr),
        (AT_PHENT, exe.header.e_phentsize),
        (AT_PHNUM, exe.header.e_phnum),
        (AT_PAGESZ, PAGE_SIZE),
        (AT_BASE, interp_base),
        (AT_FLAGS, 0),
        (AT_ENTRY, bias + exe.header.e_entry),
        (AT_UID, uid),
        (AT_EUID, uid),
        (AT_GID, gid),
        (AT_EGID, gid),
        (AT_SECURE, 0),
        (AT_HWCAP, HOST_HWCAP),
        (AT_HWCAP2, 0),  # keeps glibc from using wrfsbase: the monitor owns FS base
        (AT_CLKTCK, 100),
    ]
    if vdso is not None:
        auxv.append((AT_SYSINFO_EHDR, vdso))
    rsp = _build_stack(ram_view, mm, argv, envp, auxv, path)
    return LoadedProgram(entry, rsp, bias, interp_base)


def _build_stack(view: memoryview, mm: AddressSpace, argv: list[str], envp: list[str],
                 auxv: list[tuple[int, int]], execfn: str) -> int:
    top = mm.stack_top
    pos = top - 16  # an empty slot at the very top, as Linux leaves

    def push_bytes(data: bytes) -> int:
        nonlocal pos
        pos -= len(data)
        view[pos : pos + len(data)] = data
        return pos

    def c_string(text: str) -> bytes:  # any bytes execve was given, as surrogateescape keeps them
        return text.encode("utf-8", "surrogateescape") + b"\0"

    execfn_addr = push_bytes(c_string(execfn))
    platform_addr = push_bytes(b"x86_64\0")
    env_addrs = [push_bytes(c_string(e)) for e in reversed(envp)][::-1]
    env_start = pos
    arg_addrs = [push_bytes(c_string(a)) for a in reversed(argv)][::-1]
    mm.args, mm.env = (pos, env_start), (env_start, platform_addr)
    pos &= ~15
    random_addr = push_bytes(os.urandom(16))
    auxv = auxv + [
        (AT_RANDOM, random_addr),
        (AT_PLATFORM, platform_addr),
        (AT_EXECFN, execfn_addr),
        (AT_NULL, 0),
    ]
    words = [len(argv), *arg_addrs, 0, *env_addrs, 0]
    for key, value in auxv:
        words += [key, value]
    pos = (pos - 8 * len(words)) & ~15
    view[pos : pos + 8 * len(words)] = struct.pack(f"<{len(words)}Q", *words)
    return pos
