"""Threads and processes: one thread, its TLS and exit; no clone, fork or exec."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from usetl.vm import Stop

from ..errors import SyscallError
from .args import s32

if TYPE_CHECKING:
    from ..kernel import Kernel

ARCH_SET_GS, ARCH_SET_FS, ARCH_GET_FS, ARCH_GET_GS = 0x1001, 0x1002, 0x1003, 0x1004
TASK_SIZE_MAX = (1 << 47) - 4096  # the top of user space with 4-level paging
FUTEX_CMD_MASK = 0x7F  # without FUTEX_PRIVATE_FLAG and FUTEX_CLOCK_REALTIME
FUTEX_WAIT, FUTEX_WAKE = 0, 1
FUTEX_WAIT_BITSET, FUTEX_WAKE_BITSET = 9, 10


def sys_exit_group(k: Kernel, status: int, *_: int) -> Stop:
    return Stop("exit", status & 0xFF)


def sys_arch_prctl(k: Kernel, code: int, addr: int, *_: int) -> int:
    if code == ARCH_SET_FS:
        if addr >= TASK_SIZE_MAX:  # Linux's check; KVM would refuse the MSR write anyway
            raise SyscallError(errno.EPERM)
        k.fs_base = addr
        k.vm.set_fs_base(addr)
        return 0
    if code == ARCH_GET_FS:
        k.mem.put_u64(addr, k.fs_base)
        return 0
    raise SyscallError(errno.EINVAL)


def sys_set_tid_address(k: Kernel, tidptr: int, *_: int) -> int:
    k.tid_address = tidptr
    return k.identity.pid


def sys_set_robust_list(k: Kernel, head: int, length: int, *_: int) -> int:
    return 0 if length == 24 else -errno.EINVAL


def sys_futex(k: Kernel, uaddr: int, op: int, val: int, timeout: int, *_: int) -> int:
    cmd = s32(op) & FUTEX_CMD_MASK
    if cmd in (FUTEX_WAKE, FUTEX_WAKE_BITSET):
        return 0  # no other thread waits
    if cmd in (FUTEX_WAIT, FUTEX_WAIT_BITSET):
        if k.mem.u32(uaddr) != val & 0xFFFFFFFF:
            raise SyscallError(errno.EAGAIN)
        # The only thread would wait forever: nothing can wake it.
        raise SyscallError(errno.EDEADLK)
    raise SyscallError(errno.ENOSYS)


def sys_refuse_process(k: Kernel, *_: int) -> int:
    """clone, fork, vfork, execve: a USF is one thread of one process."""
    raise SyscallError(errno.EPERM)


def sys_wait4(k: Kernel, *_: int) -> int:
    raise SyscallError(errno.ECHILD)


def sys_prctl(k: Kernel, option: int, *_: int) -> int:
    PR_SET_NAME, PR_GET_NAME = 15, 16
    if option in (PR_SET_NAME, PR_GET_NAME):
        return 0
    raise SyscallError(errno.EINVAL)
