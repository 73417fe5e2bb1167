"""A tmpfs file's pages in a host memfd, for its MAP_SHARED mappings.

Linux maps every shared mapping of a file to the file's page-cache pages, so two mappings
(and read/write) see each other's stores at once. Guest RAM is identity-mapped, so the
monitor maps the memfd over each such mapping's guest range instead: one copy of the
bytes, which a forked monitor inherits too. The file's bytearray (TmpFile.data) is kept
as well, written through by write/truncate; stores through a mapping reach it at msync
and munmap, and when the pages are let go (release).
"""

from __future__ import annotations

import os

from usetl.vm.layout import PAGE_SIZE


def _pages(n: int) -> int:
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


class SharedPages:
    """The memfd holding a file's bytes; `size` is its length, whole pages covering the
    file and every mapping of it (stores past the end of the file stay out of the file)."""

    def __init__(self, data: bytes | bytearray | memoryview):
        self.fd = os.memfd_create("usetl-shared-file", os.MFD_CLOEXEC)
        # The monitor process that made it: what its pages hold is charged to that process
        # (allowance.py), not to the forked monitors that inherit the memfd.
        self.maker = os.getpid()
        self.size = 0
        self.grow(max(len(data), 1))
        os.pwrite(self.fd, data, 0)

    @classmethod
    def adopt(cls, fd: int) -> SharedPages:
        """The pages another process of the tree made (its memfd, received): shown here too,
        charged there."""
        pages = cls.__new__(cls)
        pages.fd, pages.size, pages.maker = fd, os.fstat(fd).st_size, 0
        return pages

    def grow(self, end: int) -> None:
        """Room for [0, end)."""
        if end > self.size:
            self.size = _pages(end)
            os.ftruncate(self.fd, self.size)

    def held_bytes(self) -> int:
        """The host memory its pages hold (those written, not its whole size)."""
        return os.fstat(self.fd).st_blocks * 512

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset) if length > 0 else b""

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self.grow(offset + len(data))
        os.pwrite(self.fd, data, offset)

    def zero(self, start: int, end: int) -> None:
        """[start, end) reads as zero (a truncate cut it, or grew the file over it)."""
        end = min(end, self.size)
        if start < end:
            os.pwrite(self.fd, bytes(end - start), start)

    def close(self) -> None:
        os.close(self.fd)
