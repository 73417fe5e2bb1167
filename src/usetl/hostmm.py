"""Host memory mappings through libc, so the monitor knows their addresses.

Python's mmap module hides the address and refuses to close a mapping while
ctypes views of it exist; guest RAM and kvm_run need raw addresses.
"""

from __future__ import annotations

import ctypes
import mmap
import os

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
_MAP_FAILED = ctypes.c_void_p(-1).value

MAP_FIXED = 0x10
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02


def map_shared(fd: int, size: int, writable: bool = True) -> int:
    """mmap(MAP_SHARED) of fd; returns the address or raises OSError."""
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    addr = _libc.mmap(None, size, prot, mmap.MAP_SHARED, fd, 0)
    if addr in (None, _MAP_FAILED):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return addr


def map_over(addr: int, size: int, fd: int, private: bool, writable: bool = True) -> None:
    """Replace the mapping at `addr` with one of `fd` (MAP_FIXED), shared or copy-on-write."""
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    flags = (mmap.MAP_PRIVATE if private else mmap.MAP_SHARED) | MAP_FIXED
    got = _libc.mmap(addr, size, prot, flags, fd, 0)
    if got != addr:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def unmap(addr: int, size: int) -> None:
    _libc.munmap(addr, size)


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Free a page-aligned range of a memfd (it then reads as zero)."""
    return _libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0
