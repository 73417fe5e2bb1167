"""Guest memory: a memfd mapped into the monitor, registered as a memslot."""

from __future__ import annotations

import ctypes
import mmap
import os

from usetl.errors import UsetlError

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value


class GuestMemoryError(UsetlError):
    """Host-side guest memory could not be created or mapped."""


class GuestMemory:
    """`size` bytes of guest-physical memory starting at `gpa`, backed by a memfd.

    The monitor reads and writes it through `view` (a memoryview of the host
    mapping); addresses given to read/write are guest-physical.
    """

    def __init__(self, name: str, gpa: int, size: int, fd: int | None = None):
        self.name = name
        self.gpa = gpa
        self.size = size
        if fd is None:
            fd = os.memfd_create(f"usetl-{name}", os.MFD_CLOEXEC)
            os.ftruncate(fd, size)
        self.fd = fd
        addr = _libc.mmap(
            None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0
        )
        if addr in (None, _MAP_FAILED):
            err = ctypes.get_errno()
            raise GuestMemoryError(f"cannot map {size >> 20} MiB of guest memory: {os.strerror(err)}")
        self.host_addr: int = addr
        self.view = memoryview((ctypes.c_ubyte * size).from_address(addr)).cast("B")

    @property
    def end(self) -> int:
        return self.gpa + self.size

    def contains(self, gpa: int, length: int = 1) -> bool:
        return self.gpa <= gpa and gpa + length <= self.end and length >= 0

    def read(self, gpa: int, length: int) -> bytes:
        off = gpa - self.gpa
        return bytes(self.view[off : off + length])

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        off = gpa - self.gpa
        self.view[off : off + len(data)] = data

    def zero(self, gpa: int, length: int) -> None:
        ctypes.memset(self.host_addr + gpa - self.gpa, 0, length)

    def u64(self, gpa: int) -> int:
        return int.from_bytes(self.view[gpa - self.gpa : gpa - self.gpa + 8], "little")

    def put_u64(self, gpa: int, value: int) -> None:
        self.write(gpa, value.to_bytes(8, "little"))

    def close(self) -> None:
        self.view.release()
        _libc.munmap(self.host_addr, self.size)
        os.close(self.fd)
