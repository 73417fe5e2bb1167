"""A seccomp-bpf allow-list for a jailed monitor: anything else kills it with SIGSYS.

The filter is written here as classic BPF and loaded with seccomp(2) through ctypes
(libseccomp's Python binding exists only for the system interpreter). It checks the
architecture, then the syscall number against the list; ioctl is allowed only for KVM's
ioctls (type 0xAE) and the few terminal, socket and page-map requests CPython and the
monitor make; socket only for the families the monitor uses; clone only without
namespace flags. clone3, whose flags sit in memory a filter cannot read, gets ENOSYS,
so that glibc falls back to clone.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct

from usetl.libos.syscalls.numbers import SYSCALL_NAMES

from .spec import JailError, Unavailable

# What the monitor process calls once jailed: CPython, glibc, the VM run loop, the
# libos (files of the image, memfds, host directories it mounts), the broker connection
# and the guest's connected sockets, threads for timeouts, fork in a template process, and
# the monitors of a guest's child programs (forked, signalled with kill, reaped;
# libos/children.py). Not connect: the egress broker makes every connection, so a monitor
# that a guest took over can neither reach an address nor point a socket it was given
# somewhere else.
ALLOWED = (
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev",
    "preadv2", "pwritev2", "close", "close_range", "lseek", "fstat", "stat", "lstat",
    "newfstatat", "statx", "fstatfs", "statfs", "openat", "open", "access", "faccessat",
    "faccessat2", "readlink", "readlinkat", "getdents64", "getcwd", "chdir", "fchdir",
    "fcntl", "dup", "dup2", "dup3", "pipe", "pipe2", "flock", "fsync", "fdatasync",
    "ftruncate", "fallocate", "memfd_create", "copy_file_range", "sendfile", "splice",
    "mmap", "munmap", "mprotect", "mremap", "madvise", "brk", "mincore", "msync",
    "mlock", "munlock", "membarrier",
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigtimedwait",
    "rt_sigsuspend", "sigaltstack", "pause", "alarm", "setitimer", "getitimer",
    # The kernel's own: how it resumes a timed wait (poll, nanosleep, futex) that a signal
    # woke with no handler to run (a stop, or a process-wide signal another thread took).
    "restart_syscall",
    "futex", "set_robust_list", "get_robust_list", "rseq", "set_tid_address",
    "sched_yield", "sched_getaffinity", "getpriority",
    "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres", "gettimeofday",
    "time", "timerfd_create", "timerfd_settime", "timerfd_gettime", "eventfd2",
    "poll", "ppoll", "select", "pselect6", "epoll_create1", "epoll_ctl", "epoll_wait",
    "epoll_pwait", "epoll_pwait2",
    "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getgroups",
    "getresuid", "getresgid", "getpgrp", "getpgid", "getsid", "getrusage", "times",
    "getrlimit", "prlimit64", "uname", "sysinfo", "getrandom", "prctl", "arch_prctl",
    "capget",
    "clone", "wait4", "waitid", "exit", "exit_group", "tgkill", "kill",
    "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg",
    "shutdown", "getsockname", "getpeername", "getsockopt", "setsockopt", "socketpair",
    "umask", "sched_getparam", "sched_getscheduler",
    # A tree's shared /tmp (libos/sharedtmp.py): names made, changed and removed relative
    # to the directory's fd, and chmod, utime and user.* attributes through /proc/self/fd.
    "openat2", "mkdirat", "mknodat", "unlinkat", "renameat", "renameat2", "linkat",
    "symlinkat", "fchmod", "fchmodat", "chmod", "utimensat", "setxattr", "getxattr",
    "listxattr", "removexattr", "fsetxattr", "fgetxattr", "flistxattr",
)

# ioctl requests besides KVM's: isatty (TCGETS), blocking mode and close-on-exec
# (FIONBIO, FIOCLEX, FIONCLEX), bytes readable (FIONREAD), PAGEMAP_SCAN, and what the
# monitor asks of its pseudo-terminals (libos/pty.py); not TIOCSTI, which types into one.
TCGETS, FIONREAD, FIONBIO, FIONCLEX, FIOCLEX = 0x5401, 0x541B, 0x5421, 0x5450, 0x5451
TERMINAL_IOCTLS = (
    0x5402, 0x5403, 0x5404, 0x5409, 0x540A, 0x540B,  # TCSETS, -W, -F, TCSBRK, TCXONC, TCFLSH
    0x5411, 0x5413, 0x5414, 0x5441,  # TIOCOUTQ, TIOCGWINSZ, TIOCSWINSZ, TIOCGPTPEER
    0x80045430, 0x40045431, 0x80045439,  # TIOCGPTN, TIOCSPTLCK, TIOCGPTLCK
)
KVM_IOCTL_TYPE = 0xAE
NAMESPACE_FLAGS = 0x7E020080  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
SYS_SECCOMP = 317

# Classic BPF opcodes.
LD_W_ABS = 0x20
JEQ_K = 0x15
JGE_K = 0x35
AND_K = 0x54
RET_K = 0x06
OFF_NR, OFF_ARCH = 0, 4


def _arg(i: int) -> int:
    """Offset of the low 32 bits of argument i in struct seccomp_data."""
    return 16 + 8 * i


def _stmt(code: int, k: int) -> tuple[int, int, int, int]:
    return (code, 0, 0, k)


def _jeq(k: int, jt: int, jf: int) -> tuple[int, int, int, int]:
    return (JEQ_K, jt, jf, k)


def _number(name: str) -> int:
    return _NUMBERS[name]


_NUMBERS = {name: nr for nr, name in SYSCALL_NAMES.items()}
_ALLOW = _stmt(RET_K, SECCOMP_RET_ALLOW)
_KILL = _stmt(RET_K, SECCOMP_RET_KILL_PROCESS)


def _guarded(name: str, check: list[tuple[int, int, int, int]]) -> list:
    """If the syscall is `name`, run `check` (which ends in a return); else go on, with the
    number still in the accumulator."""
    return [_jeq(_number(name), 0, len(check)), *check]


def _one_of(arg: int, values: list[int], mask: int | None = None, mask_value: int = 0) -> list:
    """Allow if argument `arg` is one of `values` (or, masked, equals mask_value); else kill."""
    body = [_stmt(LD_W_ABS, _arg(arg))]
    for i, value in enumerate(values):
        remaining = len(values) - i - 1
        body.append(_jeq(value, remaining + (3 if mask is not None else 1), 0))
    if mask is not None:
        body += [_stmt(AND_K, mask), _jeq(mask_value, 1, 0), _KILL, _ALLOW]
    else:
        body += [_KILL, _ALLOW]
    return body  # every value that matched jumps to the final ALLOW


def build(pagemap_scan: int, socket_families: tuple[int, ...]) -> list[tuple[int, int, int, int]]:
    prog = [
        _stmt(LD_W_ABS, OFF_ARCH), _jeq(AUDIT_ARCH_X86_64, 1, 0), _KILL,
        _stmt(LD_W_ABS, OFF_NR), (JGE_K, 0, 1, X32_SYSCALL_BIT), _KILL,
    ]
    prog += _guarded("ioctl", _one_of(1, [TCGETS, FIONREAD, FIONBIO, FIONCLEX, FIOCLEX,
                                          *TERMINAL_IOCTLS, pagemap_scan & 0xFFFFFFFF],
                                      mask=0xFF00, mask_value=KVM_IOCTL_TYPE << 8))
    prog += _guarded("socket", _one_of(0, list(socket_families)))
    clone_check = [_stmt(LD_W_ABS, _arg(0)), _stmt(AND_K, NAMESPACE_FLAGS),
                   _jeq(0, 1, 0), _KILL, _ALLOW]
    prog += _guarded("clone", clone_check)
    prog += _guarded("clone3", [_stmt(RET_K, SECCOMP_RET_ERRNO | errno.ENOSYS)])
    for name in ALLOWED:
        prog += [_jeq(_number(name), 0, 1), _ALLOW]
    prog.append(_KILL)
    return prog


# The broker connection is AF_UNIX; a guest's TCP socket is one of the monitor's own
# (in the empty network namespace) until the broker passes it a connected one.
SOCKET_FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6)


def install(prog: list[tuple[int, int, int, int]]) -> None:
    """Load the filter for this process (all its threads); needs no_new_privs first."""
    if len(prog) > 4096:
        raise JailError(f"the seccomp filter has {len(prog)} instructions; the kernel takes 4096")
    raw = b"".join(struct.pack("<HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    if not _kernel_has_seccomp():
        raise Unavailable("the kernel has no seccomp filters")
    # TSYNC (1) puts every thread of the process under the filter.
    if libc.syscall(SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, 1, ctypes.byref(fprog)) != 0:
        raise JailError(f"seccomp: {os.strerror(ctypes.get_errno())}")


def _kernel_has_seccomp() -> bool:
    with open("/proc/self/status") as f:
        return any(line.startswith("Seccomp_filters:") for line in f)
