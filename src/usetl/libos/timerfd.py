"""timerfd: a timer on one of the guest's clocks (clock.py) whose expirations are read.

Its expirations are counted when looked at (a read, a poll), from its due
time and period on the guest's clock, so none comes before its time there.
A wait on it (a blocking read; poll, select or epoll watching it) is timed to
its due time (ready_at). A fork or a child program that inherits it shares it,
as Linux's open file description: it becomes a host timerfd (HostTimerFile)
in both monitors, armed with the time left and the period, so an expiration
read by one is gone for the other; expirations not yet read then stay the
converting process's.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import time
from typing import TYPE_CHECKING

from .clock import HOST_OF, Deadline
from .errors import SyscallError
from .files import O_NONBLOCK, O_RDWR, OpenFile
from .fs import Node
from .hostpipe import HostStreamFile
from .ipc import READABLE
from .sched import Block, WaitQueue

if TYPE_CHECKING:
    from .clock import GuestClock
    from .kernel import Kernel
    from .sched import Scheduler

ITIMERSPEC = struct.Struct("<qqqq")  # it_interval, it_value: (tv_sec, tv_nsec) each
TFD_NONBLOCK, TFD_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
_libc = ctypes.CDLL(None, use_errno=True)


class TimerFile(OpenFile):
    def __init__(self, clock: GuestClock, sched: Scheduler, which: str, flags: int, ino: int):
        super().__init__(Node(0o600, ino), O_RDWR | flags, "anon_inode:[timerfd]")
        self.clock = clock
        self.sched = sched
        self.which = which  # the guest clock it counts on (clock.MONOTONIC or REALTIME)
        self.due: Deadline | None = None  # None: disarmed
        self.interval = 0  # ns; 0: it expires once
        self.count = 0  # expirations not yet read
        self.queue = WaitQueue()

    def _tick(self) -> None:
        """Count the expirations that came due on its clock."""
        if self.due is None or not self.clock.reached(self.due):
            return
        n = 1
        if self.interval:
            n += (self.clock.ns(self.which) - self.due.ns) // self.interval
            self.due = self.due.shifted(n * self.interval)
        else:
            self.due = None
        self.count += n
        self.generation += 1

    def arm(self, value: int, interval: int, absolute: bool) -> tuple[int, int]:
        """timerfd_settime: due in `value` ns (on its clock, if absolute; 0 disarms), then
        every `interval` ns; (interval, ns left) as it was. Expirations not read are lost."""
        old = self.setting()
        self.count, self.interval = 0, interval
        if not value:
            self.due = None
        else:
            start = 0 if absolute else self.clock.ns(self.which)
            self.due = Deadline(self.which, start + value)
        self.generation += 1
        self.queue.wake(self.sched)  # a wait on it is timed to the new due time
        return old

    def setting(self) -> tuple[int, int]:
        """timerfd_gettime: (interval, ns until it is due; 0 disarmed)."""
        self._tick()
        if self.due is None:
            return self.interval, 0
        return self.interval, max(round(self.clock.left(self.due) * 1e9), 1)

    def read(self, length: int) -> bytes:
        if length < 8:
            raise SyscallError(errno.EINVAL)
        self._tick()
        if not self.count:
            if self.flags & O_NONBLOCK:
                raise SyscallError(errno.EAGAIN)
            raise Block((self.queue,), self.sched.deadline_after(None), recheck=self.due)
        count, self.count = self.count, 0
        self.generation += 1
        return count.to_bytes(8, "little")

    def write(self, data: memoryview) -> int:
        raise SyscallError(errno.EINVAL)

    def read_at(self, offset: int, length: int) -> bytes:
        raise SyscallError(errno.ESPIPE)

    def poll(self) -> int:
        self._tick()
        return READABLE if self.count else 0

    def ready_at(self) -> Deadline | None:
        return None if self.count else self.due

    def wait_queues(self) -> tuple[WaitQueue, ...]:
        return (self.queue,)


class HostTimerFile(HostStreamFile):
    """A timerfd the processes of a tree share: a host timerfd on the host's clock of the
    guest's (an absolute time is moved by the guest clock's offset from it)."""

    def __init__(self, kernel: Kernel, timer: TimerFile):
        fd = _libc.timerfd_create(HOST_OF[timer.which], TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            raise SyscallError(ctypes.get_errno())
        super().__init__(kernel, fd, O_RDWR | (timer.flags & O_NONBLOCK), 0o600,
                         "anon_inode:[timerfd]")
        self.which = timer.which
        interval, left = timer.setting()
        self._settime(0, left, interval)
        # Expirations counted before it was shared: the converting monitor's to read.
        self.pending, self.maker = timer.count, os.getpid()

    def arm(self, value: int, interval: int, absolute: bool) -> tuple[int, int]:
        """timerfd_settime, as TimerFile.arm: (interval, ns left) as it was."""
        if value and absolute:
            host = time.clock_gettime_ns(HOST_OF[self.which])
            value = max(value - self.kernel.clock.ns(self.which) + host, 1)
        self.pending = 0  # a new setting drops the expirations not read, as on Linux
        return self._settime(1 if value and absolute else 0, value, interval)

    def setting(self) -> tuple[int, int]:
        raw = ctypes.create_string_buffer(ITIMERSPEC.size)
        self._check(_libc.timerfd_gettime(self._fd(), raw))
        return _spec_ns(raw.raw)

    def _settime(self, absolute: int, value: int, interval: int) -> tuple[int, int]:
        new = ctypes.create_string_buffer(ITIMERSPEC.pack(*divmod(interval, 1_000_000_000),
                                                          *divmod(value, 1_000_000_000)))
        old = ctypes.create_string_buffer(ITIMERSPEC.size)
        self._check(_libc.timerfd_settime(self._fd(), absolute, new, old))
        return _spec_ns(old.raw)

    def read(self, length: int) -> bytes:
        if self.pending and os.getpid() == self.maker and length >= 8:
            try:
                more = int.from_bytes(os.read(self._fd(), 8), "little")
            except BlockingIOError:
                more = 0
            count, self.pending = self.pending + more, 0
            return count.to_bytes(8, "little")
        return super().read(length)

    def poll(self) -> int:
        if self.pending and os.getpid() == self.maker:
            return READABLE
        return super().poll()

    def _fd(self) -> int:
        if self.fd is None:
            raise SyscallError(errno.EBADF)  # a host fd of another process (see hostpipe.py)
        return self.fd

    @staticmethod
    def _check(result: int) -> None:
        if result < 0:
            raise SyscallError(ctypes.get_errno())


def _spec_ns(raw: bytes) -> tuple[int, int]:
    """(interval, value) in ns of a struct itimerspec."""
    isec, insec, vsec, vnsec = ITIMERSPEC.unpack(raw)
    return isec * 1_000_000_000 + insec, vsec * 1_000_000_000 + vnsec
