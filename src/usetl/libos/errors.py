"""Errors inside the libos: a syscall's errno, and faults of the whole USF."""

from __future__ import annotations

import errno
import os

from usetl.errors import UsetlError


class SyscallError(Exception):
    """Raised by a syscall handler; the guest sees -errno in rax."""

    __slots__ = ("errno",)

    def __init__(self, err: int):
        self.errno = err

    def __str__(self) -> str:
        return f"{errno.errorcode.get(self.errno, self.errno)}: {os.strerror(self.errno)}"


class LibosError(UsetlError):
    """The libos could not set up or run the guest program."""


class LoadError(LibosError):
    """The program could not be loaded into guest memory."""
