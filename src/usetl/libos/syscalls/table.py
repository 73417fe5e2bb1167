"""The syscall table: number -> handler, with each syscall's support level.

This table is also the documentation of what a USF offers. Support levels:
  full     - Linux semantics for one process (with its threads)
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
from . import sys_fsmeta as meta
from . import sys_futex as fx
from . import sys_identity as ident
from . import sys_ipc as ipc
from . import sys_mmap as mm
from . import sys_poll as pl
from . import sys_process as proc
from . import sys_random as rnd
from . import sys_signal as sig
from . import sys_socket as net
from . import sys_thread as th
from . import sys_time as tm
from . import sys_timer as timer
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
    Syscall("open", f.sys_open, PARTIAL, "creating files (O_TMPFILE too) only under /tmp"),
    Syscall("openat", f.sys_openat, PARTIAL, "creating files (O_TMPFILE too) only under /tmp"),
    Syscall("creat", f.sys_creat, PARTIAL, "creating files only under /tmp"),
    Syscall("close", f.sys_close, FULL),
    Syscall("close_range", f.sys_close_range, FULL,
            "CLOSE_RANGE_UNSHARE is moot: one process per fd table"),
    Syscall("stat", f.sys_stat, FULL),
    Syscall("fstat", f.sys_fstat, FULL),
    Syscall("lstat", f.sys_lstat, FULL),
    Syscall("newfstatat", f.sys_newfstatat, FULL),
    Syscall("lseek", f.sys_lseek, FULL,
            "SEEK_DATA and SEEK_HOLE: a /tmp file's holes as tmpfs keeps them (none while "
            "it is mapped shared or /tmp is a tree's); other files all data"),
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
            "record locks: while the process is alone always granted and F_GETLK finds "
            "none; on a /tmp shared by a process tree (libos/sharedtmp.py) the host's "
            "record and OFD locks (F_OFD_*), F_SETLKW a poll of F_SETLK every 5 ms that "
            "a signal interrupts (EINTR); else no OFD locks; no leases; F_DUPFD bound "
            "by RLIMIT_NOFILE (1024); F_GETPIPE_SZ/F_SETPIPE_SZ "
            "as Linux (up to 1 MiB); F_ADD_SEALS/F_GET_SEALS of tmpfs files (memfds)"),
    Syscall("ioctl", f.sys_ioctl, PARTIAL,
            "FIONBIO/FIOCLEX; the devices' own: /dev/etl's request, /dev/usetl's exchange "
            "(a reply and the next request), a pseudo-terminal's termios, window size and "
            "pty requests (libos/pty.py); a socket's SIOCGIF* about the loopback "
            "(libos/netlink.py); the captured stdout and stderr are no terminals (ENOTTY)"),
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
    Syscall("rename", f.sys_rename, PARTIAL,
            "only within /tmp or within /dev/shm: between them EXDEV (two filesystems)"),
    Syscall("renameat", f.sys_renameat, PARTIAL,
            "only within /tmp or within /dev/shm: between them EXDEV"),
    Syscall("renameat2", f.sys_renameat2, PARTIAL,
            "as renameat; RENAME_NOREPLACE, not RENAME_EXCHANGE or WHITEOUT"),
    Syscall("truncate", f.sys_truncate, PARTIAL, "only under /tmp"),
    Syscall("ftruncate", f.sys_ftruncate, FULL),
    Syscall("fallocate", f.sys_fallocate, PARTIAL,
            "tmpfs files: mode 0, KEEP_SIZE, KEEP_SIZE|PUNCH_HOLE (as tmpfs); others "
            "EOPNOTSUPP"),
    Syscall("fsync", f.sys_fsync, FULL, "memory-backed: nothing to flush"),
    Syscall("fdatasync", f.sys_fsync, FULL, "memory-backed: nothing to flush"),
    Syscall("fadvise64", f.sys_fadvise64, FULL, "advice ignored"),
    Syscall("umask", f.sys_umask, FULL),
    Syscall("statx", _errno(errno.ENOSYS), REFUSED, "glibc falls back to newfstatat"),
    Syscall("chmod", meta.sys_chmod, PARTIAL, "tmpfs only; elsewhere EROFS"),
    Syscall("fchmod", meta.sys_fchmod, PARTIAL, "tmpfs only; elsewhere EROFS"),
    Syscall("fchmodat", meta.sys_fchmodat, PARTIAL, "tmpfs only; elsewhere EROFS"),
    *(Syscall(name, getattr(meta, f"sys_{name}"), PARTIAL,
              "tmpfs only (elsewhere EROFS); to its own uid/gid only, else EPERM")
      for name in ("chown", "fchown", "lchown", "fchownat")),
    Syscall("mknod", meta.sys_mknod, PARTIAL, "files and FIFOs under /tmp; devices EPERM"),
    Syscall("mknodat", meta.sys_mknodat, PARTIAL,
            "files and FIFOs under /tmp; devices EPERM"),
    Syscall("utimensat", meta.sys_utimensat, PARTIAL, "tmpfs only; elsewhere EROFS"),
    Syscall("futimesat", meta.sys_futimesat, PARTIAL, "tmpfs only; elsewhere EROFS"),
    Syscall("utimes", meta.sys_utimes, PARTIAL, "tmpfs only; elsewhere EROFS"),
    Syscall("utime", meta.sys_utime, PARTIAL, "tmpfs only; elsewhere EROFS"),
    Syscall("symlink", meta.sys_symlink, PARTIAL, "new links only under /tmp"),
    Syscall("symlinkat", meta.sys_symlinkat, PARTIAL, "new links only under /tmp"),
    Syscall("link", meta.sys_link, PARTIAL,
            "within /tmp or within /dev/shm; between them or from elsewhere EXDEV"),
    Syscall("linkat", meta.sys_linkat, PARTIAL,
            "within /tmp or within /dev/shm; between them or from elsewhere EXDEV"),
    Syscall("statfs", meta.sys_statfs, FULL, "only /tmp has free space"),
    Syscall("fstatfs", meta.sys_fstatfs, FULL, "only /tmp has free space"),
    Syscall("flock", meta.sys_flock, PARTIAL,
            "per open file description, within the process; on a /tmp shared by a process "
            "tree the host's, across it (a wait polls every 5 ms, EINTR on a signal)"),
    Syscall("sendfile", f.sys_sendfile, FULL),
    Syscall("copy_file_range", f.sys_copy_file_range, FULL,
            "between regular files; the monitor copies the bytes (no reflink)"),
    *(Syscall(f"{prefix}{op}xattr", getattr(meta, f"sys_{prefix}{op}xattr"), PARTIAL,
              "user.* on tmpfs files and directories (charged to the tmpfs; a /tmp shared by "
              "a process tree: the host tmpfs's, carried in and out with its files); "
              "trusted.* EPERM, security.* and system.* EOPNOTSUPP; other filesystems hold "
              "none (EROFS)")
      for op in ("list", "get", "set", "remove") for prefix in ("", "l", "f")),
    Syscall("inotify_init", meta.sys_inotify_init, PARTIAL, "as inotify_init1"),
    Syscall("inotify_init1", meta.sys_inotify_init1, PARTIAL,
            "events of the tmpfs: create, open, access, modify, close, delete, moves (with "
            "cookies), self deletes and moves, IN_IGNORED; not IN_ATTRIB of chmod and utimes, "
            "directories' opens, nor changes by other processes or through shared mappings"),
    Syscall("inotify_add_watch", meta.sys_inotify_add_watch, FULL),
    Syscall("inotify_rm_watch", meta.sys_inotify_rm_watch, FULL),
    Syscall("memfd_create", meta.sys_memfd_create, PARTIAL,
            "a tmpfs file in no directory; seals (F_ADD_SEALS, F_GET_SEALS) as Linux "
            "keeps them, not F_SEAL_WRITE's hold on read-only shared mappings' mprotect; "
            "shared mappings as mmap's"),
    # memory
    Syscall("brk", mm.sys_brk, FULL, "the break stays where growth would pass the memory "
            "allowance an invocation's processes share (as mmap's)"),
    Syscall("mmap", mm.sys_mmap, PARTIAL,
            "a writable shared mapping of a tmpfs file reaches the file at msync and "
            "munmap (read and write of the file meanwhile do not see it); of a /tmp "
            "shared by a process tree (sharedtmp.py), the host file's pages, every "
            "process's mappings and read/write seeing each other at once; a file of the "
            "image or a mounted archive shows its pages copy-on-write, others are copied; "
            "CPython's arenas and frame-stack chunks come from the vDSO's free lists, "
            "without this syscall; once an invocation has children, ENOMEM (told on "
            "stderr) where the mapping does not fit beside the memory its processes hold "
            "(touched, not mapped: a forked child's beyond what it held at the fork); "
            "memory touched past it kills the process holding the most (allowance.py)"),
    Syscall("munmap", mm.sys_munmap, FULL),
    Syscall("mremap", mm.sys_mremap, PARTIAL,
            "no MREMAP_FIXED; a file mapping that grows shows the file's next bytes; "
            "growth within the memory allowance, as mmap's"),
    Syscall("mprotect", mm.sys_mprotect, PARTIAL, "checked, not enforced: RAM is mapped RWX"),
    Syscall("madvise", mm.sys_madvise, PARTIAL,
            "DONTNEED: file mappings read the file again (a shared one's stores written "
            "back first), anonymous memory zero; REMOVE zeroes the range; others ignored"),
    Syscall("msync", mm.sys_msync, FULL, "writes shared tmpfs mappings back to their files"),
    Syscall("mlock", mm.sys_mlock, FULL, "guest memory is never swapped by the guest"),
    Syscall("munlock", mm.sys_mlock, FULL),
    # time
    Syscall("clock_gettime", tm.sys_clock_gettime, FULL,
            "a thread's CPU clock counts its turns on the vCPU; the vDSO serves every clock "
            "but the CPU clocks by id, the CPU clocks from their first read (clock.py)"),
    Syscall("clock_getres", tm.sys_clock_getres, FULL),
    Syscall("clock_settime", tm.sys_clock_settime, FULL, "EPERM: the guest may not set them"),
    Syscall("settimeofday", tm.sys_settimeofday, FULL, "EPERM, as clock_settime"),
    Syscall("gettimeofday", tm.sys_gettimeofday, FULL),
    Syscall("time", tm.sys_time, FULL),
    Syscall("nanosleep", tm.sys_nanosleep, FULL, "other threads run meanwhile"),
    Syscall("clock_nanosleep", tm.sys_clock_nanosleep, PARTIAL,
            "TIMER_ABSTIME too; CPU-time clocks sleep in wall time"),
    Syscall("times", tm.sys_times, PARTIAL,
            "the monitor's user and system time, the waited-for children's monitors'"),
    Syscall("getrusage", tm.sys_getrusage, PARTIAL,
            "SELF: the monitor's CPU time; THREAD: the thread's turns on the vCPU, as user "
            "time; CHILDREN: the waited-for children's monitors' CPU time and peak RSS"),
    # identity and system information
    Syscall("getpid", ident.sys_getpid, FULL,
            "answered in the guest's syscall entry, with no exit (Vm.answer_getpid)"),
    Syscall("getppid", ident.sys_getppid, FULL,
            "a child's parent (1 once it ended: an orphan's); 0 for the first process"),
    Syscall("gettid", th.sys_gettid, FULL),
    Syscall("getuid", ident.sys_getuid, FULL),
    Syscall("geteuid", ident.sys_getuid, FULL),
    Syscall("getgid", ident.sys_getgid, FULL),
    Syscall("getegid", ident.sys_getgid, FULL),
    Syscall("getresuid", ident.sys_getresuid, FULL),
    Syscall("getresgid", ident.sys_getresgid, FULL),
    Syscall("setuid", ident.sys_setuid, FULL, "not root: only to its own uid, else EPERM"),
    Syscall("setgid", ident.sys_setgid, FULL, "not root: only to its own gid, else EPERM"),
    Syscall("setreuid", ident.sys_setreuid, FULL, "not root: -1 or its own uid, else EPERM"),
    Syscall("setregid", ident.sys_setregid, FULL, "not root: -1 or its own gid, else EPERM"),
    Syscall("setresuid", ident.sys_setresuid, FULL, "not root: -1 or its own uid, else EPERM"),
    Syscall("setresgid", ident.sys_setresgid, FULL, "not root: -1 or its own gid, else EPERM"),
    Syscall("getgroups", ident.sys_getgroups, FULL),
    Syscall("setgroups", _errno(errno.EPERM), REFUSED,
            "EPERM: it takes CAP_SETGID (subprocess's extra_groups)"),
    Syscall("getpriority", ident.sys_getpriority, FULL,
            "a thread by tid (PRIO_PROCESS), the guest's process's threads (group, user)"),
    Syscall("setpriority", ident.sys_setpriority, PARTIAL,
            "per thread as on Linux; the nice value is kept, never applied (one vCPU); "
            "lowering it is EACCES"),
    Syscall("uname", ident.sys_uname, FULL),
    Syscall("sethostname", ident.sys_sethostname, REFUSED, "EPERM: the guest is not root"),
    Syscall("chroot", _errno(errno.EPERM), REFUSED, "EPERM: the guest is not root"),
    Syscall("setdomainname", ident.sys_setdomainname, REFUSED, "EPERM: the guest is not root"),
    Syscall("sysinfo", ident.sys_sysinfo, PARTIAL, "memory figures are the VM's"),
    Syscall("prlimit64", ident.sys_prlimit64, PARTIAL,
            "limits are kept, lowered, not raised past the hard limit; RLIMIT_NOFILE (EMFILE) "
            "and RLIMIT_FSIZE (writes and truncates of regular files: short, EFBIG and "
            "SIGXFSZ) are enforced; RLIMIT_STACK soft 2 MiB (thread stacks); another process "
            "of the tree's are asked of its monitor (ESRCH for any other pid)"),
    Syscall("getrlimit", ident.sys_getrlimit, FULL),
    Syscall("sched_getaffinity", ident.sys_sched_getaffinity, FULL, "one vCPU"),
    Syscall("sched_setaffinity", ident.sys_sched_setaffinity, FULL,
            "a mask holding CPU 0, the one vCPU; else EINVAL"),
    Syscall("sched_rr_get_interval", ident.sys_sched_rr_get_interval, FULL,
            "the scheduler's 10 ms time slice"),
    Syscall("sched_yield", ident.sys_sched_yield, FULL, "other runnable threads go first"),
    Syscall("sched_getscheduler", ident.sys_sched_getscheduler, FULL),
    Syscall("sched_getparam", ident.sys_sched_getparam, FULL),
    Syscall("sched_setscheduler", ident.sys_sched_setscheduler, PARTIAL,
            "SCHED_OTHER at priority 0 only: real-time policies EPERM (not root), "
            "SCHED_BATCH/IDLE EPERM too (one vCPU: not kept)"),
    Syscall("sched_setparam", ident.sys_sched_setparam, FULL, "priority 0 (SCHED_OTHER's)"),
    Syscall("sched_get_priority_max", ident.sys_sched_get_priority_max, FULL),
    Syscall("sched_get_priority_min", ident.sys_sched_get_priority_min, FULL),
    Syscall("getcpu", ident.sys_getcpu, FULL),
    Syscall("getrandom", rnd.sys_getrandom, FULL, "host entropy, live in every clone"),
    # signals: actions per process, mask and altstack per thread (libos/signals.py),
    # delivered with a Linux rt_sigframe at syscall exits and on timer kicks
    # (libos/sigdelivery.py)
    Syscall("rt_sigaction", sig.sys_rt_sigaction, FULL),
    Syscall("rt_sigprocmask", sig.sys_rt_sigprocmask, FULL, "per thread, inherited by clone"),
    Syscall("rt_sigreturn", sig.sys_rt_sigreturn, FULL, "x87/SSE/AVX state restored"),
    Syscall("rt_sigpending", sig.sys_rt_sigpending, FULL),
    Syscall("rt_sigsuspend", sig.sys_rt_sigsuspend, FULL, "other threads run meanwhile"),
    Syscall("signalfd", sig.sys_signalfd, FULL),
    Syscall("signalfd4", sig.sys_signalfd4, PARTIAL,
            "readable for the process's pending signals of its mask, in poll, select and epoll; "
            "not passed to a program a child execs (EBADF there)"),
    Syscall("rt_sigtimedwait", sig.sys_rt_sigtimedwait, FULL,
            "other threads run meanwhile, the set unblocked (a signal for the process goes "
            "to the waiter)"),
    Syscall("pause", sig.sys_pause, FULL,
            "other threads run meanwhile; a wait no timer, child or thread can end is a "
            "deadlock (the invocation fails at once)"),
    Syscall("sigaltstack", sig.sys_sigaltstack, FULL),
    Syscall("kill", sig.sys_kill, PARTIAL,
            "to any process of the invocation's tree (pid, 0, -1, -pgid; sig 0 probes; "
            "nothing else exists: ESRCH, never EPERM), routed between their monitors: the "
            "target's own action runs; a child's SIGKILL ends its VM at once; a default stop "
            "signal does nothing (no VM is stopped)"),
    Syscall("pidfd_send_signal", sig.sys_pidfd_send_signal, PARTIAL,
            "as kill, to a pidfd or a /proc/<pid> directory; no siginfo, no flags"),
    Syscall("tgkill", sig.sys_tgkill, PARTIAL,
            "to another process of the tree too; a tid that process lacks drops the signal "
            "there (no ESRCH)"),
    Syscall("tkill", sig.sys_tkill, PARTIAL,
            "its own threads and other processes' main threads; other tids are ESRCH"),
    Syscall("setitimer", timer.sys_setitimer, PARTIAL,
            "VIRTUAL and PROF both count the vCPU thread's CPU time (guest and monitor); "
            "periods under 1 ms fire at most every 1 ms; a socket wait notices within 0.1 s"),
    Syscall("getitimer", timer.sys_getitimer, FULL),
    Syscall("alarm", timer.sys_alarm, FULL),
    # sockets: in the guest (libos/guestnet.py); TCP to anything else proxied under the policy
    Syscall("socket", net.sys_socket, PARTIAL,
            "AF_INET/AF_INET6 stream and datagram, AF_UNIX stream, dgram, seqpacket; "
            "AF_NETLINK NETLINK_ROUTE (dumps of the loopback's link and addresses); "
            "raw sockets EPERM, other families EAFNOSUPPORT"),
    Syscall("bind", net.sys_bind, PARTIAL,
            "inet: loopback or the wildcard only (else EADDRNOTAVAIL), in the guest's own port "
            "space, ports below 1024 EACCES, port 0 ephemeral (32768-60999); AF_UNIX: a path "
            "in the tmpfs or an abstract name; in a process tree, a TCP port another process "
            "listens on is EADDRINUSE"),
    Syscall("listen", net.sys_listen, PARTIAL,
            "guest connections only: nothing outside the VM can connect in (it has no network); "
            "in a process tree the TCP port is the tree's (any process connects); a listener "
            "several processes hold (fork, execve) has one accept queue for all of them "
            "(acceptqueue.py: each connection accepted once), its backlog bounded by the "
            "host's socket buffer (a few hundred), not the one given; no SO_REUSEPORT "
            "listeners in several processes (the second listen is EADDRINUSE)"),
    Syscall("accept", net.sys_accept, FULL),
    Syscall("accept4", net.sys_accept4, FULL),
    Syscall("connect", net.sys_connect, PARTIAL,
            "to a guest listener: in the monitor (a non-blocking inet connect is EINPROGRESS, "
            "made at once; one to a full backlog EAGAIN), to another process's of the tree "
            "(AF_UNIX or loopback TCP) over a host socketpair; any other stream connect is proxied "
            "to the host where the policy allows, else EACCES (the egress makes the connection "
            "and waits for it, in a jailed clone the broker: so it returns 0, non-blocking "
            "too); datagram: sets the peer"),
    Syscall("sendto", net.sys_sendto, PARTIAL,
            "datagrams reach guest sockets only (to a loopback port none holds: dropped, as "
            "UDP); a stream socket ignores the address"),
    Syscall("recvfrom", net.sys_recvfrom, FULL, "a datagram's source address; none for a "
            "stream socket"),
    Syscall("sendmsg", net.sys_sendmsg, PARTIAL,
            "control messages: SCM_RIGHTS on AF_UNIX, IPV6_HOPLIMIT and IPV6_TCLASS on IPv6 "
            "datagrams (others EINVAL; no SCM_CREDENTIALS); none reach a proxied socket; "
            "over a connection to another process of the tree, SCM_RIGHTS passes pipes, "
            "socketpairs, eventfds, timerfds and AF_UNIX sockets as host fds (others EINVAL)"),
    Syscall("recvmsg", net.sys_recvmsg, PARTIAL,
            "SCM_RIGHTS, IPV6_HOPLIMIT, IPV6_TCLASS, cut as Linux cuts them (MSG_CTRUNC); "
            "MSG_WAITALL only on stream reads of proxied sockets"),
    Syscall("shutdown", net.sys_shutdown, FULL),
    Syscall("getsockname", net.sys_getsockname, FULL),
    Syscall("getpeername", net.sys_getpeername, FULL),
    Syscall("setsockopt", net.sys_setsockopt, PARTIAL,
            "common socket, TCP and IP options; in the guest they are kept (SO_REUSEADDR and "
            "SO_REUSEPORT apply to bind, SO_RCVBUF to datagrams), not acted on; proxied: the "
            "host's"),
    Syscall("getsockopt", net.sys_getsockopt, PARTIAL, "the options setsockopt takes, and "
            "SO_TYPE, SO_DOMAIN, SO_PROTOCOL, SO_ERROR, SO_ACCEPTCONN, SO_PEERCRED"),
    Syscall("socketpair", net.sys_socketpair, PARTIAL,
            "AF_UNIX stream, dgram, seqpacket (as dgram) within the guest; no fd passing"),
    # pipes, eventfds and readiness: in the monitor, over every kind of file
    Syscall("pipe", ipc.sys_pipe, FULL),
    Syscall("pipe2", ipc.sys_pipe2, PARTIAL, "no O_DIRECT (packet mode)"),
    Syscall("splice", ipc.sys_splice, PARTIAL,
            "copies; a pipe or socket is read into a regular file or an in-monitor pipe only "
            "(else EINVAL); SPLICE_F_NONBLOCK is honoured, the other flags are hints"),
    Syscall("eventfd", ipc.sys_eventfd, FULL, "shared with a fork or a child program: then a "
            "host eventfd"),
    Syscall("eventfd2", ipc.sys_eventfd2, FULL, "as eventfd"),
    Syscall("poll", pl.sys_poll, FULL, "regular files are always ready, as on Linux"),
    Syscall("ppoll", pl.sys_ppoll, PARTIAL, "the signal mask is ignored"),
    Syscall("select", pl.sys_select, FULL, "regular files are always ready, as on Linux"),
    Syscall("pselect6", pl.sys_pselect6, PARTIAL, "the signal mask is ignored"),
    Syscall("epoll_create", pl.sys_epoll_create, PARTIAL, "as epoll_create1"),
    Syscall("epoll_create1", pl.sys_epoll_create1, PARTIAL,
            "a set is not shared across fork: the forked child's copy is EINVAL to use "
            "(told on stderr), closing it works"),
    Syscall("epoll_ctl", pl.sys_epoll_ctl, PARTIAL,
            "level, edge (a proxied socket's edge: not ready to ready), EPOLLONESHOT; "
            "no nested epoll; EPOLLEXCLUSIVE ignored"),
    Syscall("epoll_wait", pl.sys_epoll_wait, FULL),
    Syscall("epoll_pwait", pl.sys_epoll_pwait, PARTIAL, "the signal mask is ignored"),
    Syscall("epoll_pwait2", pl.sys_epoll_pwait2, PARTIAL, "the signal mask is ignored"),
    Syscall("timerfd_create", timer.sys_timerfd_create, PARTIAL,
            "REALTIME, MONOTONIC, BOOTTIME; one a fork or a child program inherits is a "
            "host timerfd both share (expirations not read before stay the parent's)"),
    Syscall("timerfd_settime", timer.sys_timerfd_settime, PARTIAL,
            "TFD_TIMER_CANCEL_ON_SET never cancels: the guest's wall clock is never set"),
    Syscall("timerfd_gettime", timer.sys_timerfd_gettime, FULL),
    # threads and processes
    Syscall("exit", th.sys_exit, FULL, "ends the thread; the last one ends the USF"),
    Syscall("exit_group", th.sys_exit_group, FULL),
    Syscall("arch_prctl", th.sys_arch_prctl, PARTIAL,
            "ARCH_SET_FS/ARCH_GET_FS only; EPERM for an FS base outside user space"),
    Syscall("set_tid_address", th.sys_set_tid_address, FULL),
    Syscall("set_robust_list", th.sys_set_robust_list, FULL),
    Syscall("futex", fx.sys_futex, PARTIAL,
            "WAIT(_BITSET), WAKE(_BITSET), (CMP_)REQUEUE, WAKE_OP, private or not; no PI ops"),
    Syscall("prctl", th.sys_prctl, PARTIAL,
            "PR_SET_NAME/PR_GET_NAME only: the thread's name, in /proc/self/task/<tid>/comm"),
    Syscall("rseq", _errno(errno.ENOSYS), REFUSED, "glibc runs without restartable sequences"),
    # Child processes (libos/children.py, forking.py): a vfork child runs in its parent's
    # VM until execve starts its program in a sibling VM; fork copies the running VM.
    Syscall("clone", th.sys_clone, PARTIAL,
            "threads (glibc's flags), M:1 on the vCPU, 512 per USF; CLONE_VM|CLONE_VFORK: "
            "a vfork child; no CLONE_VM: a fork; any other child process: EPERM, told on "
            "stderr"),
    Syscall("clone3", _errno(errno.ENOSYS), REFUSED, "glibc then uses clone"),
    Syscall("fork", proc.sys_fork, PARTIAL,
            "the child is a copy of the running VM in a monitor process of its own; 16 "
            "processes per invocation (EAGAIN, told on stderr)"),
    Syscall("vfork", proc.sys_vfork, PARTIAL,
            "the child runs in the parent's VM (the caller waits) until execve or exit, "
            "with its own fds, cwd and umask, and may only set up its program (EPERM else)"),
    Syscall("execve", proc.sys_execve, PARTIAL,
            "an ELF executable of the guest's files, or a #! script's interpreter (Linux's "
            "argument rules, 4 deep), starts in a sibling VM (same jail and socket policy, "
            "RAM as its parent's) with the caller's fds (pipes become host pipes); a vfork "
            "child's thread ends there; a process's own execve waits for the program and "
            "ends with its status, the program taking its pid and its parent's signals; "
            "the program and its PT_INTERP are read and checked first, so execve returns "
            "ENOEXEC, ENOENT, EACCES or ELIBBAD as Linux's; mapping it past that point "
            "fails only for want of memory, and the child then ends with SIGSEGV"),
    Syscall("execveat", proc.sys_execveat, PARTIAL, "AT_FDCWD and no flags; as execve"),
    Syscall("wait4", proc.sys_wait4, PARTIAL,
            "pid, -1, 0 or -pgid; WNOHANG; no stopped children; rusage: the child's "
            "monitor's CPU time and peak RSS"),
    Syscall("getpgrp", proc.sys_getpgrp, FULL),
    Syscall("getpgid", proc.sys_getpgid, FULL, "of the invocation's process tree; else ESRCH"),
    Syscall("getsid", proc.sys_getsid, FULL, "of the invocation's process tree; else ESRCH"),
    Syscall("setpgid", proc.sys_setpgid, PARTIAL,
            "the caller or its child, in its session; a child that has exec'd is not EACCES"),
    Syscall("setsid", proc.sys_setsid, FULL),
    Syscall("pidfd_open", proc.sys_pidfd_open, PARTIAL,
            "a process of the invocation's tree; readable once it ended (poll, epoll)"),
    Syscall("waitid", proc.sys_waitid, PARTIAL,
            "P_ALL, P_PID, P_PGID, P_PIDFD; WEXITED, WNOHANG, WNOWAIT; rusage as wait4's"),
]

TABLE: dict[int, Syscall] = {NR[e.name]: e for e in _ENTRIES}
HANDLERS: dict[int, Callable[..., object]] = {nr: e.handler for nr, e in TABLE.items()}
