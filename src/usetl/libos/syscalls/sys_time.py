"""Time: the host's clocks, read live (a clone never sees its template's time)."""

from __future__ import annotations

import errno
import resource
import struct
import time
from typing import TYPE_CHECKING

from ..children import Usage
from ..errors import SyscallError
from ..sched import Block
from .args import s32

if TYPE_CHECKING:
    from ..kernel import Kernel

CLOCKS = {
    0: time.CLOCK_REALTIME,
    1: time.CLOCK_MONOTONIC,
    2: time.CLOCK_PROCESS_CPUTIME_ID,
    3: time.CLOCK_THREAD_CPUTIME_ID,
    4: time.CLOCK_MONOTONIC_RAW,
    5: time.CLOCK_REALTIME,  # REALTIME_COARSE
    6: time.CLOCK_MONOTONIC,  # MONOTONIC_COARSE
    7: time.CLOCK_BOOTTIME,
}
TIMESPEC = struct.Struct("<qq")
RUSAGE_SELF, RUSAGE_CHILDREN, RUSAGE_THREAD = 0, -1, 1


def _clock_ns(clock: int) -> int:
    try:
        return time.clock_gettime_ns(CLOCKS[clock])
    except KeyError:
        raise SyscallError(errno.EINVAL) from None


def sys_clock_gettime(k: Kernel, clock: int, tp: int, *_: int) -> int:
    sec, nsec = divmod(_clock_ns(s32(clock)), 1_000_000_000)
    k.mem.write(tp, TIMESPEC.pack(sec, nsec))
    return 0


def sys_clock_getres(k: Kernel, clock: int, tp: int, *_: int) -> int:
    _clock_ns(s32(clock))
    if tp:
        k.mem.write(tp, TIMESPEC.pack(0, 1))
    return 0


def sys_gettimeofday(k: Kernel, tv: int, tz: int, *_: int) -> int:
    if tv:
        sec, nsec = divmod(time.time_ns(), 1_000_000_000)
        k.mem.write(tv, TIMESPEC.pack(sec, nsec // 1000))
    return 0


def sys_time(k: Kernel, tloc: int, *_: int) -> int:
    now = int(time.time())
    if tloc:
        k.mem.put_u64(tloc, now)
    return now


def _timespec_ns(k: Kernel, addr: int) -> int:
    sec, nsec = TIMESPEC.unpack(k.mem.read(addr, 16))
    if sec < 0 or not 0 <= nsec < 1_000_000_000:
        raise SyscallError(errno.EINVAL)
    return sec * 1_000_000_000 + nsec


def _sleep(k: Kernel, seconds: float, rem: int = 0) -> int:
    """Wait `seconds` off the vCPU: other threads run, or the host sleeps.

    A re-run keeps its first deadline; a due signal ends the sleep with
    EINTR and the time left in rem; the invocation's deadline ends any sleep.
    """
    deadline = k.sched.deadline_after(seconds)
    now = time.monotonic()
    if k.sched.signalled():
        if rem and deadline is not None:
            left = max(round((deadline - now) * 1e9), 0)
            k.mem.write(rem, TIMESPEC.pack(*divmod(left, 1_000_000_000)))
        raise SyscallError(errno.EINTR)
    if deadline is None or deadline <= now:
        return 0
    raise Block((), deadline, timeout_result=0)


def sys_nanosleep(k: Kernel, req: int, rem: int, *_: int) -> int:
    return _sleep(k, _timespec_ns(k, req) / 1e9, rem)


def sys_clock_nanosleep(k: Kernel, clock: int, flags: int, req: int, rem: int, *_: int) -> int:
    TIMER_ABSTIME = 1
    clock = s32(clock)
    ns = _timespec_ns(k, req)
    if flags & TIMER_ABSTIME:
        ns -= _clock_ns(clock)
        rem = 0  # Linux leaves rem alone for an absolute sleep
    else:
        _clock_ns(clock)
    return _sleep(k, max(ns, 0) / 1e9, rem)


def sys_times(k: Kernel, buf: int, *_: int) -> int:
    ticks = int(time.process_time() * 100)
    if buf:
        k.mem.write(buf, struct.pack("<qqqq", ticks, 0, 0, 0))
    return int(time.monotonic() * 100)


def sys_getrusage(k: Kernel, who: int, usage: int, *_: int) -> int:
    """RUSAGE_SELF and RUSAGE_THREAD: the monitor's CPU time and peak memory;
    RUSAGE_CHILDREN: the children waited for (their monitors')."""
    who = s32(who)
    if who == RUSAGE_CHILDREN:
        k.mem.write(usage, k.children.waited_usage().pack())
        return 0
    if who not in (RUSAGE_SELF, RUSAGE_THREAD):
        raise SyscallError(errno.EINVAL)
    # The monitor process's: the guest's memory is its memory (ru_maxrss), its CPU the VM's.
    k.mem.write(usage, Usage.of(resource.getrusage(resource.RUSAGE_SELF)).pack())
    return 0
