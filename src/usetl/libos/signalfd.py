"""signalfd: a file that reads the process's pending signals of a set, as Linux's.

A read takes pending signals of its mask (the reading thread's, then the
process's, as sigtimedwait does) and gives one struct signalfd_siginfo each;
with none it blocks until a signal is sent (the kernel's `signal_sent` queue,
which sigdelivery.send wakes) or says EAGAIN. poll, select and epoll see it
readable while one is pending for the thread that asks. The set is normally
blocked, so that the signal waits here instead of running its action.
"""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from . import sigdelivery
from .errors import SyscallError
from .files import O_NONBLOCK, O_RDWR, OpenFile
from .fs import Node
from .ipc import READABLE
from .sched import Block
from .signals import UNBLOCKABLE

if TYPE_CHECKING:
    from .kernel import Kernel

# signo errno code pid uid fd tid band overrun trapno status int ptr utime stime addr
# addr_lsb (pad) syscall call_addr arch (pad): 128 bytes
SIGNALFD_SIGINFO = struct.Struct("<IiiIIiIIIIiiQQQQHHiQI28x")


class SignalFile(OpenFile):
    """An open signalfd: the signals of `mask` the process has pending."""

    def __init__(self, kernel: Kernel, mask: int, flags: int, ino: int):
        super().__init__(Node(0o600, ino), O_RDWR | flags & O_NONBLOCK,  # an anonymous inode
                         "anon_inode:[signalfd]")
        self.kernel = kernel
        self.mask = 0
        self.set_mask(mask)

    def set_mask(self, mask: int) -> None:
        self.mask = mask & ~UNBLOCKABLE  # SIGKILL and SIGSTOP are never read, as on Linux

    def read(self, length: int) -> bytes:
        if length < SIGNALFD_SIGINFO.size:
            raise SyscallError(errno.EINVAL)
        k = self.kernel
        sigdelivery.due(k)  # expired interval timers become signals first
        out = bytearray()
        while len(out) + SIGNALFD_SIGINFO.size <= length:
            taken = sigdelivery.take(k, self.mask)
            if taken is None:
                break
            sig, info = taken
            out += SIGNALFD_SIGINFO.pack(sig, 0, info.code, info.pid, info.uid, 0, 0, 0, 0, 0,
                                         info.status, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        if out:
            return bytes(out)
        if self.flags & O_NONBLOCK:
            raise SyscallError(errno.EAGAIN)
        raise Block((k.signal_sent,), k.sched.deadline_after(None))

    def write(self, data: memoryview) -> int:
        raise SyscallError(errno.EINVAL)

    def poll(self) -> int:
        k = self.kernel
        sigdelivery.due(k)
        pending = k.signals.pending | k.thread_signals.pending
        return READABLE if pending & self.mask else 0

    def wait_queues(self) -> tuple:
        return (self.kernel.signal_sent,)

    @property
    def generation(self) -> int:
        return self.kernel.signals.sent
