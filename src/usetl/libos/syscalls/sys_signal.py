"""Signals: handlers and masks are recorded, never delivered.

A USF runs one thread with no timers or children, so nothing would send it
a signal but itself; a fatal signal it sends itself (abort()) ends it.
"""

from __future__ import annotations

import errno
import signal
from typing import TYPE_CHECKING

from usetl.vm import Stop

from ..errors import SyscallError
from ..signals import SIG_DFL, SIGACTION, SigAction
from .args import s32

if TYPE_CHECKING:
    from ..kernel import Kernel



def sys_rt_sigaction(k: Kernel, sig: int, act: int, oldact: int, sigsetsize: int,
                     *_: int) -> int:
    sig = s32(sig)
    if not 1 <= sig <= 64 or sig in (signal.SIGKILL, signal.SIGSTOP) and act:
        raise SyscallError(errno.EINVAL)
    if oldact:
        k.mem.write(oldact, k.signals.action(sig).pack())
    if act:
        k.signals.actions[sig] = SigAction.unpack(k.mem.read(act, SIGACTION.size))
    return 0


def sys_rt_sigprocmask(k: Kernel, how: int, new: int, old: int, sigsetsize: int,
                       *_: int) -> int:
    if old:
        k.mem.put_u64(old, k.thread_signals.mask)
    if new:
        mask = k.mem.u64(new)
        how = s32(how)
        if how == 0:
            k.thread_signals.mask |= mask
        elif how == 1:
            k.thread_signals.mask &= ~mask
        elif how == 2:
            k.thread_signals.mask = mask
        else:
            raise SyscallError(errno.EINVAL)
    return 0


def sys_sigaltstack(k: Kernel, new: int, old: int, *_: int) -> int:
    if old:
        k.mem.write(old, bytes(24))
    return 0


def _self_signal(k: Kernel, sig: int) -> int | Stop:
    if sig == 0:
        return 0
    if not 1 <= sig <= 64:
        raise SyscallError(errno.EINVAL)
    handler = k.signals.action(sig).handler
    if k.signals.ignores(sig):
        return 0
    if handler == SIG_DFL or sig in (signal.SIGKILL, signal.SIGSTOP):
        k.term_signal = sig
        return Stop("exit", 128 + sig)
    # A handler is installed but signals are not delivered: say so rather
    # than pretend the handler ran.
    raise SyscallError(errno.ENOSYS)


def sys_kill(k: Kernel, pid: int, sig: int, *_: int) -> int | Stop:
    if s32(pid) not in (0, -1, k.identity.pid):
        raise SyscallError(errno.ESRCH)
    return _self_signal(k, s32(sig))


def sys_tgkill(k: Kernel, tgid: int, tid: int, sig: int, *_: int) -> int | Stop:
    if s32(tgid) != k.identity.pid or s32(tid) != k.identity.pid:
        raise SyscallError(errno.ESRCH)
    return _self_signal(k, s32(sig))


def sys_tkill(k: Kernel, tid: int, sig: int, *_: int) -> int | Stop:
    if s32(tid) != k.identity.pid:
        raise SyscallError(errno.ESRCH)
    return _self_signal(k, s32(sig))
