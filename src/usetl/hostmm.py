"""Host memory mappings through libc, so the monitor knows their addresses.

Python's mmap module hides the address and refuses to close a mapping while
ctypes views of it exist; guest RAM and kvm_run need raw addresses.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import resource

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
_MAP_FAILED = ctypes.c_void_p(-1).value

PR_SET_MEMORY_MERGE = 67
MAP_FIXED = 0x10
MAP_NORESERVE = 0x4000
PROT_NONE = 0
MAP_POPULATE = 0x8000
MADV_COLLAPSE = 25
MADV_DONTFORK, MADV_DOFORK = 10, 11
MADV_POPULATE_READ = 22
MADV_POPULATE_WRITE = 23
MADV_HUGEPAGE = 14
MADV_DONTNEED = 4
HUGE_PAGE = 2 << 20
PAGE = mmap.PAGESIZE
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02


def map_shared(fd: int, size: int, writable: bool = True) -> int:
    """mmap(MAP_SHARED) of fd; returns the address or raises OSError.

    A mapping of a huge page or more starts on a huge-page boundary, so that huge pages
    of the file (a hand-off's, handoff.py) can be mapped whole, by the host and by KVM.
    """
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    if size < HUGE_PAGE:
        return _checked(_libc.mmap(None, size, prot, mmap.MAP_SHARED, fd, 0))
    addr = reserve(size)
    try:
        map_over(addr, size, fd, private=False, writable=writable)
    except OSError:
        _libc.munmap(addr, size)
        raise
    return addr


def reserve(size: int) -> int:
    """`size` bytes of address space from a huge-page boundary, mapped to nothing
    (PROT_NONE, nothing committed), for mappings that map_over puts in place."""
    span = size + HUGE_PAGE
    reserved = _checked(_libc.mmap(None, span, PROT_NONE,
                                   mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE, -1, 0))
    addr = (reserved + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
    if addr > reserved:
        _libc.munmap(reserved, addr - reserved)
    _libc.munmap(addr + size, reserved + span - addr - size)
    return addr


def _checked(addr: int | None) -> int:
    if addr in (None, _MAP_FAILED):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    assert addr is not None
    return addr


def back_with_huge_pages(fd: int, size: int) -> bool:
    """Give an empty memfd huge pages (collapse(), which needs a page present in each huge
    page: one zero byte is written in each). False if refused."""
    addr = map_shared(fd, size)
    try:
        for offset in range(0, size - HUGE_PAGE + 1, HUGE_PAGE):
            ctypes.memset(addr + offset, 0, 1)
        return collapse(addr, size - size % HUGE_PAGE)
    finally:
        _libc.munmap(addr, size)


def collapse(addr: int, size: int) -> bool:
    """Put the huge pages [addr, addr+size) of a memfd's shared mapping on huge pages of
    the file, mapped whole here (MADV_COLLAPSE, which works whatever shmem_enabled says,
    unless it is deny): one KVM fault then maps 2 MiB, not 4 KiB. Pages that were not
    there read as zero. False if refused (a huge page with no page present is)."""
    return _libc.madvise(ctypes.c_void_p(addr), ctypes.c_size_t(size), MADV_COLLAPSE) == 0


def merge_identical_pages() -> bool:
    """Let the kernel's samepage merging (KSM) merge this process's private pages with
    identical ones of other processes, now and in every child it forks
    (PR_SET_MEMORY_MERGE, Linux 6.4+). Pages are merged only while the host runs KSM
    (/sys/kernel/mm/ksm/run = 1: the operator's choice). False if the kernel refused."""
    return _libc.prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) == 0


def zero_file(fd: int, size: int) -> None:
    """Write zeroes over the first `size` bytes of a memfd, keeping its pages (and huge
    pages) where they are, unlike a punched hole."""
    addr = map_shared(fd, size)
    try:
        ctypes.memset(addr, 0, size)
    finally:
        _libc.munmap(addr, size)


def map_over(addr: int, size: int, fd: int, private: bool, writable: bool = True,
             populate: bool = False, offset: int = 0) -> None:
    """Replace the mapping at `addr` with one of `fd` from `offset` (MAP_FIXED), shared or
    copy-on-write; `populate` fills its page tables now (MAP_POPULATE)."""
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    flags = (mmap.MAP_PRIVATE if private else mmap.MAP_SHARED) | MAP_FIXED
    if populate:
        flags |= MAP_POPULATE
    got = _libc.mmap(addr, size, prot, flags, fd, offset)
    if got != addr:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def map_anonymous_huge(addr: int, size: int) -> None:
    """Replace [addr, addr+size) (huge-page aligned) with fresh private anonymous memory on
    transparent huge pages where the host gives them (MADV_HUGEPAGE: THP's `madvise` mode;
    a refusal leaves 4 KiB pages, which read as zero all the same)."""
    prot = mmap.PROT_READ | mmap.PROT_WRITE
    got = _libc.mmap(addr, size, prot, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_FIXED, -1, 0)
    if got != addr:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    _libc.madvise(ctypes.c_void_p(addr), ctypes.c_size_t(size), MADV_HUGEPAGE)


def drop_pages(addr: int, size: int) -> None:
    """Give back the pages of a private anonymous range (MADV_DONTNEED): it reads as zero."""
    _libc.madvise(ctypes.c_void_p(addr), ctypes.c_size_t(size), MADV_DONTNEED)


class pm_scan_arg(ctypes.Structure):
    """<linux/fs.h>: the argument of the PAGEMAP_SCAN ioctl (Linux 6.7+)."""

    _fields_ = [(name, ctypes.c_uint64) for name in (
        "size", "flags", "start", "end", "walk_end", "vec", "vec_len", "max_pages",
        "category_inverted", "category_mask", "category_anyof_mask", "return_mask",
    )]


class page_region(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64),
                ("categories", ctypes.c_uint64)]


# _IOWR('f', 16, struct pm_scan_arg)
PAGEMAP_SCAN = (3 << 30) | (ctypes.sizeof(pm_scan_arg) << 16) | (ord("f") << 8) | 16
PAGE_IS_FILE = 1 << 2
PAGE_IS_PRESENT = 1 << 3
PAGE_IS_SWAPPED = 1 << 4
_REGIONS = 1024


# (pid, fd): this process's /proc/self/pagemap, kept open. A forked child opens its own
# (the fd it inherited reads its parent's page tables).
_pagemap: tuple[int, int] | None = None


def adopt_pagemap(fd: int) -> None:
    """Use `fd`, this process's page map opened by the caller (a jailed, non-dumpable process
    cannot open its own /proc/self/pagemap, which then belongs to root, at will)."""
    global _pagemap
    _pagemap = (os.getpid(), fd)


def pagemap_fd() -> int:
    if _pagemap is None or _pagemap[0] != os.getpid():
        adopt_pagemap(os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC))
    assert _pagemap is not None
    return _pagemap[1]


# (pid, fd): this process's /proc/self/statm, kept open (world-readable, even where the
# process is not dumpable); a forked child opens its own.
_statm: tuple[int, int] | None = None


def resident_anonymous_bytes() -> int:
    """This process's resident anonymous memory (its private copies, its heap): statm's
    resident less its shared (file and shmem) pages, counters the kernel keeps (no walk)."""
    global _statm
    if _statm is None or _statm[0] != os.getpid():
        _statm = (os.getpid(), os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC))
    fields = os.pread(_statm[1], 128, 0).split()
    return (int(fields[1]) - int(fields[2])) * PAGE


def page_faults() -> int:
    """The page faults this process's threads have taken so far (minor and major, its
    own and the ones KVM took on its behalf in KVM_RUN). A page of this process becomes
    its own copy, or mapped, only in such a fault or a change of mapping: with neither
    since a page-table scan, the scan still holds (GuestMemory.written_ranges)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt + usage.ru_majflt


def private_pages(addr: int, size: int) -> list[tuple[int, int]] | None:
    """(start, end) addresses of the pages in a range that are this process's own copies.

    In a private file mapping those are the pages written since it was
    mapped: present, or swapped out (a rollback must restore those too), and not
    the file's. The kernel walks only populated page tables. None where the
    kernel lacks PAGEMAP_SCAN.
    """
    return _scan(addr, size, PAGE_IS_FILE, PAGE_IS_FILE, anyof=PAGE_IS_PRESENT | PAGE_IS_SWAPPED)


def present_pages(addr: int, size: int) -> list[tuple[int, int]] | None:
    """(start, end) of the pages in a range this process has mapped (touched, in a shared
    mapping); None where the kernel lacks PAGEMAP_SCAN."""
    return _scan(addr, size, PAGE_IS_PRESENT, 0)


def _scan(addr: int, size: int, mask: int, inverted: int,
          anyof: int = 0) -> list[tuple[int, int]] | None:
    vec = (page_region * _REGIONS)()
    # (start, end, categories) u64 triples, read as one array: a struct field at a time was
    # ~0.5 µs a region (a rollback after a no-op reads ~140).
    flat = memoryview(vec).cast("B").cast("Q")
    arg = pm_scan_arg(
        size=ctypes.sizeof(pm_scan_arg), start=addr, end=addr + size,
        vec=ctypes.addressof(vec), vec_len=_REGIONS,
        category_inverted=inverted, category_mask=mask, category_anyof_mask=anyof,
        return_mask=PAGE_IS_PRESENT,
    )
    out: list[tuple[int, int]] = []
    fd = pagemap_fd()
    while arg.start < arg.end:
        n = _libc.ioctl(fd, ctypes.c_ulong(PAGEMAP_SCAN), ctypes.byref(arg))
        if n < 0:
            if ctypes.get_errno() in (errno.EINVAL, errno.ENOTTY) and not out:
                return None
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        out += zip(flat[0 : 3 * n : 3], flat[1 : 3 * n : 3], strict=True)
        arg.start = arg.walk_end
    return out


def unmap(addr: int, size: int) -> None:
    _libc.munmap(addr, size)


def inherit_on_fork(addr: int, size: int, inherit: bool) -> None:
    """Whether a host fork's child gets [addr, addr+size) (MADV_DOFORK / MADV_DONTFORK)."""
    _libc.madvise(ctypes.c_void_p(addr), ctypes.c_size_t(size),
                  MADV_DOFORK if inherit else MADV_DONTFORK)


def populate_write(addr: int, size: int) -> bool:
    """Fault in [addr, addr+size) writable now, as stores would (MADV_POPULATE_WRITE,
    Linux 5.14+: copy-on-write copies in a private mapping). False if refused."""
    return _libc.madvise(ctypes.c_void_p(addr), ctypes.c_size_t(size), MADV_POPULATE_WRITE) == 0


def populate_read(addr: int, size: int) -> bool:
    """Map [addr, addr+size) readable now, as loads would (MADV_POPULATE_READ, Linux 5.14+:
    the file's pages in a private mapping, no copies). False if refused."""
    return _libc.madvise(ctypes.c_void_p(addr), ctypes.c_size_t(size), MADV_POPULATE_READ) == 0


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Free a page-aligned range of a memfd (it then reads as zero)."""
    return _libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0


# A memory file that can never shrink or grow: a process it is passed to (the egress
# broker) may map it without fearing SIGBUS from a truncation. Not F_SEAL_SEAL, so that a
# hand-off's file can still be sealed against writes later.
FIXED_SIZE = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW


def fix_size(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, FIXED_SIZE)


def sealed_memfd(name: str, size: int) -> int:
    """A memfd of `size` bytes with a fixed size (fix_size)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, size)
        fix_size(fd)
    except OSError:
        os.close(fd)
        raise
    return fd


def has_fixed_size(fd: int) -> bool:
    try:
        return fcntl.fcntl(fd, fcntl.F_GET_SEALS) & FIXED_SIZE == FIXED_SIZE
    except OSError:
        return False  # not a memfd


def anonymous_bytes(pid: int) -> int:
    """A process's anonymous memory (its heap, its copy-on-write copies of file pages),
    pages it shares with its parent counted in proportion: Pss_Anon of smaps_rollup."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss_Anon:"):
                return int(line.split()[1]) * 1024
    return 0


def memfd_bytes(pid: int, suffix: str) -> int:
    """Resident bytes of the memfds process `pid` holds whose names end in `suffix`."""
    total = 0
    fd_dir = f"/proc/{pid}/fd"
    for name in os.listdir(fd_dir):
        try:
            if os.readlink(f"{fd_dir}/{name}").removesuffix(" (deleted)").endswith(suffix):
                total += os.stat(f"{fd_dir}/{name}").st_blocks * 512
        except OSError:
            continue  # closed meanwhile
    return total
