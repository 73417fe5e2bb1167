"""Signal state, kept as Linux splits it: actions per process, mask per thread.

ProcessSignals holds what every thread shares (the actions, signals sent to
the process, the interval timers); ThreadSignals what each thread has
(its blocked mask, signals sent to it, its alternate stack), held by its
thread record (sched.Thread); Kernel.thread_signals is the current thread's.
"""

from __future__ import annotations

import signal
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from usetl.vm.layout import USER_CS, USER_DS

if TYPE_CHECKING:
    from .kernel import Kernel

SIGACTION = struct.Struct("<QQQQ")  # handler, flags, restorer, mask: the kernel's sigaction
SIG_DFL, SIG_IGN = 0, 1
SA_NOCLDWAIT, SA_SIGINFO, SA_ONSTACK, SA_RESTART = 0x2, 0x4, 0x08000000, 0x10000000
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
    status: int = 0  # SIGCHLD's si_status: the exit code, or the signal that ended it


ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF = 0, 1, 2
TIMER_SIGNALS = {ITIMER_REAL: signal.SIGALRM, ITIMER_VIRTUAL: signal.SIGVTALRM,
                 ITIMER_PROF: signal.SIGPROF}


def timer_clock(k: Kernel, which: int) -> float:
    """The clock an interval timer counts: the guest's monotonic clock (as the guest's own
    timed waits, clock.py), or the CPU time of the vCPU's thread.

    That thread runs the guest (its user time) and the monitor's handling of
    its syscalls (its system time), so VIRTUAL and PROF both count it. Read
    it on the vCPU thread, where syscalls are served.
    """
    return k.clock.seconds() if which == ITIMER_REAL else time.thread_time()


@dataclass
class IntervalTimer:
    """setitimer's timer: when it fires next (on timer_clock(k, which)) and its period (0: once)."""

    expiry: float
    interval: float


@dataclass
class ProcessSignals:
    actions: dict[int, SigAction] = field(default_factory=dict)
    pending: int = 0  # sent to the process, not yet delivered
    info: dict[int, SigInfo] = field(default_factory=dict)
    timers: dict[int, IntervalTimer] = field(default_factory=dict)  # ITIMER_* -> timer
    sent: int = 0  # signals made pending so far: a signalfd's changes, for epoll's EPOLLET

    def action(self, sig: int) -> SigAction:
        return self.actions.get(sig) or SigAction()

    def move_pending(self, sigs: int, thread: ThreadSignals) -> None:
        """Hand the process's pending `sigs` (a bit set) to one thread, with their info."""
        self.pending &= ~sigs
        thread.pending |= sigs
        for sig in [s for s in self.info if sigs & bit(s)]:
            thread.info.setdefault(sig, self.info.pop(sig))

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
    # The mask to put back once a handler returns, where rt_sigsuspend swapped it
    restore_mask: int | None = None
    # The mask to put back when rt_sigtimedwait's wait ends: the set it waits for is
    # unblocked meanwhile, so that such a signal wakes it (Linux's real_blocked)
    sigwait_mask: int | None = None


# -- the rt_sigframe, as Linux x86-64 lays it out on the stack ------------------
#
#   frame+0    pretcode: the restorer, where the handler returns to
#   frame+8    struct ucontext: uc_flags, uc_link, uc_stack (sp, flags, size),
#              uc_mcontext (struct sigcontext, 256 bytes), uc_sigmask (8 bytes)
#   frame+312  struct siginfo (128 bytes)
#   fpstate    the FPU/SSE/AVX state in XSAVE format, 64-byte aligned, above
#              the frame; uc_mcontext.fpstate points at it
# The handler is entered with rsp = frame (so rsp+8 is 16-byte aligned, as
# after a call), rdi = signo, rsi = &info, rdx = &uc.

SIGCONTEXT_REGS = ("r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi", "rsi",
                   "rbp", "rbx", "rdx", "rax", "rcx", "rsp", "rip", "rflags")
SIGCONTEXT = struct.Struct("<18Q4H4QQ64x")  # regs, cs gs fs ss, err trapno oldmask cr2, fpstate
STACK_T = struct.Struct("<QiiQ")  # ss_sp, ss_flags, (pad), ss_size
UCONTEXT = struct.Struct("<QQ24s256sQ")
SIGINFO = struct.Struct("<iiiiiIi100x")  # signo, errno, code, (pad), pid, uid, status
UCONTEXT_OFFSET = 8
SIGINFO_OFFSET = UCONTEXT_OFFSET + UCONTEXT.size
FRAME_SIZE = SIGINFO_OFFSET + SIGINFO.size
UC_FP_XSTATE, UC_SIGCONTEXT_SS, UC_STRICT_RESTORE_SS = 0x1, 0x2, 0x4
SS_ONSTACK, SS_DISABLE, SS_AUTODISARM = 1, 2, 1 << 31
RED_ZONE = 128
MINSIGSTKSZ = 2048

# The XSAVE image the frame carries: legacy area, header, AVX: x87|SSE|AVX.
XSTATE_SIZE = 512 + 64 + 256
XSTATE_FEATURES = 0x7
FP_XSTATE_MAGIC1, FP_XSTATE_MAGIC2 = 0x46505853, 0x46505845
FPSTATE_SIZE = XSTATE_SIZE + 4  # and MAGIC2 after it
SW_BYTES_OFFSET = 464  # _fpx_sw_bytes in the legacy area's software-reserved bytes
SW_BYTES = struct.Struct("<IIQI")  # magic1, extended_size, xfeatures, xstate_size


@dataclass
class FramePlace:
    frame: int
    fpstate: int
    on_altstack: bool


def on_stack(alt: AltStack, sp: int) -> bool:
    return not alt.flags & SS_DISABLE and alt.sp < sp <= alt.sp + alt.size


def place_frame(sp: int, alt: AltStack, use_altstack: bool) -> FramePlace:
    """Where the frame and the FPU state go below `sp` (the interrupted rsp)."""
    switch = use_altstack and alt.flags & SS_DISABLE == 0 and not on_stack(alt, sp)
    top = alt.sp + alt.size if switch else sp - RED_ZONE
    fpstate = (top - FPSTATE_SIZE) & ~63
    frame = ((fpstate - FRAME_SIZE) & ~15) - 8
    return FramePlace(frame, fpstate, switch or on_stack(alt, sp))


def pack_fpstate(xsave_region: bytes) -> bytes:
    """The frame's FPU state from a KVM XSAVE image, marked as Linux marks it."""
    state = bytearray(xsave_region[:XSTATE_SIZE])
    SW_BYTES.pack_into(state, SW_BYTES_OFFSET, FP_XSTATE_MAGIC1, FPSTATE_SIZE,
                       XSTATE_FEATURES, XSTATE_SIZE)
    return bytes(state) + FP_XSTATE_MAGIC2.to_bytes(4, "little")


def pack_frame(regs: dict[str, int], mask: int, info: SigInfo, alt: AltStack,
               place: FramePlace, restorer: int) -> bytes:
    """The rt_sigframe bytes for `regs` (the interrupted context) at place.frame."""
    flags = alt.flags | (SS_ONSTACK if place.on_altstack else 0)
    stack = STACK_T.pack(alt.sp, s32_bits(flags), 0, alt.size)
    mcontext = SIGCONTEXT.pack(*(regs[r] for r in SIGCONTEXT_REGS), USER_CS, 0, 0, USER_DS,
                               0, 0, mask & 0xFFFFFFFF, 0, place.fpstate)
    uc_flags = UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS
    uc = UCONTEXT.pack(uc_flags, 0, stack, mcontext, mask)
    siginfo = SIGINFO.pack(info.signo, 0, info.code, 0, info.pid, info.uid, info.status)
    return restorer.to_bytes(8, "little") + uc + siginfo


@dataclass
class SavedContext:
    """What rt_sigreturn finds in a frame: registers, mask, FPU state pointer, altstack."""

    regs: dict[str, int]
    mask: int
    fpstate: int
    altstack: AltStack


def unpack_frame(raw: bytes) -> SavedContext:
    uc_flags, _, stack, mcontext, mask = UCONTEXT.unpack_from(raw, UCONTEXT_OFFSET)
    values = SIGCONTEXT.unpack(mcontext)
    regs = dict(zip(SIGCONTEXT_REGS, values[:18], strict=True))
    ss_sp, ss_flags, _, ss_size = STACK_T.unpack(stack)
    alt = AltStack(ss_sp, ss_size, (ss_flags & 0xFFFFFFFF) & ~SS_ONSTACK)
    return SavedContext(regs, mask, values[-1], alt)


def fpstate_is_valid(raw: bytes) -> bool:
    """A frame's FPU state as pack_fpstate wrote it (the handler may have changed it)."""
    magic1, _, _, size = SW_BYTES.unpack_from(raw, SW_BYTES_OFFSET)
    return (magic1 == FP_XSTATE_MAGIC1 and size == XSTATE_SIZE
            and int.from_bytes(raw[XSTATE_SIZE:XSTATE_SIZE + 4], "little") == FP_XSTATE_MAGIC2)


def s32_bits(value: int) -> int:
    """A C int field from an unsigned flag word (SS_AUTODISARM is the sign bit)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value
