"""Files handed from one pipeline stage to the next without copying their bytes.

A stage's guest region is backed, for that invocation, by a memory file of
its own (a memfd); the files the guest wrote there are described by their
offsets in it. The file's descriptor travels to the server and on to the
next stage's monitor with SCM_RIGHTS, where it is mapped read-only over the
start of the host region (a read-only memslot already), and that region's
offset table points at the same offsets: the pages the first guest wrote
are the pages the second one reads.

Before it is passed on, the memory file is sealed against writes, growing
and shrinking, so no process that held it (the first stage's monitor) can
change what the next stage reads.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass

import msgspec

from usetl import hostmm
from usetl.errors import UsetlError

HANDOFF_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


class HandOffError(UsetlError):
    """A hand-off's memory file or its description is not usable."""


class HandedFile(msgspec.Struct, frozen=True):
    name: str
    offset: int
    size: int


class HandedFiles(msgspec.Struct, frozen=True):
    """Where the handed files lie in a memory file of `size` bytes (sent beside it)."""

    size: int
    files: list[HandedFile]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def new_memory_file(size: int, huge: bool = True) -> int:
    """An empty sealable memfd; `huge`: backed by huge pages, for a guest to write or read
    through KVM (one fault per 2 MiB), at the cost of making them now (tenths of a second
    for 64 MiB here)."""
    fd = os.memfd_create("usetl-handoff", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    if huge:
        hostmm.back_with_huge_pages(fd, size)
    hostmm.fix_size(fd)  # lent as a guest region, it may go to the egress broker
    return fd


@dataclass
class HandOff:
    """A hand-off held by this process: the memory file's descriptor (owned) and its files.

    `copied_bytes`: what making it copied (0 where the memory file was the guest region's).
    """

    fd: int
    files: HandedFiles
    copied_bytes: int = 0

    @classmethod
    def sealed(cls, fd: int, files: HandedFiles) -> HandOff:
        """Seal the memory file unless it is (no writable mapping of it may remain), and
        check that the files lie in it."""
        try:
            if fcntl.fcntl(fd, fcntl.F_GET_SEALS) & HANDOFF_SEALS != HANDOFF_SEALS:
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, HANDOFF_SEALS)
            size = os.fstat(fd).st_size
        except OSError as e:
            os.close(fd)
            raise HandOffError(f"the stage's files cannot be sealed: {e.strerror}") from None
        if size < files.size or any(f.offset < 0 or f.size < 0 or f.offset + f.size > files.size
                                    for f in files.files):
            os.close(fd)
            raise HandOffError(f"the stage's files do not lie in their {size} B memory file")
        return cls(fd, files)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
