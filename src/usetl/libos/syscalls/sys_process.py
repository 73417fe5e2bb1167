"""Child processes: vfork, fork and execve (libos/children.py, forking.py), wait4, waitid.

vfork, and clone with CLONE_VM|CLONE_VFORK (glibc's posix_spawn), make a
child that runs in its parent's VM until execve starts its program in a
VM of its own; fork, and clone without CLONE_VM, make a copy of the running
VM. An execve by a process itself runs the program in a sibling VM that
takes its pid and fds, and the process ends with the program's status.
Other clones of a process are refused with EPERM and one line on the
invocation's stderr naming the call, since "Operation not permitted" alone
does not say why.
"""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from .. import children, forking
from ..errors import SyscallError
from ..files import O_NONBLOCK
from ..proctree import PidFile
from .args import s32

if TYPE_CHECKING:
    from ..kernel import Kernel

NO_CHILDREN = ("usetl: {call} refused: a child process is made by fork, vfork or "
               "clone(CLONE_VM|CLONE_VFORK) only\n")
CLONE_VM, CLONE_VFORK, CSIGNAL = 0x100, 0x4000, 0xFF
P_ALL, P_PID, P_PGID, P_PIDFD = 0, 1, 2, 3
WNOHANG, WEXITED, WSTOPPED, WCONTINUED, WNOWAIT = 1, 4, 2, 8, 0x01000000
WALL_FLAGS = 0x40000000 | 0x80000000 | 0x20000000  # __WALL, __WCLONE, __WNOTHREAD
SIGCHLD = 17
SIGINFO = struct.Struct("<iii4xiIi")  # signo, errno, code, pid, uid, status
SIGINFO_SIZE = 128


def refuse_child_process(k: Kernel, call: str) -> int:
    """EPERM for a syscall that would copy this process, told on the guest's stderr."""
    children.tell(k.fds, NO_CHILDREN.format(call=call))
    raise SyscallError(errno.EPERM)


def clone_process(k: Kernel, flags: int, stack: int, parent_tid: int, child_tid: int) -> object:
    """clone without glibc's thread flags: a vfork child (CLONE_VM|CLONE_VFORK), a fork
    (no CLONE_VM: glibc's fork), or refused."""
    vfork = CLONE_VM | CLONE_VFORK
    if flags & vfork == vfork and not flags & ~(vfork | CSIGNAL):
        raise children.start_vfork_child(k, stack)
    if not flags & CLONE_VM and not stack:
        return forking.fork(k, flags, parent_tid, child_tid)
    return refuse_child_process(k, "clone")


def sys_fork(k: Kernel, *_: int) -> int:
    return forking.fork(k, SIGCHLD, 0, 0)


def sys_vfork(k: Kernel, *_: int) -> int:
    raise children.start_vfork_child(k, 0)


def _exec(k: Kernel, path_addr: int, argv_addr: int, envp_addr: int) -> object:
    path = k.mem.path(path_addr)
    children.executable(k, path)  # its errors before argv's, as Linux
    argv = children.read_strings(k, argv_addr)
    envp = children.read_strings(k, envp_addr)
    program, argv = children.resolve_program(k, path, argv)
    if k.sched.current.tid in k.children.pre_exec:
        children.exec_child(k, program, argv, envp)
        return 0
    return children.replace_program(k, program, argv, envp)


def sys_execve(k: Kernel, path: int, argv: int, envp: int, *_: int) -> object:
    return _exec(k, path, argv, envp)


def sys_execveat(k: Kernel, dirfd: int, path: int, argv: int, envp: int, flags: int,
                 *_: int) -> object:
    AT_FDCWD = -100
    if s32(dirfd) != AT_FDCWD or flags:
        raise SyscallError(errno.ENOSYS if flags else errno.EBADF)
    return _exec(k, path, argv, envp)


def sys_wait4(k: Kernel, pid: int, status_addr: int, options: int, rusage: int,
              *_: int) -> int:
    if options & ~(WNOHANG | WSTOPPED | WCONTINUED | WALL_FLAGS):
        raise SyscallError(errno.EINVAL)
    found = children.wait_child(k, s32(pid), options & WNOHANG)
    if found is None:
        return 0
    child, status, usage = found
    if status_addr:
        k.mem.put_u32(status_addr, status)
    if rusage:
        k.mem.write(rusage, usage().pack())
    return child


def sys_waitid(k: Kernel, idtype: int, ident: int, infop: int, options: int, rusage: int,
               *_: int) -> int:
    if options & ~(WNOHANG | WEXITED | WSTOPPED | WCONTINUED | WNOWAIT | WALL_FLAGS) \
            or not options & (WEXITED | WSTOPPED | WCONTINUED):
        raise SyscallError(errno.EINVAL)
    if idtype == P_ALL:
        pid = -1
    elif idtype == P_PGID and s32(ident) >= 0:
        pid = -s32(ident)  # 0: the caller's group
    elif idtype == P_PID and s32(ident) > 0:
        pid = s32(ident)
    elif idtype == P_PIDFD:
        pid = _pidfd_process(k, s32(ident))
    else:
        raise SyscallError(errno.EINVAL)
    if not options & WEXITED:
        raise SyscallError(errno.ECHILD)  # no child is ever stopped or continued
    found = children.wait_child(k, pid, options & (WNOHANG | WNOWAIT))
    info = bytearray(SIGINFO_SIZE)
    usage = children.Usage
    if found is not None:
        child, status, usage = found
        code, value = children.describe(status)
        SIGINFO.pack_into(info, 0, SIGCHLD, 0, code, child, k.identity.uid, value)
    if infop:
        k.mem.write(infop, bytes(info))
    if rusage:
        k.mem.write(rusage, usage().pack())
    return 0


def _pidfd_process(k: Kernel, fd: int) -> int:
    """The process a pidfd names (waitid's P_PIDFD): EBADF for any other file."""
    f = k.fds.get(fd)
    if not isinstance(f, PidFile):
        raise SyscallError(errno.EBADF)
    return f.pid


def sys_getpgrp(k: Kernel, *_: int) -> int:
    return children.process_group(k)


def sys_getpgid(k: Kernel, pid: int, *_: int) -> int:
    return children.find_process(k, s32(pid)).group


def sys_getsid(k: Kernel, pid: int, *_: int) -> int:
    return children.find_process(k, s32(pid)).session


def sys_setpgid(k: Kernel, pid: int, pgid: int, *_: int) -> int:
    if s32(pgid) < 0:
        raise SyscallError(errno.EINVAL)
    children.set_process_group(k, s32(pid), s32(pgid))
    return 0


def sys_setsid(k: Kernel, *_: int) -> int:
    return children.new_session(k)


def sys_pidfd_open(k: Kernel, pid: int, flags: int, *_: int) -> int:
    if flags & ~O_NONBLOCK or s32(pid) <= 0:
        raise SyscallError(errno.EINVAL)
    children.find_process(k, s32(pid))
    return k.fds.install(PidFile(k, s32(pid), flags & O_NONBLOCK), cloexec=True)
