"""Time: the guest's clocks (clock.py), which a clone reads as the host's time now."""

from __future__ import annotations

import errno
import resource
import struct
import time
from typing import TYPE_CHECKING

from ..children import Usage
from ..clock import REALTIME, Deadline
from ..errors import SyscallError
from ..procfs import CLOCK_TICKS
from ..sched import Block
from .args import s32

if TYPE_CHECKING:
    from ..kernel import Kernel

TIMESPEC = struct.Struct("<qq")
RUSAGE_SELF, RUSAGE_CHILDREN, RUSAGE_THREAD = 0, -1, 1


def sys_clock_gettime(k: Kernel, clock: int, tp: int, *_: int) -> int:
    sec, nsec = divmod(k.clock.of_id(s32(clock)), 1_000_000_000)
    k.mem.write(tp, TIMESPEC.pack(sec, nsec))
    return 0


def sys_clock_settime(k: Kernel, clock: int, tp: int, *_: int) -> int:
    """The guest's user may not set the wall clock (EPERM, as for any process without
    CAP_SYS_TIME); the other clocks cannot be set at all (EINVAL)."""
    clock = s32(clock)
    k.clock.of_id(clock)
    raise SyscallError(errno.EPERM if clock == 0 else errno.EINVAL)


def sys_settimeofday(k: Kernel, tv: int, tz: int, *_: int) -> int:
    raise SyscallError(errno.EPERM)


def sys_clock_getres(k: Kernel, clock: int, tp: int, *_: int) -> int:
    k.clock.of_id(s32(clock))
    if tp:
        k.mem.write(tp, TIMESPEC.pack(0, 1))
    return 0


def sys_gettimeofday(k: Kernel, tv: int, tz: int, *_: int) -> int:
    if tv:
        sec, nsec = divmod(k.clock.ns(REALTIME), 1_000_000_000)
        k.mem.write(tv, TIMESPEC.pack(sec, nsec // 1000))
    return 0


def sys_time(k: Kernel, tloc: int, *_: int) -> int:
    now = k.clock.ns(REALTIME) // 1_000_000_000
    if tloc:
        k.mem.put_u64(tloc, now)
    return now


def _timespec_ns(k: Kernel, addr: int) -> int:
    sec, nsec = TIMESPEC.unpack(k.mem.read(addr, 16))
    if sec < 0 or not 0 <= nsec < 1_000_000_000:
        raise SyscallError(errno.EINVAL)
    return sec * 1_000_000_000 + nsec


def _sleep(k: Kernel, deadline: Deadline, rem: int = 0) -> int:
    """Wait until `deadline` off the vCPU: other threads run, or the host sleeps.

    A due signal ends the sleep with EINTR and the time left in rem; the
    invocation's deadline ends any sleep.
    """
    if k.sched.signalled():
        if rem:
            left = round(k.clock.left(deadline) * 1e9)
            k.mem.write(rem, TIMESPEC.pack(*divmod(left, 1_000_000_000)))
        raise SyscallError(errno.EINTR)
    if k.clock.reached(deadline):
        return 0
    raise Block((), deadline, timeout_result=0)


def sys_nanosleep(k: Kernel, req: int, rem: int, *_: int) -> int:
    return _sleep(k, k.sched.deadline_after(_timespec_ns(k, req) / 1e9), rem)


def sys_clock_nanosleep(k: Kernel, clock: int, flags: int, req: int, rem: int, *_: int) -> int:
    TIMER_ABSTIME = 1
    clock = s32(clock)
    ns = _timespec_ns(k, req)
    k.clock.of_id(clock)  # EINVAL for a clock there is none of
    if flags & TIMER_ABSTIME:
        # Linux leaves rem alone for an absolute sleep
        return _sleep(k, k.clock.at(clock, ns))
    return _sleep(k, k.sched.deadline_after(ns / 1e9), rem)


def sys_times(k: Kernel, buf: int, *_: int) -> int:
    """struct tms in clock ticks (AT_CLKTCK, 100): the monitor's user and system time, and
    the children's waited for, as getrusage has them."""
    if buf:
        own, children = resource.getrusage(resource.RUSAGE_SELF), k.children.waited_usage()
        k.mem.write(buf, struct.pack("<qqqq", *(int(s * CLOCK_TICKS) for s in (
            own.ru_utime, own.ru_stime, children.user_s, children.system_s))))
    return int(time.monotonic() * CLOCK_TICKS)


def sys_getrusage(k: Kernel, who: int, usage: int, *_: int) -> int:
    """RUSAGE_SELF: the monitor's CPU time and peak memory; RUSAGE_THREAD: the thread's
    turns on the vCPU as user time; RUSAGE_CHILDREN: the children waited for (their
    monitors')."""
    who = s32(who)
    if who == RUSAGE_CHILDREN:
        k.mem.write(usage, k.children.waited_usage().pack())
        return 0
    if who not in (RUSAGE_SELF, RUSAGE_THREAD):
        raise SyscallError(errno.EINVAL)
    # The monitor process's: the guest's memory is its memory (ru_maxrss), its CPU the VM's.
    own = Usage.of(resource.getrusage(resource.RUSAGE_SELF))
    if who == RUSAGE_THREAD:
        own = Usage(k.sched.cpu_ns(k.sched.current) / 1e9, 0.0, own.maxrss_kib)
    k.mem.write(usage, own.pack())
    return 0
