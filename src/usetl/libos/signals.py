"""Signal state, kept as Linux splits it: actions per process, mask per thread.

ProcessSignals holds what every thread shares (the actions, signals sent to
the process, the ITIMER_REAL timer); ThreadSignals what each thread has
(its blocked mask, signals sent to it, its alternate stack). A USF runs one
thread today: the kernel holds one ThreadSignals as the current thread's;
a thread record holds its own when there are several.
"""

from __future__ import annotations

import signal
import struct
from dataclasses import dataclass, field

SIGACTION = struct.Struct("<QQQQ")  # handler, flags, restorer, mask: the kernel's sigaction
SIG_DFL, SIG_IGN = 0, 1
SA_SIGINFO, SA_ONSTACK, SA_RESTART = 0x4, 0x08000000, 0x10000000
SA_NODEFER, SA_RESETHAND, SA_RESTORER = 0x40000000, 0x80000000, 0x04000000
NSIG = 64
UNBLOCKABLE = (1 << (signal.SIGKILL - 1)) | (1 << (signal.SIGSTOP - 1))
IGNORED_BY_DEFAULT = frozenset(
    {signal.SIGCHLD, signal.SIGURG, signal.SIGWINCH, signal.SIGCONT}
)

# si_code values
SI_USER, SI_KERNEL, SI_TKILL = 0, 0x80, -6


def bit(sig: int) -> int:
    return 1 << (sig - 1)


@dataclass
class SigAction:
    handler: int = SIG_DFL
    flags: int = 0
    restorer: int = 0
    mask: int = 0

    def pack(self) -> bytes:
        return SIGACTION.pack(self.handler, self.flags, self.restorer, self.mask)

    @classmethod
    def unpack(cls, raw: bytes) -> SigAction:
        return cls(*SIGACTION.unpack(raw))


@dataclass
class SigInfo:
    """What a handler with SA_SIGINFO is told about a signal."""

    signo: int
    code: int = SI_USER
    pid: int = 0
    uid: int = 0


@dataclass
class RealTimer:
    """ITIMER_REAL: when it fires next (time.monotonic()) and its period (0: once)."""

    expiry: float
    interval: float


@dataclass
class ProcessSignals:
    actions: dict[int, SigAction] = field(default_factory=dict)
    pending: int = 0  # sent to the process, not yet delivered
    info: dict[int, SigInfo] = field(default_factory=dict)
    timer: RealTimer | None = None

    def action(self, sig: int) -> SigAction:
        return self.actions.get(sig) or SigAction()

    def ignores(self, sig: int) -> bool:
        """Whether `sig` would be discarded: its action is to ignore it."""
        handler = self.action(sig).handler
        return handler == SIG_IGN or (handler == SIG_DFL and sig in IGNORED_BY_DEFAULT)


@dataclass
class AltStack:
    sp: int = 0
    size: int = 0
    flags: int = 2  # SS_DISABLE


@dataclass
class ThreadSignals:
    mask: int = 0  # blocked signals
    pending: int = 0  # sent to this thread, not yet delivered
    info: dict[int, SigInfo] = field(default_factory=dict)
    altstack: AltStack = field(default_factory=AltStack)
