"""Child processes: a USF runs none, and says so.

fork, vfork, execve and clone without glibc's thread flags (what os.fork,
glibc's posix_spawn and CPython's _posixsubprocess use; sys_thread.sys_clone
makes threads) are refused with EPERM, so
subprocess, os.fork, os.posix_spawn and multiprocessing raise
PermissionError; and the monitor writes one line naming the syscall to the
invocation's stderr, since "Operation not permitted" alone does not say why.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..errors import SyscallError
from ..files import OutputFile

if TYPE_CHECKING:
    from ..kernel import Kernel

NO_CHILDREN = "usetl: {call} refused: a USF runs no child processes (no fork, exec or subprocess)\n"


def refuse_child_process(k: Kernel, call: str) -> int:
    """EPERM for a syscall that would make a child process, told on the guest's stderr."""
    stderr = k.fds.files.get(2)
    if isinstance(stderr, OutputFile):
        stderr.write_at(0, memoryview(NO_CHILDREN.format(call=call).encode()))
    raise SyscallError(errno.EPERM)


def sys_fork(k: Kernel, *_: int) -> int:
    return refuse_child_process(k, "fork")


def sys_vfork(k: Kernel, *_: int) -> int:
    return refuse_child_process(k, "vfork")


def sys_execve(k: Kernel, *_: int) -> int:
    return refuse_child_process(k, "execve")


def sys_execveat(k: Kernel, *_: int) -> int:
    return refuse_child_process(k, "execveat")


def sys_wait4(k: Kernel, *_: int) -> int:
    raise SyscallError(errno.ECHILD)
