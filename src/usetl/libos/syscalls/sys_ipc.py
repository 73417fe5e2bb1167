"""pipe, pipe2, splice, eventfd, eventfd2: channels between guest threads, in the monitor."""

from __future__ import annotations

import errno
import stat as st
import struct
from typing import TYPE_CHECKING

from ..errors import SyscallError
from ..files import O_APPEND, O_CLOEXEC, O_NONBLOCK, check_io_range
from ..ipc import EFD_SEMAPHORE, PIPE_CAPACITY, ChannelFile, EventFile, make_pipe
from ..sched import Block
from ..sigdelivery import sigpipe_on_epipe
from .args import s32
from .sys_file import file_offset, fsize_room, moved_offset

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


SPLICE_F_NONBLOCK = 2
SPLICE_FLAGS = 0xF  # MOVE, NONBLOCK, MORE, GIFT: hints, but NONBLOCK


def sys_splice(k: Kernel, fd_in: int, off_in: int, fd_out: int, off_out: int, length: int,
               flags: int) -> int:
    """Move bytes between a pipe and a file, a socket or another pipe, copied by the monitor.

    Nothing read is lost: a file is read at an offset (consumed only by what
    was written), and a pipe or socket is read only into a regular file or
    into as much as an in-monitor pipe has room for (another stream: EINVAL).
    """
    src, dst = k.fds.get(s32(fd_in)), k.fds.get(s32(fd_out))
    if flags & ~SPLICE_FLAGS:
        raise SyscallError(errno.EINVAL)
    if not src.readable or not dst.writable:
        raise SyscallError(errno.EBADF)
    src_pipe, dst_pipe = st.S_ISFIFO(src.node.mode), st.S_ISFIFO(dst.node.mode)
    if not (src_pipe or dst_pipe):
        raise SyscallError(errno.EINVAL)
    if (src_pipe and off_in) or (dst_pipe and off_out):
        raise SyscallError(errno.ESPIPE)
    length = min(length, PIPE_CAPACITY)  # what one pipe holds: Linux moves no more at once
    if st.S_ISREG(src.node.mode):
        start = file_offset(k, src, off_in)
        with sigpipe_on_epipe(k):
            done = dst.write(memoryview(src.read_at(start, length))) if length else 0
        moved_offset(k, src, off_in, start + done)
        return done
    if st.S_ISREG(dst.node.mode):
        if dst.flags & O_APPEND:
            raise SyscallError(errno.EINVAL)
        at = file_offset(k, dst, off_out)
        check_io_range(at, length)
        length = fsize_room(k, dst, length, at)
        data = src.read(length)
        done = dst.write_at(at, memoryview(data)) if data else 0
        moved_offset(k, dst, off_out, at + done)
        return done
    if not isinstance(dst, ChannelFile) or dst.tx is None or not length:
        raise SyscallError(errno.EINVAL)
    if dst.tx.readers and not dst.tx.room:  # (no reader: the write says EPIPE)
        if flags & SPLICE_F_NONBLOCK or dst.flags & O_NONBLOCK:
            raise SyscallError(errno.EAGAIN)
        raise Block((dst.tx.queue,), k.sched.deadline_after(None))
    data = src.read(min(length, max(dst.tx.room, 1)))
    with sigpipe_on_epipe(k):
        return dst.write(memoryview(data)) if data else 0


def sys_eventfd2(k: Kernel, initval: int, flags: int, *_: int) -> int:
    if flags & ~(O_CLOEXEC | O_NONBLOCK | EFD_SEMAPHORE):
        raise SyscallError(errno.EINVAL)
    f = EventFile(k.sched, initval & 0xFFFFFFFF, flags & O_NONBLOCK, bool(flags & EFD_SEMAPHORE),
                  k.ns.inodes.next())
    return k.fds.install(f, cloexec=bool(flags & O_CLOEXEC))


def sys_eventfd(k: Kernel, initval: int, *_: int) -> int:
    return sys_eventfd2(k, initval, 0)
