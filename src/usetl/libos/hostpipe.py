"""A pipe or socket end, or an eventfd, that is a host fd: what connects a USF to its children.

A child program runs in a sibling VM with a monitor process of its own
(children.py), so the pipes between a parent and its children cannot live
in one monitor's state: each becomes a host pipe (or socketpair), and both
monitors see their end as a HostStreamFile; an eventfd both sides of a
fork hold becomes a host eventfd, whose counter the host keeps. Readiness is the host fd's
(host_fd), so poll, select and epoll wait on it as on a proxied socket; a
blocking read or write waits on the host, off the vCPU when other guest
threads can run.

A host fd belongs to one process: in a clone or after a rollback the file
reads as at end of stream and writes fail with EPIPE.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import stat as st
from typing import TYPE_CHECKING

from .errors import SyscallError
from .files import O_ACCMODE, O_NONBLOCK, O_RDONLY, O_RDWR, O_WRONLY, StreamFile
from .fs import Node
from .ipc import F_GETPIPE_SZ, F_SETPIPE_SZ, PIPE_MAX_SIZE
from .net import POLLERR, POLLHUP, POLLIN, POLLOUT, POLLPRI, wait_ready

if TYPE_CHECKING:
    from .kernel import Kernel

MAX_READ = 1 << 20  # one host read at most: the guest asks again for more


class HostStreamFile(StreamFile):
    """The guest's view of one host pipe end, socket or eventfd (a child's stdin, stdout, a
    pipe)."""

    def __init__(self, kernel: Kernel, fd: int, flags: int, mode: int, path: str):
        super().__init__(Node(mode, kernel.ns.inodes.next()), flags, path)
        os.set_blocking(fd, False)
        self.kernel = kernel
        self.fd: int | None = fd

    @classmethod
    def for_pipe_end(cls, kernel: Kernel, fd: int, reads: bool, nonblocking: bool
                     ) -> HostStreamFile:
        flags = (O_RDONLY if reads else O_WRONLY) | (O_NONBLOCK if nonblocking else 0)
        return cls(kernel, fd, flags, st.S_IFIFO | 0o600, "pipe:")

    @classmethod
    def for_socket(cls, kernel: Kernel, fd: int, nonblocking: bool) -> HostStreamFile:
        return cls(kernel, fd, O_RDWR | (O_NONBLOCK if nonblocking else 0),
                   st.S_IFSOCK | 0o777, "socket:")

    @classmethod
    def for_eventfd(cls, kernel: Kernel, counter: int, semaphore: bool, nonblocking: bool
                    ) -> HostStreamFile:
        """A host eventfd holding `counter`: its reads and writes are the host's, Linux's."""
        fd = os.eventfd(0, os.EFD_SEMAPHORE if semaphore else 0)
        if counter:
            os.eventfd_write(fd, counter)
        return cls(kernel, fd, O_RDWR | (O_NONBLOCK if nonblocking else 0), 0o600,
                   "anon_inode:[eventfd]")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["fd"] = None  # the host fd is this process's
        return state

    def host_fd(self) -> int | None:
        return self.fd

    def poll(self) -> int:
        if self.fd is None:
            return POLLERR | POLLHUP
        poller = select.poll()
        poller.register(self.fd, POLLIN | POLLOUT | POLLPRI)
        ready = poller.poll(0)
        return ready[0][1] if ready else 0

    def _retry(self, op, events: int) -> int:
        """op() on the host, waiting for `events` while it would block (in blocking mode)."""
        sched = self.kernel.sched
        while True:
            try:
                return op()
            except BlockingIOError:
                if self.flags & O_NONBLOCK:
                    raise SyscallError(errno.EAGAIN) from None
            except OSError as e:
                raise SyscallError(e.errno or errno.EIO) from None
            assert self.fd is not None
            if not sched.alone:
                raise sched.watch_host({self.fd: events}, (), sched.deadline_after(None))
            wait_ready({self.fd: events}, None, self.kernel.wait_interrupted)

    def read(self, length: int) -> bytes:
        if not self.readable:
            raise SyscallError(errno.EBADF)
        fd = self.fd
        if fd is None:
            return b""
        return self._retry(lambda: os.read(fd, min(length, MAX_READ)), POLLIN)

    def write(self, data: memoryview) -> int:
        if not self.writable:
            raise SyscallError(errno.EBADF)
        fd = self.fd
        if fd is None:
            raise SyscallError(errno.EPIPE)
        if not len(data):
            return 0
        return self._retry(lambda: os.write(fd, data), POLLOUT)

    def pipe_size(self, size: int | None) -> int:
        """The host pipe's own F_GETPIPE_SZ or F_SETPIPE_SZ (the same rules as Linux's)."""
        if self.fd is None or not st.S_ISFIFO(self.node.mode):
            return super().pipe_size(size)
        if size is not None and size > PIPE_MAX_SIZE:
            raise SyscallError(errno.EPERM)  # the monitor's own limit may be higher
        try:
            if size is None:
                return fcntl.fcntl(self.fd, F_GETPIPE_SZ)
            return fcntl.fcntl(self.fd, F_SETPIPE_SZ, size)
        except OSError as e:
            raise SyscallError(e.errno or errno.EIO) from None

    def reopen(self, flags: int) -> HostStreamFile:
        """A host pipe opened again through /proc/self/fd (a child's /dev/stdin): the host
        opens its own /proc link, so the new end is the host's new open of that pipe."""
        if self.fd is None or not st.S_ISFIFO(self.node.mode):
            return super().reopen(flags)
        access = flags & O_ACCMODE
        try:
            fd = os.open(f"/proc/self/fd/{self.fd}", access | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise SyscallError(e.errno or errno.EIO) from None
        return HostStreamFile(self.kernel, fd, access | flags & O_NONBLOCK, self.node.mode,
                              self.path)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
