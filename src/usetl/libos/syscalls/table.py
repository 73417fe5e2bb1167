"""The syscall table: number -> handler, with each syscall's support level.

This table is also the documentation of what a USF offers. Support levels:
  full     - Linux semantics for a single-threaded process
  partial  - works for what CPython and common extensions do; the note says what is missing
  refused  - answers with a fixed errno on purpose (the note says why)
Any number not listed returns ENOSYS and is logged by name. A handler that
raises anything but SyscallError is a monitor bug, whatever the guest passed:
the dispatcher counts it, logs it and ends the invocation with a MonitorError
(kernel.py); `make fuzz` (bench/fuzz.py) looks for such bugs.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import SyscallError
from . import sys_file as f
from . import sys_identity as ident
from . import sys_mmap as mm
from . import sys_random as rnd
from . import sys_signal as sig
from . import sys_socket as net
from . import sys_thread as th
from . import sys_time as tm
from .numbers import NR

FULL, PARTIAL, REFUSED = "full", "partial", "refused"


@dataclass(frozen=True)
class Syscall:
    name: str
    handler: Callable[..., object]
    support: str
    note: str = ""


def _errno(err: int) -> Callable[..., int]:
    def refuse(k: object, *_: int) -> int:
        raise SyscallError(err)

    refuse.__name__ = f"refuse_{errno.errorcode[err]}"
    return refuse


_ENTRIES = [
    # files
    Syscall("read", f.sys_read, FULL),
    Syscall("write", f.sys_write, FULL),
    Syscall("open", f.sys_open, PARTIAL, "no O_TMPFILE; creating files only under /tmp"),
    Syscall("openat", f.sys_openat, PARTIAL, "no O_TMPFILE; creating files only under /tmp"),
    Syscall("close", f.sys_close, FULL),
    Syscall("stat", f.sys_stat, FULL),
    Syscall("fstat", f.sys_fstat, FULL),
    Syscall("lstat", f.sys_lstat, FULL),
    Syscall("newfstatat", f.sys_newfstatat, FULL),
    Syscall("lseek", f.sys_lseek, FULL),
    Syscall("pread64", f.sys_pread64, FULL),
    Syscall("pwrite64", f.sys_pwrite64, FULL),
    Syscall("readv", f.sys_readv, FULL),
    Syscall("writev", f.sys_writev, FULL),
    Syscall("access", f.sys_access, FULL),
    Syscall("faccessat", f.sys_faccessat, FULL),
    Syscall("faccessat2", f.sys_faccessat2, FULL),
    Syscall("dup", f.sys_dup, FULL),
    Syscall("dup2", f.sys_dup2, FULL),
    Syscall("dup3", f.sys_dup3, FULL),
    Syscall("fcntl", f.sys_fcntl, PARTIAL,
            "locks always granted (one process); no leases; F_DUPFD bound 0-1023"),
    Syscall("ioctl", f.sys_ioctl, PARTIAL, "FIONBIO/FIOCLEX only; terminals are ENOTTY"),
    Syscall("getdents64", f.sys_getdents64, FULL),
    Syscall("getcwd", f.sys_getcwd, FULL),
    Syscall("chdir", f.sys_chdir, FULL),
    Syscall("fchdir", f.sys_fchdir, FULL),
    Syscall("readlink", f.sys_readlink, FULL),
    Syscall("readlinkat", f.sys_readlinkat, FULL),
    Syscall("mkdir", f.sys_mkdir, PARTIAL, "only under /tmp: the image is read-only"),
    Syscall("mkdirat", f.sys_mkdirat, PARTIAL, "only under /tmp: the image is read-only"),
    Syscall("rmdir", f.sys_rmdir, PARTIAL, "only under /tmp"),
    Syscall("unlink", f.sys_unlink, PARTIAL, "only under /tmp"),
    Syscall("unlinkat", f.sys_unlinkat, PARTIAL, "only under /tmp"),
    Syscall("rename", f.sys_rename, PARTIAL, "only within /tmp"),
    Syscall("renameat", f.sys_renameat, PARTIAL, "only within /tmp"),
    Syscall("renameat2", f.sys_renameat2, PARTIAL, "only within /tmp; no flags"),
    Syscall("truncate", f.sys_truncate, PARTIAL, "only under /tmp"),
    Syscall("ftruncate", f.sys_ftruncate, FULL),
    Syscall("fsync", f.sys_fsync, FULL, "memory-backed: nothing to flush"),
    Syscall("fdatasync", f.sys_fsync, FULL, "memory-backed: nothing to flush"),
    Syscall("fadvise64", f.sys_fadvise64, FULL, "advice ignored"),
    Syscall("umask", f.sys_umask, FULL),
    Syscall("statx", _errno(errno.ENOSYS), REFUSED, "glibc falls back to newfstatat"),
    # memory
    Syscall("brk", mm.sys_brk, FULL),
    Syscall("mmap", mm.sys_mmap, PARTIAL, "no writable shared file mappings"),
    Syscall("munmap", mm.sys_munmap, FULL),
    Syscall("mremap", mm.sys_mremap, PARTIAL, "no MREMAP_FIXED"),
    Syscall("mprotect", mm.sys_mprotect, PARTIAL, "checked, not enforced: RAM is mapped RWX"),
    Syscall("madvise", mm.sys_madvise, PARTIAL, "DONTNEED/REMOVE zero the range; others ignored"),
    Syscall("msync", mm.sys_msync, FULL),
    Syscall("mlock", mm.sys_mlock, FULL, "guest memory is never swapped by the guest"),
    Syscall("munlock", mm.sys_mlock, FULL),
    # time
    Syscall("clock_gettime", tm.sys_clock_gettime, FULL, "no vDSO: every call exits"),
    Syscall("clock_getres", tm.sys_clock_getres, FULL),
    Syscall("gettimeofday", tm.sys_gettimeofday, FULL),
    Syscall("time", tm.sys_time, FULL),
    Syscall("nanosleep", tm.sys_nanosleep, PARTIAL, "one sleep is capped at 10 s"),
    Syscall("clock_nanosleep", tm.sys_clock_nanosleep, PARTIAL, "one sleep is capped at 10 s"),
    Syscall("times", tm.sys_times, PARTIAL, "user time is the monitor's"),
    Syscall("getrusage", tm.sys_getrusage, PARTIAL, "CPU time only"),
    # identity and system information
    Syscall("getpid", ident.sys_getpid, FULL),
    Syscall("getppid", ident.sys_getppid, FULL),
    Syscall("gettid", ident.sys_gettid, FULL),
    Syscall("getuid", ident.sys_getuid, FULL),
    Syscall("geteuid", ident.sys_getuid, FULL),
    Syscall("getgid", ident.sys_getgid, FULL),
    Syscall("getegid", ident.sys_getgid, FULL),
    Syscall("getresuid", ident.sys_getresuid, FULL),
    Syscall("getresgid", ident.sys_getresgid, FULL),
    Syscall("getgroups", ident.sys_getgroups, FULL),
    Syscall("getpgrp", ident.sys_getpgrp, FULL),
    Syscall("uname", ident.sys_uname, FULL),
    Syscall("sysinfo", ident.sys_sysinfo, PARTIAL, "memory figures are the VM's"),
    Syscall("prlimit64", ident.sys_prlimit64, PARTIAL, "limits can be read, not raised"),
    Syscall("getrlimit", ident.sys_getrlimit, FULL),
    Syscall("sched_getaffinity", ident.sys_sched_getaffinity, FULL, "one vCPU"),
    Syscall("sched_yield", ident.sys_sched_yield, FULL),
    Syscall("getcpu", ident.sys_getcpu, FULL),
    Syscall("getrandom", rnd.sys_getrandom, FULL, "host entropy, live in every clone"),
    # signals
    Syscall("rt_sigaction", sig.sys_rt_sigaction, PARTIAL, "recorded, never delivered"),
    Syscall("rt_sigprocmask", sig.sys_rt_sigprocmask, PARTIAL, "recorded, never delivered"),
    Syscall("sigaltstack", sig.sys_sigaltstack, PARTIAL, "accepted, never used"),
    Syscall("kill", sig.sys_kill, PARTIAL, "only to itself; default fatal actions end the USF"),
    Syscall("tgkill", sig.sys_tgkill, PARTIAL, "only to itself; default fatal actions end it"),
    Syscall("tkill", sig.sys_tkill, PARTIAL, "only to itself; default fatal actions end it"),
    # sockets: TCP clients proxied to host sockets under the function's policy
    Syscall("socket", net.sys_socket, PARTIAL, "TCP over IPv4/IPv6, 64 open; EACCES if no policy"),
    Syscall("connect", net.sys_connect, PARTIAL, "only where the policy allows, else EACCES"),
    Syscall("sendto", net.sys_sendto, PARTIAL, "the address is ignored (connected stream)"),
    Syscall("recvfrom", net.sys_recvfrom, FULL, "TCP reports no source address"),
    Syscall("sendmsg", net.sys_sendmsg, PARTIAL, "no ancillary data"),
    Syscall("recvmsg", net.sys_recvmsg, PARTIAL, "no ancillary data; MSG_WAITALL ignored"),
    Syscall("shutdown", net.sys_shutdown, FULL),
    Syscall("getsockname", net.sys_getsockname, FULL),
    Syscall("getpeername", net.sys_getpeername, FULL),
    Syscall("setsockopt", net.sys_setsockopt, PARTIAL, "common TCP and socket options only"),
    Syscall("getsockopt", net.sys_getsockopt, PARTIAL, "common TCP and socket options only"),
    Syscall("bind", net.sys_bind, REFUSED, "no listening sockets: EPERM"),
    Syscall("listen", net.sys_listen, REFUSED, "no listening sockets: EPERM"),
    Syscall("accept", net.sys_accept, REFUSED, "no listening sockets: EPERM"),
    Syscall("accept4", net.sys_accept4, REFUSED, "no listening sockets: EPERM"),
    Syscall("socketpair", net.sys_socketpair, REFUSED, "no AF_UNIX: EACCES"),
    Syscall("poll", net.sys_poll, FULL, "files other than sockets are always ready"),
    Syscall("ppoll", net.sys_ppoll, PARTIAL, "the signal mask is ignored (never delivered)"),
    Syscall("select", net.sys_select, FULL, "files other than sockets are always ready"),
    Syscall("pselect6", net.sys_pselect6, PARTIAL, "the signal mask is ignored (never delivered)"),
    # threads and processes
    Syscall("exit", th.sys_exit_group, FULL, "one thread: ends the USF"),
    Syscall("exit_group", th.sys_exit_group, FULL),
    Syscall("arch_prctl", th.sys_arch_prctl, PARTIAL,
            "ARCH_SET_FS/ARCH_GET_FS only; EPERM for an FS base outside user space"),
    Syscall("set_tid_address", th.sys_set_tid_address, FULL),
    Syscall("set_robust_list", th.sys_set_robust_list, FULL),
    Syscall("futex", th.sys_futex, PARTIAL, "one thread: wake is a no-op, a real wait is EDEADLK"),
    Syscall("prctl", th.sys_prctl, PARTIAL, "PR_SET_NAME/PR_GET_NAME only"),
    Syscall("rseq", _errno(errno.ENOSYS), REFUSED, "glibc runs without restartable sequences"),
    Syscall("clone", th.sys_refuse_process, REFUSED, "no threads or processes: EPERM"),
    Syscall("clone3", _errno(errno.ENOSYS), REFUSED, "glibc then tries clone, refused"),
    Syscall("fork", th.sys_refuse_process, REFUSED, "no processes: EPERM"),
    Syscall("vfork", th.sys_refuse_process, REFUSED, "no processes: EPERM"),
    Syscall("execve", th.sys_refuse_process, REFUSED, "no exec: EPERM"),
    Syscall("execveat", th.sys_refuse_process, REFUSED, "no exec: EPERM"),
    Syscall("wait4", th.sys_wait4, REFUSED, "there are no children: ECHILD"),
]

TABLE: dict[int, Syscall] = {NR[e.name]: e for e in _ENTRIES}
HANDLERS: dict[int, Callable[..., object]] = {nr: e.handler for nr, e in TABLE.items()}
