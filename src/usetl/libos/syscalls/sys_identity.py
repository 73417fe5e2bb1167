"""Identity and system information: one process, one user, a small machine."""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from .. import limits
from ..children import parent_pid, route
from ..errors import SyscallError
from ..procfs import OS_RELEASE, uptime
from ..sched import TIME_SLICE
from .args import s32

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..sched import Thread


def sys_getpid(k: Kernel, *_: int) -> int:
    return k.identity.pid


def sys_getppid(k: Kernel, *_: int) -> int:
    return parent_pid(k)


def _set_ids(current: int, *ids: int) -> int:
    """set*uid and set*gid: the guest's user is not root, so each id given (-1: unchanged)
    may only be the one it has (real, effective and saved are all the guest's), else EPERM."""
    for i in ids:
        if s32(i) != -1 and i & 0xFFFFFFFF != current:
            raise SyscallError(errno.EPERM)
    return 0


def sys_setuid(k: Kernel, uid: int, *_: int) -> int:
    if s32(uid) == -1:
        raise SyscallError(errno.EINVAL)
    return _set_ids(k.identity.uid, uid)


def sys_setgid(k: Kernel, gid: int, *_: int) -> int:
    if s32(gid) == -1:
        raise SyscallError(errno.EINVAL)
    return _set_ids(k.identity.gid, gid)


def sys_setreuid(k: Kernel, ruid: int, euid: int, *_: int) -> int:
    return _set_ids(k.identity.uid, ruid, euid)


def sys_setregid(k: Kernel, rgid: int, egid: int, *_: int) -> int:
    return _set_ids(k.identity.gid, rgid, egid)


def sys_setresuid(k: Kernel, ruid: int, euid: int, suid: int, *_: int) -> int:
    return _set_ids(k.identity.uid, ruid, euid, suid)


def sys_setresgid(k: Kernel, rgid: int, egid: int, sgid: int, *_: int) -> int:
    return _set_ids(k.identity.gid, rgid, egid, sgid)


def sys_getuid(k: Kernel, *_: int) -> int:
    return k.identity.uid


def sys_getgid(k: Kernel, *_: int) -> int:
    return k.identity.gid


def sys_getresuid(k: Kernel, ruid: int, euid: int, suid: int, *_: int) -> int:
    for addr in (ruid, euid, suid):
        k.mem.put_u32(addr, k.identity.uid)
    return 0


def sys_getresgid(k: Kernel, rgid: int, egid: int, sgid: int, *_: int) -> int:
    for addr in (rgid, egid, sgid):
        k.mem.put_u32(addr, k.identity.gid)
    return 0


def sys_getgroups(k: Kernel, size: int, *_: int) -> int:
    return 0


def sys_uname(k: Kernel, buf: int, *_: int) -> int:
    fields = ["Linux", k.identity.hostname, OS_RELEASE, "#1 SMP usetl", "x86_64", "(none)"]
    k.mem.write(buf, b"".join(f.encode().ljust(65, b"\0") for f in fields))
    return 0


PRIO_PROCESS, PRIO_PGRP, PRIO_USER = 0, 1, 2


def _prioritised(k: Kernel, which: int, who: int) -> list[Thread]:
    """The threads getpriority/setpriority name: PRIO_PROCESS one thread by tid (0: the
    caller; the pid is the main thread's tid), as Linux's nice is per thread; a group or
    the user every thread of the guest's one process."""
    which, who = s32(which), s32(who)
    if not PRIO_PROCESS <= which <= PRIO_USER:
        raise SyscallError(errno.EINVAL)
    if which == PRIO_PROCESS:
        t = k.sched.current if who == 0 else k.sched.threads.get(who)
        if t is None:
            raise SyscallError(errno.ESRCH)
        return [t]
    own = k.identity.uid if which == PRIO_USER else k.identity.pid
    if who not in (0, own):
        raise SyscallError(errno.ESRCH)
    return list(k.sched.threads.values())


def sys_getpriority(k: Kernel, which: int, who: int, *_: int) -> int:
    nice = min(t.nice for t in _prioritised(k, which, who))  # the highest priority's
    return 20 - nice  # the kernel's form; glibc gives the nice value back


def sys_setpriority(k: Kernel, which: int, who: int, prio: int, *_: int) -> int:
    threads = _prioritised(k, which, who)
    nice = min(max(s32(prio), -20), 19)
    if any(nice < t.nice for t in threads):
        raise SyscallError(errno.EACCES)  # lowering it takes CAP_SYS_NICE (RLIMIT_NICE 0)
    for t in threads:
        t.nice = nice
    return 0


def sys_sethostname(k: Kernel, name: int, length: int, *_: int) -> int:
    raise SyscallError(errno.EPERM)  # it takes CAP_SYS_ADMIN, which the guest's user lacks


sys_setdomainname = sys_sethostname


def sys_sysinfo(k: Kernel, info: int, *_: int) -> int:
    total = k.vm.ram.size
    free = max(total - k.mm.mapped_bytes, 0)
    # uptime, loads[3], totalram, freeram, sharedram, bufferram, totalswap,
    # freeswap, procs, totalhigh, freehigh, mem_unit
    raw = struct.pack("<q3Q6QH6xQQI", int(uptime()), 0, 0, 0, total, free, 0, 0, 0, 0, 1, 0,
                      0, 1)
    k.mem.write(info, raw.ljust(112, b"\0"))
    return 0


def sys_prlimit64(k: Kernel, pid: int, resource: int, new: int, old: int, *_: int) -> int:
    """The caller's limits, or those of another process of its tree (limits.py)."""
    wanted = struct.unpack("<QQ", k.mem.read(new, 16)) if new else None
    if s32(pid) in (0, k.identity.pid):
        return _give_old(k, old, *limits.change(k, s32(resource), wanted))
    limits.of_process(k, s32(pid), s32(resource), wanted,
                      lambda soft, hard: _give_old(k, old, soft, hard), route)
    return 0  # not reached: the caller waits for the answer


def _give_old(k: Kernel, old: int, soft: int, hard: int) -> int:
    if old:
        k.mem.write(old, struct.pack("<QQ", soft, hard))
    return 0


def sys_getrlimit(k: Kernel, resource: int, rlim: int, *_: int) -> int:
    k.mem.write(rlim, struct.pack("<QQ", *limits.current(k, s32(resource))))
    return 0


def sys_sched_getaffinity(k: Kernel, pid: int, size: int, mask: int, *_: int) -> int:
    if size < 8:
        raise SyscallError(errno.EINVAL)
    k.mem.write(mask, (1).to_bytes(8, "little"))
    return 8


def sys_sched_setaffinity(k: Kernel, pid: int, size: int, mask: int, *_: int) -> int:
    """The one vCPU is CPU 0: a mask that holds it is what the thread has already, one
    that does not holds no CPU the thread may run on (EINVAL)."""
    _own_thread(k, pid)
    if size == 0:
        raise SyscallError(errno.EINVAL)
    if not k.mem.read(mask, 1)[0] & 1:
        raise SyscallError(errno.EINVAL)
    return 0


def sys_sched_rr_get_interval(k: Kernel, pid: int, interval: int, *_: int) -> int:
    """A SCHED_OTHER thread's time slice: the scheduler's."""
    _own_thread(k, pid)
    k.mem.write(interval, struct.pack("<qq", 0, int(TIME_SLICE * 1e9)))
    return 0


SCHED_OTHER, SCHED_FIFO, SCHED_RR = 0, 1, 2
SCHED_RESET_ON_FORK = 0x40000000


def _own_thread(k: Kernel, pid: int) -> None:
    """The sched_* calls name a thread of the guest's process by tid (0: the caller)."""
    pid = s32(pid)
    if pid < 0:
        raise SyscallError(errno.EINVAL)
    if pid not in (0, k.identity.pid) and pid not in k.sched.threads:
        raise SyscallError(errno.ESRCH)


def sys_sched_getscheduler(k: Kernel, pid: int, *_: int) -> int:
    _own_thread(k, pid)
    return SCHED_OTHER  # every thread, as sched_setscheduler only accepts that


def sys_sched_getparam(k: Kernel, pid: int, param: int, *_: int) -> int:
    _own_thread(k, pid)
    k.mem.put_u32(param, 0)  # SCHED_OTHER's only priority
    return 0


def sys_sched_setscheduler(k: Kernel, pid: int, policy: int, param: int, *_: int) -> int:
    """Only SCHED_OTHER at priority 0, what every thread has (libzmq's I/O threads set it
    again); the real-time policies take CAP_SYS_NICE (RLIMIT_RTPRIO 0): EPERM."""
    _own_thread(k, pid)
    policy = s32(policy) & ~SCHED_RESET_ON_FORK
    if policy < 0 or policy > 6:
        raise SyscallError(errno.EINVAL)
    priority = s32(k.mem.u32(param))
    if policy in (SCHED_FIFO, SCHED_RR):
        raise SyscallError(errno.EINVAL if not 1 <= priority <= 99 else errno.EPERM)
    if priority != 0:
        raise SyscallError(errno.EINVAL)
    if policy != SCHED_OTHER:
        raise SyscallError(errno.EPERM)  # SCHED_BATCH/IDLE/DEADLINE: not kept here
    return 0


def sys_sched_setparam(k: Kernel, pid: int, param: int, *_: int) -> int:
    _own_thread(k, pid)
    if s32(k.mem.u32(param)) != 0:
        raise SyscallError(errno.EINVAL)  # SCHED_OTHER's only priority is 0
    return 0


def sys_sched_get_priority_max(k: Kernel, policy: int, *_: int) -> int:
    return _priority_range(policy)[1]


def sys_sched_get_priority_min(k: Kernel, policy: int, *_: int) -> int:
    return _priority_range(policy)[0]


def _priority_range(policy: int) -> tuple[int, int]:
    policy = s32(policy)
    if policy in (SCHED_FIFO, SCHED_RR):
        return 1, 99
    if policy in (SCHED_OTHER, 3, 5, 6):  # SCHED_BATCH, SCHED_IDLE, SCHED_DEADLINE
        return 0, 0
    raise SyscallError(errno.EINVAL)


def sys_sched_yield(k: Kernel, *_: int) -> int:
    k.sched.give_way()
    return 0


def sys_getcpu(k: Kernel, cpu: int, node: int, *_: int) -> int:
    for addr in (cpu, node):
        if addr:
            k.mem.put_u32(addr, 0)
    return 0
