"""Errors inside the libos: a syscall's errno, and faults of the whole USF."""

from __future__ import annotations

import errno
import os

from usetl.errors import UsetlError
from usetl.vm import VmError


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
    """The program could not be loaded into guest memory; `errno` is what execve returns."""

    def __init__(self, message: str, err: int):
        super().__init__(message)
        self.errno = err


class MonitorError(VmError):
    """A syscall handler raised something other than SyscallError: a monitor bug.

    The USF's state may be half-changed, so it is not run further: like a
    guest crash, this ends the invocation and the instance (a VmError, so
    every caller that survives a crashed guest survives this too).
    """

    def __init__(self, syscall: str, args: tuple[int, ...], exc: BaseException):
        self.syscall = syscall
        self.args_ = args
        self.exc_type = type(exc).__name__
        shown = ", ".join(f"{a:#x}" for a in args)
        super().__init__(f"monitor error in syscall {syscall}({shown}): {self.exc_type}: {exc}")
