"""Threads: clone of threads, TLS, thread exit (child processes: sys_process.py).

Threads are the scheduler's (libos/sched.py); futex is in sys_futex.py.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from usetl.kvm.structs import kvm_regs
from usetl.vm import Stop, ThreadContext

from ..errors import SyscallError
from ..procfs import thread_name
from ..sched import ExitThread
from .sys_process import clone_process

if TYPE_CHECKING:
    from ..kernel import Kernel

ARCH_SET_GS, ARCH_SET_FS, ARCH_GET_FS, ARCH_GET_GS = 0x1001, 0x1002, 0x1003, 0x1004
TASK_SIZE_MAX = (1 << 47) - 4096  # the top of user space with 4-level paging
CLONE_VM, CLONE_FS, CLONE_FILES, CLONE_SIGHAND = 0x100, 0x200, 0x400, 0x800
CLONE_THREAD, CLONE_SYSVSEM, CLONE_SETTLS = 0x10000, 0x40000, 0x80000
CLONE_PARENT_SETTID, CLONE_CHILD_CLEARTID, CLONE_CHILD_SETTID = 0x100000, 0x200000, 0x1000000
CLONE_DETACHED = 0x400000  # ignored by Linux
CSIGNAL = 0xFF
# What a thread shares with its creator here (everything); glibc's pthread_create asks for these.
THREAD_FLAGS = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM
THREAD_OPTIONS = (CLONE_SETTLS | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID
                  | CLONE_CHILD_SETTID | CLONE_DETACHED)


def sys_exit_group(k: Kernel, status: int, *_: int) -> Stop:
    return Stop("exit", status & 0xFF)


def sys_exit(k: Kernel, status: int, *_: int) -> Stop:
    """One thread ends; the last one ends the USF, as on Linux."""
    if k.sched.alone:
        return Stop("exit", status & 0xFF)
    raise ExitThread()


def sys_clone(k: Kernel, flags: int, stack: int, parent_tid: int, child_tid: int, tls: int,
              *_: int) -> int:
    """A thread sharing everything (glibc's pthread_create); a process: sys_process."""
    if flags & THREAD_FLAGS != THREAD_FLAGS:
        return clone_process(k, flags, stack, parent_tid, child_tid)
    if flags & ~(THREAD_FLAGS | THREAD_OPTIONS | CSIGNAL) or flags & CSIGNAL:
        raise SyscallError(errno.EINVAL)  # a thread sends no exit signal
    if not stack:
        raise SyscallError(errno.EINVAL)  # a thread on its creator's stack would corrupt it
    parent = k.vm.save_context()
    regs = kvm_regs.from_buffer_copy(parent.regs)
    regs.rax = 0  # the child's clone() returns 0
    fs_base = tls if flags & CLONE_SETTLS else parent.fs_base
    child = k.sched.new_thread(ThreadContext(bytes(regs), stack, fs_base, parent.xsave))
    try:
        if flags & CLONE_PARENT_SETTID:
            k.mem.put_u32(parent_tid, child.tid)
        if flags & CLONE_CHILD_SETTID:
            k.mem.put_u32(child_tid, child.tid)
    except SyscallError:
        k.sched.discard(child)
        raise
    if flags & CLONE_CHILD_CLEARTID:
        child.clear_child_tid = child_tid
    return child.tid


def sys_gettid(k: Kernel, *_: int) -> int:
    return k.sched.current.tid


def sys_arch_prctl(k: Kernel, code: int, addr: int, *_: int) -> int:
    if code == ARCH_SET_FS:
        if addr >= TASK_SIZE_MAX:  # Linux's check; KVM would refuse the MSR write anyway
            raise SyscallError(errno.EPERM)
        k.vm.set_fs_base(addr)
        return 0
    if code == ARCH_GET_FS:
        k.mem.put_u64(addr, k.vm.fs_base())
        return 0
    raise SyscallError(errno.EINVAL)


def sys_set_tid_address(k: Kernel, tidptr: int, *_: int) -> int:
    k.sched.current.clear_child_tid = tidptr
    return k.sched.current.tid


def sys_set_robust_list(k: Kernel, head: int, length: int, *_: int) -> int:
    return 0 if length == 24 else -errno.EINVAL




PR_SET_NAME, PR_GET_NAME = 15, 16
TASK_COMM_LEN = 16  # a thread's name with its NUL


def sys_prctl(k: Kernel, option: int, arg: int, *_: int) -> int:
    """The calling thread's name (comm, shown in /proc/self/task/<tid>/comm): at most 15
    bytes are kept, and PR_GET_NAME writes them NUL-padded to 16."""
    t = k.sched.current
    if option == PR_SET_NAME:
        t.name = k.mem.read(arg, TASK_COMM_LEN - 1).split(b"\0", 1)[0]
        return 0
    if option == PR_GET_NAME:
        k.mem.write(arg, thread_name(k, t).ljust(TASK_COMM_LEN, b"\0"))
        return 0
    raise SyscallError(errno.EINVAL)
