"""Child programs: a vfork child runs in its parent's VM until execve, then in a sibling VM.

CPython's subprocess and glibc's posix_spawn make a child with vfork (or
clone(CLONE_VM|CLONE_VFORK)), set up its fds and cwd, and execve. Here the
child is a thread of the parent's VM until then (it shares memory, as
vfork does), with its own fd table, cwd, umask and signal actions, and may
only make the calls that set up a program (ALLOWED_BEFORE_EXEC); the calling
thread waits, as with vfork. At execve the monitor forks its own process: the copy builds
a new VM, loads the program from the guest's filesystems (a copy of the
parent's, taken then) and runs it to its exit, in the same jail and under
the same socket policy, with guest RAM the size of its parent's, charged to
the same cgroup; its writes to /tmp reach its parent when it exits
(tmpsync.py). The child's fds are the objects the vfork child held,
copied by the fork; what must stay connected to the parent becomes a host
fd first (hostpipe.py): in-monitor pipes and socketpairs are turned into
host ones in both tables, and the parent's captured stdout and stderr are
fed by a host pipe that a host thread drains (ConsoleDrain).

A process's own execve (the USF's, a forked child's, a shell's) starts its
program the same way, with the process's pid and fds, and the process waits
for it and ends with its status (replace_program); a #! script runs its
interpreter (resolve_program).

The sibling reports its wait status on a control socket and exits; the
parent sends it signals on the same socket, which its monitor delivers to
its guest (hear_parent: the child's own handlers run). wait4, waitid and
kill find children here; fork (forking.py) makes children of the same
kind. What a child's monitor used, as the host's wait4 measures it, is
billed to the invocation (Usage). Every child ends with its parent's
invocation (end_all), and with its parent's monitor process (PDEATHSIG); at
most MAX_PROCESSES live at once in an invocation's process tree, and each
takes one of its function's concurrency slots (ProcessTokens).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import re
import resource
import select
import signal
import socket
import struct
import termios
from dataclasses import dataclass
from typing import TYPE_CHECKING

from usetl.kvm.structs import kvm_regs
from usetl.vm import Stop, ThreadContext, Vm, VmError

from . import sigdelivery
from .childwatch import ConsoleDrain, Watcher
from .errors import LibosError, SyscallError
from .files import (
    O_NONBLOCK,
    DirFile,
    FdTable,
    ImageFile,
    NullFile,
    OpenFile,
    OutputFile,
    ProcOpenFile,
    TmpOpenFile,
)
from .fs import DEV_PROC, ImageNode, StaticLink, TmpFile, TmpFS
from .guestnet import GuestSocket
from .hostfs import HostNode
from .hostpipe import HostStreamFile
from .ipc import ChannelFile, EventFile, UnixSocketFile
from .loader import load_program
from .net import POLLIN, SocketFile, wait_ready
from .pty import PtyFile
from .sched import Block, ExitThread, WaitQueue
from .signals import SI_USER, SIG_DFL, ProcessSignals, SigInfo
from .syscalls.numbers import SYSCALL_NAMES
from .tmpsync import LENGTH, apply_changes, encode_changes, sizes, snapshot

if TYPE_CHECKING:
    from .kernel import Kernel

log = logging.getLogger(__name__)

# What CPython's _posixsubprocess and glibc's posix_spawn call between vfork and execve.
ALLOWED_BEFORE_EXEC = frozenset({
    "read", "write", "close", "close_range", "dup", "dup2", "dup3", "fcntl", "ioctl",
    "open", "openat", "getdents64", "fstat", "newfstatat", "lseek", "chdir", "fchdir",
    "umask", "setsid", "setpgid", "getpid", "getppid", "gettid", "getuid", "geteuid",
    "getgid", "getegid", "rt_sigprocmask", "rt_sigaction", "sigaltstack", "prlimit64",
    "getrlimit", "setrlimit", "sched_yield", "execve", "execveat", "exit", "exit_group",
})
BEFORE_EXEC = ("usetl: {call} in a child before execve refused: a vfork child only sets up "
               "the program it runs\n")
MAX_ARGS = 1 << 16
MAX_ARG_BYTES = 2 << 20  # Linux's ARG_MAX with the default 8 MiB stack limit
WNOHANG, WNOWAIT = 1, 0x01000000
STATUS = struct.Struct("<i")  # a sibling's report: its wait status
SIGNAL_NUMBER = struct.Struct("<i")  # what a parent sends a child: a signal for it
# Signals whose default action stops a process: a child's VM is never stopped.
STOPPING = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
MAX_INTERPRETERS = 4  # #! scripts run by #! scripts, at most (Linux's BINPRM_MAX_RECURSION)
SCRIPT_HEAD = 256  # the bytes of a #! line read (Linux's BINPRM_BUF_SIZE)
# A #! line: the interpreter, then its one optional argument (the rest of the line).
SHEBANG = re.compile(rb"[ \t]*([^ \t\0]*)[ \t]*([^\0]*?)[ \t]*(?:\0.*)?$", re.DOTALL)
RUSAGE_SIZE = 144
NOT_STARTED = 127 << 8  # the status of a child whose program could not be loaded
PR_SET_PDEATHSIG = 1
CLD_EXITED, CLD_KILLED = 1, 2  # si_code of SIGCHLD and waitid
DRAIN_WAIT = 2.0  # how long, after a child ended, its output may take to arrive
HOST_FD_LIMIT = 1 << 20
# Child processes alive at once in one invocation's process tree (its USF and every
# descendant), so that a fork bomb ends at it with EAGAIN and the host carries on.
MAX_PROCESSES = 16
AT_LIMIT = "usetl: {call} refused: the invocation is at its limit of child processes ({why})\n"
FUNCTION_FULL = "its function's concurrency limit: its invocations and their children fill it"
# What a sibling can use as the fork copied it; other files are not passed (EBADF there).
CROSSES = (HostStreamFile, NullFile, ImageFile, TmpOpenFile, DirFile, ProcOpenFile, SocketFile)


class ChildFdTable(FdTable):
    """A vfork child's fds: its parent's at the fork, whose files it shares until execve."""

    def __init__(self, parent: FdTable):
        super().__init__()
        self.files = dict(parent.files)
        self.cloexec = set(parent.cloexec)
        self.inherited = list(self.files.values())  # held, so their ids stay theirs

    def close(self, fd: int) -> None:
        f = self.files.pop(fd, None)
        if f is None:
            raise SyscallError(errno.EBADF)
        self.cloexec.discard(fd)
        if all(f is not g for g in self.inherited) and f not in self.files.values():
            f.close()


class PreExec:
    """A vfork child while it runs in its parent's VM, and the parent thread waiting for it."""

    def __init__(self, k: Kernel):
        self.parent_fds = k.fds
        self.fds = ChildFdTable(k.fds)
        self.cwd = k.ns.cwd
        self.umask = k.umask
        # Its own signal actions (CPython's child resets every handler to the default).
        self.signals = ProcessSignals(actions=dict(k.signals.actions))
        self.done = WaitQueue()  # the parent waits here until execve or exit


class ProcessSlots:
    """A function's concurrency as a host pipe holding one byte per invocation or child
    process that may still run: the platform's pool takes one for each invocation, and
    the monitors of its process trees one for each child (the pipe's ends come with each
    call), so children count toward the function's concurrency limit."""

    def __init__(self, read_fd: int, write_fd: int):
        self.read_fd, self.write_fd = read_fd, write_fd

    @classmethod
    def new(cls, count: int) -> ProcessSlots:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.write(write_fd, b"x" * count)
        return cls(read_fd, write_fd)

    @property
    def fds(self) -> tuple[int, int]:
        return self.read_fd, self.write_fd

    def take(self) -> bool:
        """One slot, if one is free."""
        try:
            return len(os.read(self.read_fd, 1)) == 1
        except BlockingIOError:
            return False

    def give(self) -> None:
        os.write(self.write_fd, b"x")

    def free(self) -> int:
        """How many are free now."""
        return int.from_bytes(fcntl.ioctl(self.read_fd, termios.FIONREAD, bytes(4)), "little")

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


class ProcessTokens:
    """One token per child process that may still start, in a host pipe: every monitor of
    an invocation's process tree inherits it (by fork), so the limit is the tree's; where
    the platform gave the invocation its function's slots, a child takes one of them too."""

    def __init__(self, count: int = MAX_PROCESSES):
        self.own = ProcessSlots.new(count)
        self.slots: ProcessSlots | None = None  # the function's, during an invocation

    @property
    def fds(self) -> tuple[int, ...]:
        return (*self.own.fds, *(self.slots.fds if self.slots is not None else ()))

    def take(self, k: Kernel, call: str) -> None:
        """One token for a new child, or EAGAIN (told on stderr) at the limit."""
        if not self.own.take():
            tell(k.fds, AT_LIMIT.format(call=call, why=f"{MAX_PROCESSES} at once"))
            raise SyscallError(errno.EAGAIN)
        if self.slots is not None and not self.slots.take():
            self.own.give()
            tell(k.fds, AT_LIMIT.format(call=call, why=FUNCTION_FULL))
            raise SyscallError(errno.EAGAIN)

    def give(self) -> None:
        self.own.give()
        if self.slots is not None:
            self.slots.give()


@dataclass
class Usage:
    """What a child used, as wait4 reports it: its monitor process's CPU time (the VM's and
    its syscalls') and peak memory, with its own waited-for children's (as Linux's)."""

    user_s: float = 0.0
    system_s: float = 0.0
    maxrss_kib: int = 0

    @classmethod
    def of(cls, rusage: resource.struct_rusage) -> Usage:
        return cls(rusage.ru_utime, rusage.ru_stime, rusage.ru_maxrss)

    def add(self, other: Usage) -> None:
        self.user_s += other.user_s
        self.system_s += other.system_s
        self.maxrss_kib = max(self.maxrss_kib, other.maxrss_kib)

    def pack(self) -> bytes:
        """A struct rusage: the two times and ru_maxrss, the rest zero."""
        times = b"".join(struct.pack("<qq", int(s), int(s * 1e6) % 1_000_000)
                         for s in (self.user_s, self.system_s))
        return times + struct.pack("<q", self.maxrss_kib) + bytes(RUSAGE_SIZE - 40)


class Child:
    """A child program in a sibling VM, or a forked copy of this VM, run by a forked
    monitor process."""

    def __init__(self, pid: int, host_pid: int, control: socket.socket,
                 drains: list[ConsoleDrain], tokens: ProcessTokens, tmp: TmpFS,
                 watcher: Watcher):
        self.watcher = watcher
        self.tmp = tmp  # the parent's tmpfs, where the child's writes to its copy go
        self.pid = pid
        self.host_pid = host_pid
        self.control = control
        self.drains = drains
        self.tokens = tokens
        self.killed_by: int | None = None
        self.sigchld_to: Kernel | None = None  # whom its end is still to be told
        self.usage = Usage()  # its monitor's, as the host measured it, once it ended

    def announce_exit(self, k: Kernel) -> None:
        """SIGCHLD to the parent when the child ends (as Linux: discarded unless handled),
        once the watcher sees its control socket readable, or when it is reaped first."""
        self.sigchld_to = k
        self.watcher.on_readable(self.control.fileno(),
                                 lambda: k.sched.host.post(self._sigchld, k.vm.wake_now))

    def _sigchld(self) -> None:
        if self.sigchld_to is not None:
            k, self.sigchld_to = self.sigchld_to, None
            info = SigInfo(signal.SIGCHLD, CLD_EXITED, self.pid, k.identity.uid)
            sigdelivery.send(k, signal.SIGCHLD, info, None)

    def finish(self) -> int:
        """The wait status, once the control socket is readable (a report or its end);
        a child that exited by itself brings its changes to /tmp (tmpsync.py)."""
        raw = _recv_exactly(self.control, STATUS.size)
        if len(raw) == STATUS.size and self.killed_by is None:
            self._take_changes()
        self.watcher.forget(self.control.fileno())
        self.control.close()
        self._sigchld()
        _, host_status, rusage = os.wait4(self.host_pid, 0)
        self.usage = Usage.of(rusage)
        self.tokens.give()
        for drain in self.drains:
            drain.flush(self.watcher, DRAIN_WAIT)
        if self.killed_by is not None:
            return self.killed_by
        if len(raw) == STATUS.size:
            return STATUS.unpack(raw)[0]
        if os.WIFSIGNALED(host_status):  # the monitor died without a report
            return os.WTERMSIG(host_status)
        return NOT_STARTED

    def _take_changes(self) -> None:
        length = _recv_exactly(self.control, LENGTH.size)
        if len(length) < LENGTH.size:
            return  # a child that never ran has none
        header = _recv_exactly(self.control, LENGTH.unpack(length)[0])
        data = _recv_exactly(self.control, sizes(header))
        apply_changes(self.tmp, header, memoryview(data))

    def signal(self, sig: int) -> None:
        """Send `sig` to the child's monitor, which delivers it to its guest (hear_parent)."""
        try:
            self.control.send(SIGNAL_NUMBER.pack(sig))
        except OSError:
            pass  # it has ended: its report is in the socket

    def kill(self, sig: int, quietly: bool = False) -> None:
        """End the child's VM (its monitor); `quietly`: its parent is not told (SIGCHLD)."""
        if quietly:
            self.sigchld_to = None
        if self.killed_by is None:
            self.killed_by = sig
            os.kill(self.host_pid, signal.SIGKILL)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    """n bytes, or fewer where the sender ended first."""
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = sock.recv(min(n - len(buf), 1 << 20))
        except ConnectionResetError:  # it ended with signals from us unread: its end too
            break
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


class Children:
    """A process's children: vfork children before execve, running ones, and ended ones.

    Host processes and sockets belong to this monitor process: none is
    part of the monitor state a template captures (an unpickled one is empty).
    """

    def __init__(self, tokens: ProcessTokens | None = None) -> None:
        self.pre_exec: dict[int, PreExec] = {}  # vfork child's tid -> its state
        self.running: dict[int, Child] = {}
        self.ended: dict[int, int] = {}  # pid -> wait status, until waited for
        self.ended_usage: dict[int, Usage] = {}  # pid -> its usage, until waited for
        self.waited = Usage()  # of the children waited for: getrusage(RUSAGE_CHILDREN)
        # CPU seconds of every child that ended since the last take_cpu(): billed to the
        # invocation, waited for or not.
        self.cpu_s = 0.0
        self.tokens = tokens  # made at the first child; a child's monitor inherits its own
        self.parent: socket.socket | None = None  # a child's: where its parent's signals come
        self.replaced_by: Child | None = None  # the program this process exec'd, running
        self.watcher: Watcher | None = None  # started with the first child

    def watch(self) -> Watcher:
        if self.watcher is None:
            self.watcher = Watcher()
        return self.watcher

    def process_tokens(self) -> ProcessTokens:
        if self.tokens is None:
            self.tokens = ProcessTokens()
        return self.tokens

    def inherited(self) -> Children:
        """What a forked copy of this process starts with: no children, the same limit.

        The parent's children's sockets are let go of without closing: their
        numbers are this process's to reuse.
        """
        for child in self.running.values():
            child.control.detach()
        return Children(self.tokens)

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def collect(self) -> None:
        """Move children whose monitors reported (or died) to ended."""
        if not self.running:
            return
        poller = select.poll()
        for child in self.running.values():
            poller.register(child.control.fileno(), POLLIN)
        ready = {fd for fd, _ in poller.poll(0)}
        for pid, child in list(self.running.items()):
            if child.control.fileno() in ready:
                del self.running[pid]
                self._ended(pid, child)

    def _ended(self, pid: int, child: Child) -> None:
        self.ended[pid] = child.finish()
        self.ended_usage[pid] = child.usage
        self.cpu_s += child.usage.user_s + child.usage.system_s

    def reap(self, pid: int) -> Usage:
        """Forget an ended child that was waited for: its usage."""
        del self.ended[pid]
        usage = self.ended_usage.pop(pid, Usage())
        self.waited.add(usage)
        return usage

    def take_cpu(self) -> float:
        """CPU seconds of the children that ended since the last take (billed to the
        invocation)."""
        cpu, self.cpu_s = self.cpu_s, 0.0
        return cpu

    def end_all(self, k: Kernel) -> None:
        """Kill every running child and forget the rest: the invocation is over. Memory
        shared with forked children is this process's own again."""
        k.mm.unshare()
        for child in self.running.values():
            child.kill(signal.SIGKILL, quietly=True)
        for pid, child in self.running.items():
            self._ended(pid, child)
        self.running.clear()
        self.ended.clear()
        self.ended_usage.clear()
        self.waited = Usage()


# -- vfork: the child thread ----------------------------------------------------------


def start_vfork_child(k: Kernel, stack: int) -> Block:
    """A thread that runs the child's code until execve or exit; the caller waits for it.

    `stack` is the child's stack pointer (0: the caller's, as vfork shares it).
    """
    parent = k.vm.save_context()
    regs = kvm_regs.from_buffer_copy(parent.regs)
    regs.rax = 0  # the child's vfork() returns 0
    child = k.sched.new_thread(ThreadContext(bytes(regs), stack or parent.user_rsp,
                                             parent.fs_base, parent.xsave))
    state = PreExec(k)
    k.children.pre_exec[child.tid] = state
    return Block((state.done,), retry=False)


def before_exec(k: Kernel, nr: int, handler):
    """The handler a vfork child's syscall runs: the call in the child's own fd table,
    cwd, umask and signal actions, or EPERM (told on stderr) for a call that is not
    setting up a program."""
    state = k.children.pre_exec[k.sched.current.tid]
    name = SYSCALL_NAMES.get(nr, f"syscall_{nr}")

    def pre_exec(kernel: Kernel, *args: int) -> object:
        if handler is None:
            raise SyscallError(errno.ENOSYS)
        if name not in ALLOWED_BEFORE_EXEC:
            tell(state.fds, BEFORE_EXEC.format(call=name))
            raise SyscallError(errno.EPERM)
        if name in ("exit", "exit_group"):
            end_vfork_child(kernel, exit_status(args[0]))
        saved = kernel.fds, kernel.ns.cwd, kernel.umask, kernel.signals
        kernel.fds, kernel.ns.cwd, kernel.umask, kernel.signals = \
            state.fds, state.cwd, state.umask, state.signals
        try:
            return handler(kernel, *args)
        finally:
            state.cwd, state.umask = kernel.ns.cwd, kernel.umask
            kernel.fds, kernel.ns.cwd, kernel.umask, kernel.signals = saved

    pre_exec.__name__ = getattr(handler, "__name__", f"sys_{name}")
    return pre_exec


def end_vfork_child(k: Kernel, status: int | None, pid: int | None = None) -> None:
    """The vfork child's thread ends (its program started, or it exited): its parent runs on.

    `status` is its wait status if it exited before execve (then its pid is a zombie).
    """
    tid = k.sched.current.tid
    state = k.children.pre_exec.pop(tid)
    if status is not None:
        k.children.ended[tid] = status
    for f in set(state.fds.files.values()):
        if all(f is not g for g in state.fds.inherited) \
                and f not in state.parent_fds.files.values():
            f.close()
    state.done.wake(k.sched, result=tid if pid is None else pid)
    raise ExitThread()


# -- execve: the sibling VM -----------------------------------------------------------


def read_strings(k: Kernel, addr: int) -> list[str]:
    """A NULL-terminated array of C strings in guest memory (argv, envp); E2BIG past ARG_MAX."""
    out: list[str] = []
    total = 0
    while addr:
        ptr = k.mem.u64(addr + 8 * len(out))
        if not ptr:
            return out
        if len(out) >= MAX_ARGS:
            raise SyscallError(errno.E2BIG)
        raw = k.mem.cstring(ptr, MAX_ARG_BYTES)
        total += len(raw) + 1
        if total > MAX_ARG_BYTES:
            raise SyscallError(errno.E2BIG)
        out.append(raw.decode("utf-8", "surrogateescape"))
    return out


def resolve_program(k: Kernel, path: str, argv: list[str]) -> tuple[str, list[str]]:
    """The ELF executable execve of `path` runs and its argv, or the errno execve gives.

    A `#!` script runs its interpreter as Linux does: the first line's first
    word is the interpreter, the rest of the line (one argument, if any) comes
    after it, then the script's path as given, then argv without argv[0]; an
    interpreter may be a script itself, MAX_INTERPRETERS deep (ELOOP past it).
    """
    for _ in range(MAX_INTERPRETERS + 1):
        canonical, head = executable(k, path)
        if head[:4] == b"\x7fELF":
            return canonical, argv
        if head[:2] != b"#!":
            raise SyscallError(errno.ENOEXEC)
        line, newline, _ = head[2:].partition(b"\n")
        found = SHEBANG.match(line)
        assert found is not None  # every line matches
        interpreter, argument = found.groups()
        if not interpreter or (not newline and len(head) == SCRIPT_HEAD
                               and found.end(1) == len(line)):
            raise SyscallError(errno.ENOEXEC)  # none, or cut off where Linux stops reading
        words = [os.fsdecode(interpreter)] + ([os.fsdecode(argument)] if argument else [])
        argv = [*words, path, *argv[1:]]
        path = words[0]
    raise SyscallError(errno.ELOOP)


def executable(k: Kernel, path: str) -> tuple[str, bytes]:
    """The canonical path of an executable file and its first SCRIPT_HEAD bytes."""
    r = k.ns.resolve(path)
    node = r.node
    if node is None:
        raise SyscallError(errno.ENOENT)
    if node.is_dir or not isinstance(node, (ImageNode, HostNode, TmpFile)) \
            or not node.mode & 0o111:
        raise SyscallError(errno.EACCES)
    if isinstance(node, TmpFile):
        return r.path, bytes(node.data[:SCRIPT_HEAD])
    return r.path, bytes(node.read_at(0, SCRIPT_HEAD))


def exec_child(k: Kernel, program: str, argv: list[str], envp: list[str]) -> None:
    """The vfork child's execve of `program` (resolve_program's): it starts in a sibling VM;
    this thread ends."""
    state = k.children.pre_exec[k.sched.current.tid]
    pid = k.sched.current.tid
    k.children.running[pid] = child = _start_program(k, state, pid, program, argv, envp)
    child.announce_exit(k)
    end_vfork_child(k, None)


def replace_program(k: Kernel, program: str, argv: list[str], envp: list[str]) -> Stop:
    """execve by a process itself (the USF, a forked child, a program): `program` runs in a
    sibling VM with this process's pid and fds, this VM waits for it (other threads do not
    run again) and then ends with its status, as if it had been replaced. Signals its
    parent sends meanwhile are the program's."""
    child = _start_program(k, PreExec(k), k.identity.pid, program, argv, envp)
    k.children.replaced_by = child
    try:
        wait_ready({child.control.fileno(): POLLIN}, None, lambda: k.vm.deadline_hit)
    except SyscallError:
        child.kill(signal.SIGKILL, quietly=True)  # time is up: EINTR, and the run times out
        raise
    finally:
        k.children.replaced_by = None
        status = child.finish()
        k.children.cpu_s += child.usage.user_s + child.usage.system_s
    if status & 0x7F:
        return sigdelivery.killed(k, status & 0x7F)
    return Stop("exit", (status >> 8) & 0xFF)


def _start_program(k: Kernel, state: PreExec, pid: int, program: str, argv: list[str],
                   envp: list[str]) -> Child:
    """A forked monitor that runs `program` in a VM of its own, as process `pid`, with the
    files of `state` (its fds that are not close-on-exec)."""
    tokens = k.children.process_tokens()
    tokens.take(k, "execve")
    fds, drains = _child_files(k, state)
    control, theirs = socket.socketpair()
    keep = {theirs.fileno(), *tokens.fds,
            *(fd for f in fds.values() if (fd := f.host_fd()) is not None)}
    try:
        host_pid = host_fork(k, "execve", (control, theirs))
    except SyscallError:
        tokens.give()
        for drain in drains:
            os.close(drain.write_fd)
        raise
    if host_pid == 0:
        control.close()
        _run_sibling(k, pid, program, argv, envp, fds, theirs, keep)
    theirs.close()
    held = {*state.parent_fds.files.values(), *state.fds.files.values()}
    for f in set(fds.values()) - held:
        f.close()  # the console pipes' write ends: the sibling has them
    return Child(pid, host_pid, control, drains, tokens, k.ns.tmp, k.children.watch())


def _child_files(k: Kernel, state: PreExec) -> tuple[dict[int, OpenFile], list[ConsoleDrain]]:
    """The files the program gets, by fd (as host fds where they must stay connected to
    this process), and the drains of the parent's captured output it writes to."""
    out: dict[int, OpenFile] = {}
    made: dict[int, OpenFile] = {}  # id of a file replaced -> its replacement
    drains: list[ConsoleDrain] = []
    for fd, f in sorted(state.fds.files.items()):
        if fd in state.fds.cloexec:
            continue
        if channel_end(f) is not None and id(f) not in made:
            to_host(k, f, (state.parent_fds, state.fds), made)
        if isinstance(f, EventFile) and id(f) not in made:
            eventfd_to_host(k, f, (state.parent_fds, state.fds), made)
        if isinstance(f, OutputFile) and id(f) not in made:
            drain = k.children.watch().drain(f)
            drains.append(drain)
            made[id(f)] = HostStreamFile.for_pipe_end(k, drain.write_fd, reads=False,
                                                      nonblocking=False)
        f = made.get(id(f), f)
        if isinstance(f, GuestSocket) and isinstance(f.conn, SocketFile):
            f = f.conn  # a host socket: the program reads and writes it
        if isinstance(f, CROSSES):
            out[fd] = f
    return out, drains


def channel_end(f: OpenFile) -> ChannelFile | None:
    """The in-monitor channel end f reads and writes: a pipe end, or the connection of a
    guest socket (a socketpair's, or one made to a guest listener)."""
    if isinstance(f, ChannelFile) and not isinstance(f, PtyFile):  # a pty stays this process's
        return f
    if isinstance(f, GuestSocket) and isinstance(f.conn, ChannelFile):
        return f.conn
    return None


def to_host(k: Kernel, f: OpenFile, tables: tuple[FdTable, ...],
            made: dict[int, OpenFile]) -> None:
    """Turn the pipe or socket connection f belongs to into a host one, in every table given.

    Every end (each file sharing its channels) becomes a file on its own
    host fd; bytes written and not yet read are carried over. Only those
    ends are replaced in the tables (`made` may hold other replacements the
    caller applies itself), and epoll sets watching them watch the new files.
    """
    end = channel_end(f)
    assert end is not None
    channels = [c for c in (end.rx, end.tx) if c is not None]
    ends = {id(g): (g, e) for t in tables for g in t.files.values()
            if (e := channel_end(g)) is not None and id(g) not in made
            and any(c is e.rx or c is e.tx for c in channels)}
    mine: dict[int, OpenFile] = {}
    if isinstance(end, UnixSocketFile):
        a, b = socket.socketpair(socket.AF_UNIX, end.sock_type)
        reader = {id(end.rx): a.detach(), id(end.tx): b.detach()}  # channel -> its reader
        writer = {id(end.rx): reader[id(end.tx)], id(end.tx): reader[id(end.rx)]}
    else:
        r, w = os.pipe()
        reader, writer = {id(channels[0]): r}, {id(channels[0]): w}
    for c in channels:
        pending = [bytes(c.data)] if c.data else [data for data, _ in c.messages]
        for data in pending:
            os.write(writer[id(c)], data)
    for g, e in ends.values():
        nonblocking = bool(g.flags & O_NONBLOCK)
        if isinstance(g, GuestSocket):  # still a socket to the guest (send, recv, options)
            g.conn = SocketFile(k, g.family, nonblocking,
                                shared=socket.socket(fileno=os.dup(reader[id(e.rx)])))
        elif isinstance(e, UnixSocketFile):
            mine[id(g)] = HostStreamFile.for_socket(k, os.dup(reader[id(e.rx)]), nonblocking)
        elif e.rx is not None:
            mine[id(g)] = HostStreamFile.for_pipe_end(k, os.dup(reader[id(e.rx)]), True,
                                                      nonblocking)
        else:
            mine[id(g)] = HostStreamFile.for_pipe_end(k, os.dup(writer[id(e.tx)]), False,
                                                      nonblocking)
    for fd in {*reader.values(), *writer.values()}:
        os.close(fd)
    for t in tables:
        for fd, g in list(t.files.items()):
            if id(g) in mine:
                t.files[fd] = mine[id(g)]
        for g in set(t.files.values()):
            g.retarget(mine)
    made.update(mine)
    for g, e in ends.values():
        if id(g) in mine:
            g.close()
        else:
            e.close()  # a socket kept its identity: only its old connection goes


def eventfd_to_host(k: Kernel, f: EventFile, tables: tuple[FdTable, ...],
                    made: dict[int, OpenFile]) -> None:
    """Turn the eventfd f into a host one, in every table given (and the epoll sets there
    watching it), so that the processes that hold it share its counter; threads waiting
    on it look again."""
    made[id(f)] = shared = HostStreamFile.for_eventfd(k, f.counter, f.semaphore,
                                                      bool(f.flags & O_NONBLOCK))
    for t in tables:
        for fd, g in list(t.files.items()):
            if g is f:
                t.files[fd] = shared
        for g in set(t.files.values()):
            g.retarget({id(f): shared})
    f.queue.wake(k.sched)


def host_fork(k: Kernel, call: str, sockets: tuple[socket.socket, ...]) -> int:
    """os.fork() of this monitor, or EAGAIN (told on stderr) where the host refuses (the
    jail's cgroup allows a function only so many tasks); `sockets` are closed then."""
    try:
        return os.fork()
    except OSError as e:
        for sock in sockets:
            sock.close()
        tell(k.fds, AT_LIMIT.format(call=call, why=f"the host said: {e.strerror}"))
        raise SyscallError(errno.EAGAIN) from None


def report_and_exit(control: socket.socket, status: int, changes: bytes) -> None:
    """A child's monitor process ends: its wait status and its changes to /tmp to the
    parent's monitor, then exit."""
    try:
        control.sendall(STATUS.pack(status) + changes)
    finally:
        os._exit(0)


def die_with_parent() -> None:
    """This monitor process ends with the one that forked it (and so with the invocation)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _run_sibling(k: Kernel, pid: int, program: str, argv: list[str], envp: list[str],
                 fds: dict[int, OpenFile], control: socket.socket, keep: set[int]) -> None:
    """In the forked monitor process: build the child's VM, run its program, report, exit."""
    status, changes = NOT_STARTED, b""
    try:
        die_with_parent()
        close_all_but(keep)
        before = snapshot(k.ns.tmp)
        status = _run_program(k, pid, program, argv, envp, fds, control)
        changes = encode_changes(k.ns.tmp, before)
    except BaseException as e:  # never back into the parent's code: this process only exits
        log.error("child %d (%s) could not run: %s", pid, program, e)
    report_and_exit(control, status, changes)


def close_all_but(keep: set[int]) -> None:
    """Close every inherited fd above stderr but `keep`: a child holds no other pipe's end."""
    low = 3
    for fd in sorted(fd for fd in keep if fd >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, HOST_FD_LIMIT)


def _run_program(k: Kernel, pid: int, program: str, argv: list[str], envp: list[str],
                 fds: dict[int, OpenFile], control: socket.socket) -> int:
    ns = k.ns
    for name in ("etl", "usetl"):
        ns.dev.entries.pop(name, None)  # the parent's agent and ETL regions are not the child's
    ns.proc.entries["self"].entries["exe"] = StaticLink(6, program, DEV_PROC)
    vm = Vm(k.vm.ram.size >> 20)
    child = type(k)(vm, ns, k.handlers, k.output_limit)
    child.identity.pid = pid
    child.identity.ppid = k.identity.ppid if pid == k.identity.pid else k.identity.pid
    child.children = Children(k.children.tokens)
    child.net = k.net
    child.umask = k.umask
    for fd, f in fds.items():
        if isinstance(f, (HostStreamFile, SocketFile)):
            f.kernel = child
        child.fds.files[fd] = f
    hear_parent(child, control)
    try:
        prog = load_program(child.mm, vm.ram.view, ns, program, argv, envp,
                            (child.identity.uid, child.identity.gid))
    except LibosError as e:
        tell(child.fds, f"usetl: cannot load {program}: {e}\n")
        return NOT_STARTED
    vm.enter_user(prog.entry, prog.stack_pointer)
    return run_to_exit(child, program)


def run_to_exit(child: Kernel, program: str) -> int:
    """Run a child's VM until its program exits: its wait status."""
    try:
        stop = child.vm.run(child)
    except VmError as e:
        tell(child.fds, f"usetl: child {program}: {e}\n")
        return signal.SIGSEGV
    finally:
        child.children.end_all(child)
    if stop.reason != "exit":
        return exit_status(0)  # a forked agent that finished its request
    return child.term_signal if child.term_signal is not None else exit_status(stop.status)


def tell(fds: FdTable, line: str) -> None:
    """A line on stderr (fd 2 of `fds`), wherever that goes; nothing if it cannot take it."""
    f = fds.files.get(2)
    if f is not None:
        try:
            f.write(memoryview(line.encode()))
        except (SyscallError, Block):
            pass


# -- wait4, waitid, kill ----------------------------------------------------------------


def wait_child(k: Kernel, pid: int, options: int) -> tuple[int, int, Usage] | None:
    """(pid, wait status, usage) of an ended child matching pid (-1, 0 or < -1: any); None
    with WNOHANG while matching children run; ECHILD if none match; else the thread waits."""
    children = k.children
    children.collect()
    matches = (lambda p: True) if pid <= 0 else (lambda p: p == pid)
    for p, status in children.ended.items():
        if matches(p):
            if options & WNOWAIT:
                return p, status, children.ended_usage.get(p, Usage())
            return p, status, children.reap(p)
    waiting = [c for p, c in children.running.items() if matches(p)]
    if not waiting:
        raise SyscallError(errno.ECHILD)
    if options & WNOHANG:
        return None
    fds = {c.control.fileno(): POLLIN for c in waiting}
    sched = k.sched
    if not sched.alone:
        raise sched.watch_host(fds, (), sched.deadline_after(None))
    wait_ready(fds, None, k.wait_interrupted)
    return wait_child(k, pid, options)


def signal_child(k: Kernel, pid: int, sig: int) -> bool:
    """kill() of a child: False if pid is not one. SIGKILL ends its VM (its monitor) at
    once; any other signal goes to its monitor, where its own action runs (hear_parent)."""
    children = k.children
    child = children.running.get(pid)
    if child is None:
        return pid in children.ended or pid in children.pre_exec
    if sig == signal.SIGKILL:
        child.kill(sig)
    elif sig:
        child.signal(sig)
    return True


def hear_parent(k: Kernel, control: socket.socket) -> None:
    """In a child's monitor: the signals its parent sends on the control socket reach the
    guest as on Linux (its handler runs, or its default action, which may end it), taken
    in on the vCPU's thread."""
    k.children.parent = control
    pending = bytearray()

    def got(data: bytes) -> None:
        pending.extend(data)
        while len(pending) >= SIGNAL_NUMBER.size:
            sig = SIGNAL_NUMBER.unpack_from(pending)[0]
            del pending[:SIGNAL_NUMBER.size]
            k.sched.host.post(lambda sig=sig: _from_parent(k, sig), k.vm.wake_now)

    k.children.watch().on_data(control.fileno(), got)


def _from_parent(k: Kernel, sig: int) -> None:
    replacement = k.children.replaced_by
    if replacement is not None:
        replacement.signal(sig)  # its program replaced it (execve): the program's
    elif 0 < sig <= 64 and not (sig in STOPPING and k.signals.action(sig).handler == SIG_DFL):
        info = SigInfo(sig, SI_USER, k.identity.ppid, k.identity.uid)
        sigdelivery.send(k, sig, info, None)


def exit_status(code: int) -> int:
    return (code & 0xFF) << 8


def describe(status: int) -> tuple[int, int]:
    """waitid's si_code and si_status for a wait status."""
    if status & 0x7F:
        return CLD_KILLED, status & 0x7F
    return CLD_EXITED, (status >> 8) & 0xFF
