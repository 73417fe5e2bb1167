"""pipe, pipe2, eventfd, eventfd2: channels between guest threads, held in the monitor."""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from ..errors import SyscallError
from ..files import O_CLOEXEC, O_NONBLOCK
from ..ipc import EFD_SEMAPHORE, EventFile, make_pipe

if TYPE_CHECKING:
    from ..files import OpenFile
    from ..kernel import Kernel


def install_pair(k: Kernel, a: OpenFile, b: OpenFile, cloexec: bool, out: int) -> int:
    """Two new fds, written to out[0], out[1] as ints; on any failure neither stays open."""
    k.mem.slice(out, 8, write=True)  # EFAULT before anything is installed
    fa = k.fds.install(a, cloexec=cloexec)
    try:
        fb = k.fds.install(b, cloexec=cloexec)
    except SyscallError:
        k.fds.close(fa)
        b.close()
        raise
    k.mem.write(out, struct.pack("<ii", fa, fb))
    return 0


def sys_pipe2(k: Kernel, fds: int, flags: int, *_: int) -> int:
    if flags & ~(O_CLOEXEC | O_NONBLOCK):
        raise SyscallError(errno.EINVAL)  # O_DIRECT (packet mode) among them: not offered
    reader, writer = make_pipe(k.sched, flags, k.ns.inodes.next())
    return install_pair(k, reader, writer, bool(flags & O_CLOEXEC), fds)


def sys_pipe(k: Kernel, fds: int, *_: int) -> int:
    return sys_pipe2(k, fds, 0)


def sys_eventfd2(k: Kernel, initval: int, flags: int, *_: int) -> int:
    if flags & ~(O_CLOEXEC | O_NONBLOCK | EFD_SEMAPHORE):
        raise SyscallError(errno.EINVAL)
    f = EventFile(k.sched, initval & 0xFFFFFFFF, flags & O_NONBLOCK, bool(flags & EFD_SEMAPHORE),
                  k.ns.inodes.next())
    return k.fds.install(f, cloexec=bool(flags & O_CLOEXEC))


def sys_eventfd(k: Kernel, initval: int, *_: int) -> int:
    return sys_eventfd2(k, initval, 0)
