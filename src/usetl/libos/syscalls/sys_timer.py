"""Interval timers: setitimer, getitimer, alarm; SIGALRM, SIGVTALRM, SIGPROF; timerfd.

ITIMER_REAL counts the guest's monotonic clock; ITIMER_VIRTUAL and ITIMER_PROF count the CPU
time of the vCPU's thread (signals.timer_clock). The timers are the
process's (signals.IntervalTimer); every syscall exit checks them, and the
VM is asked to wake when one may expire (Kernel.rearm_wake) so that guest
code making no syscalls gets its signal too. A timerfd (libos/timerfd.py)
counts on the guest clock it was made for.
"""

from __future__ import annotations

import errno
import math
import struct
from typing import TYPE_CHECKING

from ..clock import GUEST_CLOCKS
from ..errors import SyscallError
from ..files import O_CLOEXEC, O_NONBLOCK
from ..signals import ITIMER_REAL, TIMER_SIGNALS, IntervalTimer, timer_clock
from ..timerfd import ITIMERSPEC, HostTimerFile, TimerFile
from .args import s32

if TYPE_CHECKING:
    from ..kernel import Kernel

ITIMERVAL = struct.Struct("<qqqq")  # it_interval (sec, usec), it_value (sec, usec)


def _current(k: Kernel, which: int) -> tuple[float, float]:
    """(interval, seconds left) of a timer; (0, 0) when disarmed."""
    timer = k.signals.timers.get(which)
    if timer is None:
        return 0.0, 0.0
    return timer.interval, max(timer.expiry - timer_clock(k, which), 1e-6)


def _pack(interval: float, value: float) -> bytes:
    def timeval(seconds: float) -> tuple[int, int]:
        usec = round(seconds * 1e6)
        return usec // 1_000_000, usec % 1_000_000

    return ITIMERVAL.pack(*timeval(interval), *timeval(value))


def _arm(k: Kernel, which: int, value: float, interval: float) -> None:
    if value <= 0:
        k.signals.timers.pop(which, None)
    else:
        k.signals.timers[which] = IntervalTimer(timer_clock(k, which) + value, interval)
    k.rearm_wake()


def _which(which: int) -> int:
    which = s32(which)
    if which not in TIMER_SIGNALS:
        raise SyscallError(errno.EINVAL)
    return which


def sys_setitimer(k: Kernel, which: int, new: int, old: int, *_: int) -> int:
    which = _which(which)
    interval = value = 0.0
    if new:
        isec, iusec, vsec, vusec = ITIMERVAL.unpack(k.mem.read(new, ITIMERVAL.size))
        if min(isec, vsec) < 0 or not (0 <= iusec < 1_000_000 and 0 <= vusec < 1_000_000):
            raise SyscallError(errno.EINVAL)
        interval, value = isec + iusec / 1e6, vsec + vusec / 1e6
    if old:
        k.mem.write(old, _pack(*_current(k, which)))
    _arm(k, which, value, interval)
    return 0


def sys_getitimer(k: Kernel, which: int, cur: int, *_: int) -> int:
    k.mem.write(cur, _pack(*_current(k, _which(which))))
    return 0


def sys_alarm(k: Kernel, seconds: int, *_: int) -> int:
    _, left = _current(k, ITIMER_REAL)
    _arm(k, ITIMER_REAL, float(seconds & 0xFFFFFFFF), 0.0)
    # Linux rounds what was left to whole seconds, and says 1 rather than 0 if armed.
    return max(math.floor(left + 0.5), 1) if left else 0


# -- timerfd ------------------------------------------------------------------------------

TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET = 1, 2
TIMERFD_CLOCKS = (0, 1, 7)  # REALTIME, MONOTONIC, BOOTTIME (the _ALARM ones need a capability)


def sys_timerfd_create(k: Kernel, clock: int, flags: int, *_: int) -> int:
    clock = s32(clock)
    if clock not in TIMERFD_CLOCKS or flags & ~(O_CLOEXEC | O_NONBLOCK):
        raise SyscallError(errno.EINVAL)
    f = TimerFile(k.clock, k.sched, GUEST_CLOCKS[clock], flags & O_NONBLOCK, k.ns.inodes.next())
    return k.fds.install(f, cloexec=bool(flags & O_CLOEXEC))


def _timerfd(k: Kernel, fd: int) -> TimerFile | HostTimerFile:
    f = k.fds.get(s32(fd))
    if not isinstance(f, (TimerFile, HostTimerFile)):
        raise SyscallError(errno.EINVAL)
    return f


def _pack_spec(setting: tuple[int, int]) -> bytes:
    interval, value = setting
    return ITIMERSPEC.pack(*divmod(interval, 1_000_000_000), *divmod(value, 1_000_000_000))


def sys_timerfd_settime(k: Kernel, fd: int, flags: int, new: int, old: int, *_: int) -> int:
    f = _timerfd(k, fd)
    if flags & ~(TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET):
        raise SyscallError(errno.EINVAL)
    isec, insec, vsec, vnsec = ITIMERSPEC.unpack(k.mem.read(new, ITIMERSPEC.size))
    if min(isec, vsec) < 0 or not (0 <= insec < 1_000_000_000 and 0 <= vnsec < 1_000_000_000):
        raise SyscallError(errno.EINVAL)
    was = f.arm(vsec * 1_000_000_000 + vnsec, isec * 1_000_000_000 + insec,
                bool(flags & TFD_TIMER_ABSTIME))
    if old:
        k.mem.write(old, _pack_spec(was))
    return 0


def sys_timerfd_gettime(k: Kernel, fd: int, cur: int, *_: int) -> int:
    k.mem.write(cur, _pack_spec(_timerfd(k, fd).setting()))
    return 0
