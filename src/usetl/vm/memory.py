"""Guest memory: a memfd mapped into the monitor, registered as a memslot."""

from __future__ import annotations

import ctypes
import os

from usetl import hostmm
from usetl.errors import UsetlError

PAGE = 4096


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
        try:
            addr = hostmm.map_shared(fd, size)
        except OSError as e:
            raise GuestMemoryError(
                f"cannot map {size >> 20} MiB of guest memory: {e.strerror}"
            ) from None
        self.host_addr: int = addr
        self.punch_holes = True
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

    def discard(self, gpa: int, length: int) -> None:
        """Zero a range and, for whole pages, give the host memory back.

        A private copy-on-write mapping (a clone) sets `punch_holes` False: a
        hole there would show the template's bytes again, so it zeroes.
        """
        off = gpa - self.gpa
        lo = min((off + PAGE - 1) & ~(PAGE - 1), off + length)
        hi = max((off + length) & ~(PAGE - 1), lo)
        if not self.punch_holes or hi - lo < 16 * PAGE:
            ctypes.memset(self.host_addr + off, 0, length)
            return
        ctypes.memset(self.host_addr + off, 0, lo - off)
        ctypes.memset(self.host_addr + hi, 0, off + length - hi)
        if not hostmm.punch_hole(self.fd, lo, hi - lo):
            ctypes.memset(self.host_addr + lo, 0, hi - lo)

    def u64(self, gpa: int) -> int:
        return int.from_bytes(self.view[gpa - self.gpa : gpa - self.gpa + 8], "little")

    def put_u64(self, gpa: int, value: int) -> None:
        self.write(gpa, value.to_bytes(8, "little"))

    def close(self) -> None:
        self.view.release()
        hostmm.unmap(self.host_addr, self.size)
        os.close(self.fd)
