"""futex: the wait queues glibc's mutexes, condition variables and joins are built on.

A futex is keyed by its address alone: a USF is one address space, so
private and shared futexes are the same thing. Priority-inheritance ops
(glibc uses them only for PTHREAD_PRIO_INHERIT mutexes) are ENOSYS.
"""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from ..clock import MONOTONIC, REALTIME, Deadline
from ..errors import SyscallError
from ..sched import ALL_BITS, Block
from .args import s32

if TYPE_CHECKING:
    from ..kernel import Kernel

FUTEX_WAIT, FUTEX_WAKE, FUTEX_REQUEUE, FUTEX_CMP_REQUEUE, FUTEX_WAKE_OP = 0, 1, 3, 4, 5
FUTEX_WAIT_BITSET, FUTEX_WAKE_BITSET = 9, 10
FUTEX_PRIVATE_FLAG, FUTEX_CLOCK_REALTIME = 128, 256
FUTEX_CMD_MASK = ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)
TIMESPEC = struct.Struct("<qq")
SHARED_POLL = 0.005  # how often a wait on memory shared with forked processes looks again


def _word(k: Kernel, addr: int) -> int:
    if addr & 3:
        raise SyscallError(errno.EINVAL)
    return k.mem.u32(addr)


def _deadline(k: Kernel, timeout: int, absolute: bool, realtime: bool) -> Deadline | None:
    """The wait's deadline on the guest's clock, from a relative timespec (on its monotonic
    clock, as Linux's FUTEX_WAIT) or an absolute one (on the clock the op names)."""
    if not timeout:
        return None
    sec, nsec = TIMESPEC.unpack(k.mem.read(timeout, TIMESPEC.size))
    if sec < 0 or not 0 <= nsec < 1_000_000_000:
        raise SyscallError(errno.EINVAL)
    if not absolute:
        return k.clock.after(sec + nsec / 1e9)
    return Deadline(REALTIME if realtime else MONOTONIC, sec * 1_000_000_000 + nsec)


def _wait(k: Kernel, addr: int, val: int, timeout: int, absolute: bool, realtime: bool,
          bitset: int) -> int:
    if not bitset:
        raise SyscallError(errno.EINVAL)
    if _word(k, addr) != val & 0xFFFFFFFF:
        raise SyscallError(errno.EAGAIN)
    deadline = _deadline(k, timeout, absolute, realtime)
    if deadline is not None and k.clock.reached(deadline):
        raise SyscallError(errno.ETIMEDOUT)
    q = k.sched.futex_queue(addr)
    if k.children.table is not None and k.mm.is_host_shared(addr, addr + 4):
        # A forked process may wake it, whose FUTEX_WAKE this monitor never sees: the wait
        # ends now and then, as a wake the caller re-checks (futex allows spurious ones).
        if deadline is None or SHARED_POLL < k.clock.left(deadline):
            raise Block((q,), k.clock.after(SHARED_POLL), retry=False, timeout_result=0,
                        bitset=bitset)
    raise Block((q,), deadline, retry=False, timeout_result=-errno.ETIMEDOUT, bitset=bitset)


def _requeue(k: Kernel, addr: int, wake: int, move: int, addr2: int) -> int:
    sched = k.sched
    q = sched.futexes.get(addr)
    if q is None:
        return 0
    woken = q.wake(sched, wake, 0)
    moved = 0
    if move and q.waiters:
        dst = sched.futex_queue(addr2)
        for t in list(q.waiters)[:move]:
            sched.move(t, q, dst)
            moved += 1
        sched.forget_futex(addr2)
    sched.forget_futex(addr)
    return woken + moved


def _wake_op(k: Kernel, addr: int, wake: int, wake2: int, addr2: int, encoded: int) -> int:
    """*addr2 = old OP arg; wake `wake` on addr, and `wake2` on addr2 if old CMP cmparg."""
    op, cmp = (encoded >> 28) & 0xF, (encoded >> 24) & 0xF
    arg, cmparg = (encoded >> 12) & 0xFFF, encoded & 0xFFF
    if op & 8:  # FUTEX_OP_OPARG_SHIFT
        op &= 7
        arg = 1 << arg if arg < 32 else 0
    old = _word(k, addr2)
    ops = {0: lambda: arg, 1: lambda: old + arg, 2: lambda: old | arg,
           3: lambda: old & ~arg, 4: lambda: old ^ arg}  # fmt: skip
    if op not in ops or cmp > 5:
        raise SyscallError(errno.ENOSYS)
    k.mem.put_u32(addr2, ops[op]() & 0xFFFFFFFF)
    signed_old = old - (1 << 32) if old & 0x80000000 else old
    arg_c = cmparg - (1 << 12) if cmparg & 0x800 else cmparg
    hit = (signed_old == arg_c, signed_old != arg_c, signed_old < arg_c,
           signed_old <= arg_c, signed_old > arg_c, signed_old >= arg_c)[cmp]
    woken = k.sched.futex_wake(addr, wake)
    if hit:
        woken += k.sched.futex_wake(addr2, wake2)
    return woken


def sys_futex(k: Kernel, addr: int, op: int, val: int, timeout: int, addr2: int,
              val3: int) -> int:
    op = s32(op)
    cmd = op & FUTEX_CMD_MASK
    realtime = bool(op & FUTEX_CLOCK_REALTIME)
    if realtime and cmd not in (FUTEX_WAIT, FUTEX_WAIT_BITSET):
        raise SyscallError(errno.ENOSYS)
    count = s32(val)
    if cmd == FUTEX_WAIT:
        return _wait(k, addr, val, timeout, False, realtime, ALL_BITS)
    if cmd == FUTEX_WAIT_BITSET:
        return _wait(k, addr, val, timeout, True, realtime, val3 & 0xFFFFFFFF)
    if cmd in (FUTEX_WAKE, FUTEX_WAKE_BITSET):
        bitset = ALL_BITS if cmd == FUTEX_WAKE else val3 & 0xFFFFFFFF
        if not bitset:
            raise SyscallError(errno.EINVAL)
        _word(k, addr)
        return k.sched.futex_wake(addr, max(count, 0), bitset)
    if cmd in (FUTEX_REQUEUE, FUTEX_CMP_REQUEUE):
        move = s32(timeout)  # val2 travels in the timeout argument
        if count < 0 or move < 0:
            raise SyscallError(errno.EINVAL)
        if cmd == FUTEX_CMP_REQUEUE and _word(k, addr) != val3 & 0xFFFFFFFF:
            raise SyscallError(errno.EAGAIN)
        return _requeue(k, addr, count, move, addr2)
    if cmd == FUTEX_WAKE_OP:
        return _wake_op(k, addr, max(count, 0), max(s32(timeout), 0), addr2, val3 & 0xFFFFFFFF)
    raise SyscallError(errno.ENOSYS)
