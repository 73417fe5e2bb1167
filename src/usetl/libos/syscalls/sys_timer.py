"""Interval timers: ITIMER_REAL (setitimer, getitimer, alarm) sends SIGALRM.

The timer is the process's (signals.RealTimer, in monotonic time); the VM
is asked to wake at its expiry (Vm.wake_at) so that SIGALRM reaches guest
code that makes no syscalls, and every syscall exit checks it as well.
"""

from __future__ import annotations

import errno
import math
import struct
import time
from typing import TYPE_CHECKING

from ..errors import SyscallError
from ..signals import RealTimer
from .args import s32

if TYPE_CHECKING:
    from ..kernel import Kernel

ITIMER_REAL = 0
ITIMERVAL = struct.Struct("<qqqq")  # it_interval (sec, usec), it_value (sec, usec)


def _current(k: Kernel) -> tuple[float, float]:
    """(interval, seconds left) of ITIMER_REAL; (0, 0) when disarmed."""
    timer = k.signals.timer
    if timer is None:
        return 0.0, 0.0
    return timer.interval, max(timer.expiry - time.monotonic(), 1e-6)


def _pack(interval: float, value: float) -> bytes:
    def timeval(seconds: float) -> tuple[int, int]:
        usec = round(seconds * 1e6)
        return usec // 1_000_000, usec % 1_000_000

    return ITIMERVAL.pack(*timeval(interval), *timeval(value))


def _arm(k: Kernel, value: float, interval: float) -> None:
    if value <= 0:
        k.signals.timer = None
        k.vm.wake_at(None)
        return
    timer = RealTimer(time.monotonic() + value, interval)
    k.signals.timer = timer
    k.vm.wake_at(timer.expiry)


def _which(which: int) -> None:
    if s32(which) != ITIMER_REAL:  # ITIMER_VIRTUAL and ITIMER_PROF (CPU time) are not kept
        raise SyscallError(errno.EINVAL)


def sys_setitimer(k: Kernel, which: int, new: int, old: int, *_: int) -> int:
    _which(which)
    interval = value = 0.0
    if new:
        isec, iusec, vsec, vusec = ITIMERVAL.unpack(k.mem.read(new, ITIMERVAL.size))
        if min(isec, vsec) < 0 or not (0 <= iusec < 1_000_000 and 0 <= vusec < 1_000_000):
            raise SyscallError(errno.EINVAL)
        interval, value = isec + iusec / 1e6, vsec + vusec / 1e6
    if old:
        k.mem.write(old, _pack(*_current(k)))
    _arm(k, value, interval)
    return 0


def sys_getitimer(k: Kernel, which: int, cur: int, *_: int) -> int:
    _which(which)
    k.mem.write(cur, _pack(*_current(k)))
    return 0


def sys_alarm(k: Kernel, seconds: int, *_: int) -> int:
    _, left = _current(k)
    _arm(k, float(seconds & 0xFFFFFFFF), 0.0)
    # Linux rounds what was left to whole seconds, and says 1 rather than 0 if armed.
    return max(math.floor(left + 0.5), 1) if left else 0
