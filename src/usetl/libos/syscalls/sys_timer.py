"""Interval timers: setitimer, getitimer, alarm; SIGALRM, SIGVTALRM, SIGPROF.

ITIMER_REAL counts wall time; ITIMER_VIRTUAL and ITIMER_PROF count the CPU
time of the vCPU's thread (signals.timer_clock). The timers are the
process's (signals.IntervalTimer); every syscall exit checks them, and the
VM is asked to wake when one may expire (Kernel.rearm_wake) so that guest
code making no syscalls gets its signal too.
"""

from __future__ import annotations

import errno
import math
import struct
from typing import TYPE_CHECKING

from ..errors import SyscallError
from ..signals import ITIMER_REAL, TIMER_SIGNALS, IntervalTimer, timer_clock
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
