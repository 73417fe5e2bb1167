"""Signals: actions, masks, the alternate stack, signals to itself, and rt_sigreturn.

What a signal does when it arrives is sigdelivery.py; the state is
signals.py (actions per process, mask and altstack per thread).
"""

from __future__ import annotations

import ctypes
import errno
import signal
import struct
from typing import TYPE_CHECKING

from usetl.vm import Stop

from .. import children, sigdelivery
from ..errors import SyscallError
from ..files import O_CLOEXEC, O_NONBLOCK
from ..proctree import PidFile
from ..sched import Block
from ..signalfd import SignalFile
from ..signals import (
    FPSTATE_SIZE,
    FRAME_SIZE,
    MINSIGSTKSZ,
    SI_TKILL,
    SIGACTION,
    SIGINFO,
    SS_AUTODISARM,
    SS_DISABLE,
    SS_ONSTACK,
    STACK_T,
    UNBLOCKABLE,
    XSTATE_SIZE,
    AltStack,
    SigAction,
    SigInfo,
    ThreadSignals,
    bit,
    fpstate_is_valid,
    on_stack,
    s32_bits,
    unpack_frame,
)
from .args import s32

if TYPE_CHECKING:
    from ..kernel import Kernel

SIGSET_SIZE = 8
TIMESPEC = struct.Struct("<qq")
SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2
# rflags bits a frame may change (Linux's FIX_EFLAGS): AC OF DF TF SF ZF AF PF CF RF
USER_FLAGS = 0x40000 | 0x800 | 0x400 | 0x100 | 0x80 | 0x40 | 0x10 | 0x4 | 0x1 | 0x10000
RFLAGS_FIXED = 0x2


def _signo(sig: int) -> int:
    sig = s32(sig)
    if not 1 <= sig <= 64:
        raise SyscallError(errno.EINVAL)
    return sig


def sys_rt_sigaction(k: Kernel, sig: int, act: int, oldact: int, sigsetsize: int,
                     *_: int) -> int:
    sig = _signo(sig)
    if sigsetsize != SIGSET_SIZE or act and sig in (signal.SIGKILL, signal.SIGSTOP):
        raise SyscallError(errno.EINVAL)
    old = k.signals.action(sig)
    if act:
        k.signals.actions[sig] = SigAction.unpack(k.mem.read(act, SIGACTION.size))
        if k.signals.ignores(sig):  # setting an ignoring action discards what is pending
            k.signals.pending &= ~bit(sig)
            k.thread_signals.pending &= ~bit(sig)
    if oldact:
        k.mem.write(oldact, old.pack())
    return 0


def _signalfd(k: Kernel, fd: int, mask_addr: int, sizemask: int, flags: int) -> int:
    """A new signalfd (fd -1) or a new mask for the signalfd `fd`."""
    if sizemask != SIGSET_SIZE or flags & ~(O_NONBLOCK | O_CLOEXEC):
        raise SyscallError(errno.EINVAL)
    mask = k.mem.u64(mask_addr)
    if s32(fd) == -1:
        return k.fds.install(SignalFile(k, mask, flags, k.ns.inodes.next()),
                             cloexec=bool(flags & O_CLOEXEC))
    f = k.fds.get(s32(fd))
    if not isinstance(f, SignalFile):
        raise SyscallError(errno.EINVAL)
    f.set_mask(mask)
    return s32(fd)


def sys_signalfd4(k: Kernel, fd: int, mask: int, sizemask: int, flags: int, *_: int) -> int:
    return _signalfd(k, fd, mask, sizemask, flags & 0xFFFFFFFF)


def sys_signalfd(k: Kernel, fd: int, mask: int, sizemask: int, *_: int) -> int:
    return _signalfd(k, fd, mask, sizemask, 0)


def sys_rt_sigprocmask(k: Kernel, how: int, new: int, old: int, sigsetsize: int,
                       *_: int) -> int:
    if sigsetsize != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL)
    thread = k.thread_signals
    previous = thread.mask
    if new:
        mask = k.mem.u64(new)
        how = s32(how)
        if how == SIG_BLOCK:
            mask = previous | mask
        elif how == SIG_UNBLOCK:
            mask = previous & ~mask
        elif how != SIG_SETMASK:
            raise SyscallError(errno.EINVAL)
        thread.mask = mask & ~UNBLOCKABLE
    if old:
        k.mem.put_u64(old, previous)
    return 0


def sys_rt_sigpending(k: Kernel, pending: int, sigsetsize: int, *_: int) -> int:
    if sigsetsize > SIGSET_SIZE:
        raise SyscallError(errno.EINVAL)
    k.mem.put_u64(pending, k.signals.pending | k.thread_signals.pending)
    return 0


def _wait_for_signal(k: Kernel) -> int:
    """Wait until a signal is due (or the invocation's deadline): always EINTR.

    The thread leaves the vCPU (to the thread that may send the signal) and a
    due signal wakes it (Scheduler._wake_for_signals): its re-run ends with
    EINTR. With nothing that could ever send one (no timer, child or other
    thread) the scheduler ends the guest as a deadlock rather than hang: a
    USF's processes get no signals from outside.
    """
    if k.sched.signalled() or sigdelivery.due(k):
        raise SyscallError(errno.EINTR)
    raise Block()


def sys_pause(k: Kernel, *_: int) -> int:
    return _wait_for_signal(k)


def sys_rt_sigsuspend(k: Kernel, mask: int, sigsetsize: int, *_: int) -> int:
    if sigsetsize != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL)
    thread = k.thread_signals
    if not k.sched.rerun():  # a re-run after its wait woke has the mask swapped already
        new = k.mem.u64(mask) & ~UNBLOCKABLE
        thread.restore_mask, thread.mask = thread.mask, new
    try:
        return _wait_for_signal(k)
    except SyscallError:
        if not sigdelivery.due(k):  # no handler will run to put the mask back
            thread.mask, thread.restore_mask = thread.restore_mask, None
        raise


def sys_rt_sigtimedwait(k: Kernel, these: int, info: int, timeout: int, sigsetsize: int,
                        *_: int) -> int:
    """Take a pending signal of the set (blocked ones: that is the use), waiting up to timeout.

    The caller leaves the vCPU while it waits, with the set unblocked, as
    Linux does: such a signal sent to the process is then for this thread,
    and wakes it (a wait nothing could end is a deadlock, as for pause).
    """
    if sigsetsize != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL)
    wanted = k.mem.u64(these) & ~UNBLOCKABLE
    seconds = None
    if timeout:
        sec, nsec = TIMESPEC.unpack(k.mem.read(timeout, TIMESPEC.size))
        if sec < 0 or not 0 <= nsec < 1_000_000_000:
            raise SyscallError(errno.EINVAL)
        seconds = sec + nsec / 1e9
    thread = k.thread_signals
    if thread.sigwait_mask is not None:  # a re-run: its wait ended
        thread.mask, thread.sigwait_mask = thread.sigwait_mask, None
    interrupted = sigdelivery.due(k)  # also turns expired timers into signals
    taken = sigdelivery.take(k, wanted)
    if taken is not None:
        sig, details = taken
        if info:
            k.mem.write(info, SIGINFO.pack(sig, 0, details.code, 0, details.pid, details.uid,
                                           details.status))
        return sig
    if interrupted or k.sched.signalled():
        raise SyscallError(errno.EINTR)  # another signal's handler runs first
    if seconds == 0 or k.sched.timed_out():
        raise SyscallError(errno.EAGAIN)
    thread.sigwait_mask, thread.mask = thread.mask, thread.mask & ~wanted
    raise Block(deadline=k.sched.deadline_after(seconds))


def sys_sigaltstack(k: Kernel, new: int, old: int, *_: int) -> int:
    thread = k.thread_signals
    alt = thread.altstack
    rsp = sigdelivery.caller_rsp(k)  # the caller's stack pointer
    if old:
        flags = alt.flags | (SS_ONSTACK if on_stack(alt, rsp) else 0)
        k.mem.write(old, STACK_T.pack(alt.sp, s32_bits(flags), 0, alt.size))
    if new:
        sp, flags, _, size = STACK_T.unpack(k.mem.read(new, STACK_T.size))
        flags &= 0xFFFFFFFF
        if on_stack(alt, rsp):
            raise SyscallError(errno.EPERM)
        if flags & ~(SS_DISABLE | SS_AUTODISARM | SS_ONSTACK):
            raise SyscallError(errno.EINVAL)
        if flags & SS_DISABLE:
            thread.altstack = AltStack()
        elif size < MINSIGSTKSZ:
            raise SyscallError(errno.ENOMEM)
        else:
            thread.altstack = AltStack(sp, size, flags & SS_AUTODISARM)
    return 0


def sys_rt_sigreturn(k: Kernel, *_: int) -> int | Stop:
    """Put back the context the handler's frame saved: registers, FPU state, mask, altstack."""
    frame = sigdelivery.caller_rsp(k) - 8  # the handler's ret popped pretcode
    try:
        saved = unpack_frame(k.mem.read(frame, FRAME_SIZE))
        fpstate = k.mem.read(saved.fpstate, FPSTATE_SIZE) if saved.fpstate else b""
    except SyscallError:
        return sigdelivery.killed(k, signal.SIGSEGV)
    thread = k.thread_signals
    thread.mask = saved.mask & ~UNBLOCKABLE
    if saved.altstack.flags & ~(SS_DISABLE | SS_AUTODISARM) == 0:
        thread.altstack = saved.altstack
    vm = k.vm
    user_flags = vm.regs.r11  # rflags as the syscall found them
    # Every register changes, rip included: finish the trampoline's port write first.
    vm.settle()
    if fpstate and fpstate_is_valid(fpstate):
        xsave = vm.vcpu.get_xsave()
        ctypes.memmove(ctypes.addressof(xsave), fpstate, XSTATE_SIZE)
        vm.vcpu.set_xsave(xsave)
    regs = vm.regs
    for name, value in saved.regs.items():
        setattr(regs, name, value)
    regs.rflags = (user_flags & ~USER_FLAGS) | (saved.regs["rflags"] & USER_FLAGS) | RFLAGS_FIXED
    return saved.regs["rax"]


def sys_kill(k: Kernel, pid: int, sig: int, *_: int) -> int:
    if not 0 <= s32(sig) <= 64:
        raise SyscallError(errno.EINVAL)
    children.send_signal(k, s32(pid), s32(sig))
    return 0


def sys_pidfd_send_signal(k: Kernel, pidfd: int, sig: int, info: int, flags: int,
                          *_: int) -> int:
    """kill() of the process a pidfd names, or a /proc/<pid> directory (as Linux takes)."""
    f = k.fds.get(s32(pidfd))
    pid = f.pid if isinstance(f, PidFile) else proc_pid(f.path)
    if pid is None:
        raise SyscallError(errno.EBADF)
    if flags or info or not 0 <= s32(sig) <= 64:
        raise SyscallError(errno.EINVAL)  # a siginfo of the caller's making is not taken
    children.send_signal(k, pid, s32(sig))
    return 0


def proc_pid(path: str) -> int | None:
    """The pid a /proc/<pid> directory's path names, if it is one."""
    name = path.removeprefix("/proc/")
    return int(name) if name != path and name.isdigit() else None


def sys_tgkill(k: Kernel, tgid: int, tid: int, sig: int, *_: int) -> int:
    if s32(tgid) <= 0 or s32(tid) <= 0 or not 0 <= s32(sig) <= 64:
        raise SyscallError(errno.EINVAL)
    if s32(tgid) != k.identity.pid:
        children.signal_thread(k, s32(tgid), s32(tid), s32(sig))
        return 0
    if s32(tid) not in k.sched.threads:
        raise SyscallError(errno.ESRCH)
    return _send(k, s32(sig), SI_TKILL, k.sched.threads[s32(tid)].signals)


def sys_tkill(k: Kernel, tid: int, sig: int, *_: int) -> int:
    """tkill: a thread of this process, or another process's main thread (its tid is its
    pid); another process's other threads are not known here (ESRCH)."""
    if s32(tid) in k.sched.threads:
        return _send(k, s32(sig), SI_TKILL, k.sched.threads[s32(tid)].signals)
    return sys_tgkill(k, tid, tid, sig)


def _send(k: Kernel, sig: int, code: int, to_thread: ThreadSignals | None) -> int:
    """A signal to itself: pending now, delivered at this syscall's exit if not blocked."""
    if sig == 0:
        return 0
    sig = _signo(sig)
    info = SigInfo(sig, code, k.identity.pid, k.identity.uid)
    sigdelivery.send(k, sig, info, to_thread)
    return 0
