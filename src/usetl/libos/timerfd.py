"""timerfd: a timer on one of the guest's clocks (clock.py) whose expirations are read.

Its expirations are counted when looked at (a read, a poll), from its due
time and period on the guest's clock, so none comes before its time there.
A wait on it (a blocking read; poll, select or epoll watching it) is timed to
its due time (ready_at). It stays in its process: a child program does not
get it, and a forked child has its own copy.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from .clock import Deadline
from .errors import SyscallError
from .files import O_NONBLOCK, O_RDWR, OpenFile
from .fs import Node
from .ipc import READABLE
from .sched import Block, WaitQueue

if TYPE_CHECKING:
    from .clock import GuestClock
    from .sched import Scheduler


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
