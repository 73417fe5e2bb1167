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

Each child's monitor is joined to its parent's by a control socket, whose
typed messages (proctree.py) carry signals both ways, routed hop by hop
through the tree to any of its processes (route: the target's own handlers
run), and the child's report (its wait status) at its end, on which its
parent's guest gets SIGCHLD. wait4, waitid and kill find processes here;
fork (forking.py) makes children of the same kind. What a child's monitor
used, as the host's wait4 measures it, is billed to the invocation (Usage).
Every child ends with its parent's invocation (end_all), and with its
parent's monitor process (PDEATHSIG); a process that ends with children
still running reports its end and lingers, its monitor passing their
messages on until they end (linger: orphans run on, as on Linux, their
parent the tree's first process); at most MAX_PROCESSES live at once in
an invocation's process tree, and each takes one of its function's
concurrency slots (ProcessTokens); together they have the function's
memory (allowance.py).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import gc
import logging
import os
import re
import resource
import select
import signal
import socket
import stat
import struct
import termios
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from usetl.kvm.structs import kvm_regs
from usetl.vm import Stop, ThreadContext, Vm, VmError
from usetl.vm.layout import VDSO_ADDR

from . import fifo, limits, sharedtmp, shmtree, sigdelivery
from .allowance import Charge, MemoryAllowance
from .childwatch import ConsoleDrain, Watcher
from .clock import MONOTONIC
from .errors import LibosError, LoadError, SyscallError
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
from .guestnet import AF_UNIX, Address, GuestSocket, listener_name
from .hostfs import HostNode
from .hostpipe import HostStreamFile
from .ipc import F_SETPIPE_SZ, PIPE_CAPACITY, ChannelFile, EventFile, UnixSocketFile
from .loader import Program, load_program, read_program
from .net import WAIT_SLICE, SocketFile
from .proctree import (
    CAPACITY,
    ENDED,
    Connect,
    Exited,
    FifoEnd,
    FifoOpen,
    LimitsAnswer,
    LimitsAsk,
    MessageReader,
    Passed,
    PassedFd,
    Process,
    ProcessTable,
    Routed,
    ShmFile,
    ShmOpen,
    ShmUnlink,
    ShmUnlinked,
    Signal,
    TreeProtocolError,
    send_message,
)
from .sched import Block, ExitThread, WaitQueue
from .signals import (
    SA_NOCLDWAIT,
    SI_KERNEL,
    SI_TKILL,
    SI_USER,
    SIG_DFL,
    SIG_IGN,
    UNBLOCKABLE,
    ProcessSignals,
    SigAction,
    SigInfo,
)
from .syscalls.numbers import SYSCALL_NAMES
from .timerfd import HostTimerFile, TimerFile
from .tmpsync import LENGTH, apply_changes, encode_changes, given_files, snapshot

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
ALL_BLOCKABLE = ((1 << 64) - 1) & ~UNBLOCKABLE  # a vfork child's thread's mask (PreExec)
MAX_ARGS = 1 << 16
MAX_ARG_BYTES = 2 << 20  # Linux's ARG_MAX with the default 8 MiB stack limit
WNOHANG, WNOWAIT = 1, 0x01000000
# Signals whose default action stops a process: a child's VM is never stopped.
STOPPING = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
MAX_INTERPRETERS = 4  # #! scripts run by #! scripts, at most (Linux's BINPRM_MAX_RECURSION)
SCRIPT_HEAD = 256  # the bytes of a #! line read (Linux's BINPRM_BUF_SIZE)
# A #! line: the interpreter, then its one optional argument (the rest of the line).
SHEBANG = re.compile(rb"[ \t]*([^ \t\0]*)[ \t]*([^\0]*?)[ \t]*(?:\0.*)?$", re.DOTALL)
RUSAGE_SIZE = 144
NOT_STARTED = 127 << 8  # the status of a child whose monitor failed before it ran
PR_SET_PDEATHSIG = 1
CLD_EXITED, CLD_KILLED = 1, 2  # si_code of SIGCHLD and waitid
DRAIN_WAIT = 2.0  # how long, after a child ended, its output may take to arrive
# Child processes alive at once in one invocation's process tree (its USF and every
# descendant), so that a fork bomb ends at it with EAGAIN and the host carries on.
MAX_PROCESSES = 16
AT_LIMIT = "usetl: {call} refused: the invocation is at its limit of child processes ({why})\n"
FUNCTION_FULL = "its function's concurrency limit: its invocations and their children fill it"
# What a sibling can use as the fork copied it; other files are not passed (EBADF there).
CROSSES = (HostStreamFile, NullFile, ImageFile, TmpOpenFile, sharedtmp.SharedOpenFile, DirFile,
           ProcOpenFile)


class ChildFdTable(FdTable):
    """A vfork child's fds: its parent's at the fork, whose files it shares until execve."""

    def __init__(self, parent: FdTable):
        super().__init__()
        self.files = dict(parent.files)
        self.cloexec = set(parent.cloexec)
        self.limit = parent.limit
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
        # Its own mask, in force during its calls only: its thread blocks every signal
        # otherwise, since it is another process, and its parent's signals (sent to its
        # parent's process, running on its parent's stack) are not for it.
        self.mask = k.thread_signals.mask
        self.done = WaitQueue()  # the parent waits here until execve or exit
        # The parent's monotonic clock at execve, read before the fork (the sibling does not
        # map the parent's memory): the program's clock goes on from it.
        self.clock_ns = 0


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

    def wait(self) -> None:
        """Until a slot is free (one may be taken by another waiter by the time it returns)."""
        poller = select.poll()
        poller.register(self.read_fd, select.POLLIN)
        poller.poll()

    def free(self) -> int:
        """How many are free now."""
        return int.from_bytes(fcntl.ioctl(self.read_fd, termios.FIONREAD, bytes(4)), "little")

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


class ProcessTokens:
    """One token per child process that may still start, in a host pipe: every monitor of
    an invocation's process tree inherits it (by fork), so the limit is the tree's; where
    the platform gave the invocation its function's slots, a child takes one of them too.
    With the first child comes the tree's memory allowance (allowance.py), in which each
    child has a slot."""

    def __init__(self, count: int = MAX_PROCESSES):
        self.count = count
        # The pipe is made at the first child: a clone's tokens are made again after each
        # rollback, and most invocations start no child.
        self.own_slots: ProcessSlots | None = None
        self.slots: ProcessSlots | None = None  # the function's, during an invocation
        self.memory: MemoryAllowance | None = None

    @property
    def own(self) -> ProcessSlots:
        if self.own_slots is None:
            self.own_slots = ProcessSlots.new(self.count)
        return self.own_slots

    @property
    def fds(self) -> tuple[int, ...]:
        return (*self.own.fds, *(self.slots.fds if self.slots is not None else ()),
                *((self.memory.fd,) if self.memory is not None else ()))

    def take(self, k: Kernel, call: str) -> int:
        """One token for a new child, or EAGAIN (told on stderr) at the limit: its slot in
        the memory allowance."""
        if not self.own.take():
            tell(k.fds, AT_LIMIT.format(call=call, why=f"{MAX_PROCESSES} at once"))
            raise SyscallError(errno.EAGAIN)
        if self.slots is not None and not self.slots.take():
            self.own.give()
            tell(k.fds, AT_LIMIT.format(call=call, why=FUNCTION_FULL))
            raise SyscallError(errno.EAGAIN)
        if self.memory is None:  # the USF's first child: the USF's whole mapping is charged
            self.memory = MemoryAllowance(k.vm.ram.size, MAX_PROCESSES + 1)
            charge_to(k, self.memory, 0, False)
        return self.memory.claim()

    def give(self, memory_slot: int) -> None:
        if self.memory is not None:
            self.memory.release(memory_slot)
        self.own.give()
        if self.slots is not None:
            self.slots.give()

    def drop_memory(self) -> None:
        """The invocation is over: the next one's first child makes a new allowance."""
        if self.memory is not None:
            self.memory.close()
            self.memory = None


def charge_to(k: Kernel, allowance: MemoryAllowance, slot: int, forked: bool) -> None:
    """The memory k's guest RAM holds is charged to `slot` of the allowance from now on;
    a forked child's beyond what it held at the fork (what it shares with its parent)."""
    def measure() -> int:  # k.vm at each measurement: a fork makes a new one
        return k.vm.ram.backed_bytes() + k.mm.shared_bytes_held() + sharedtmp.held_bytes(k)

    if not forked:
        k.vm.ram.measure_from_here()

    k.mm.charge = Charge(allowance, slot, k.identity.pid, measure, measure() if forked else 0,
                         lambda line: tell(k.fds, line))
    k.mm.charge.settle()
    k.rearm_wake()  # its periodic measurement (check_memory)


def check_memory(k: Kernel) -> None:
    """The running process measures itself (allowance.Charge.check): where the tree holds
    more than the function's memory, the process holding the most is killed, as Linux's
    out-of-memory killer does in a memory cgroup."""
    assert k.mm.charge is not None
    victim = k.mm.charge.check()
    if victim is not None:
        route(k, Signal(victim, signal.SIGKILL, k.identity.pid, k.identity.uid, SI_KERNEL))


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
                 watcher: Watcher, memory_slot: int, files: dict[int, OpenFile], parent: int):
        self.watcher = watcher
        self.parent = parent  # its parent's pid (the FIFOs it makes are the parent's then)
        # The regular files of those it was given, by its fd: their offsets come back.
        self.given = {fd: g.file for fd, g in given_files(files).items()}
        self.memory_slot = memory_slot  # its charge in the invocation's memory allowance
        self.tmp = tmp  # the parent's tmpfs, where the child's writes to its copy go
        self.pid = pid
        self.host_pid = host_pid
        self.control = control
        self.drains = drains
        self.tokens = tokens
        self.killed_by: int | None = None
        self.report: Exited | None = None  # its last message, once it came
        self.gone = False  # its end was noticed (its report, or its socket's end)
        self.finished = False  # its parent is done with it (finish)
        self.usage: Usage | None = None  # its monitor's, as the host measured it, once reaped
        self.host_status = 0

    def listen(self, k: Kernel, ended: Callable[[], None]) -> None:
        """Take in what the child's monitor sends (listen): ended() on the vCPU's thread
        once it has gone (reported, or died; one that sent what is not a message is
        killed). A child that lingers (its orphans run on) is a ghost of its parent's
        until its monitor has gone too."""

        def gone(report: Exited | None) -> None:
            self.report = report
            if report is None and not self.finished:
                try:
                    os.kill(self.host_pid, signal.SIGKILL)  # so that finish() waits for no one
                except ProcessLookupError:
                    pass  # finish() has just reaped it
            self.gone = True
            k.sched.host.post(ended, k.vm.wake_now)

        def lingered() -> None:
            k.sched.host.post(lambda: k.children.ghost_gone(self), k.vm.wake_now)

        listen(k, self.control, gone, lingered)

    @property
    def lingers(self) -> bool:
        return self.report is not None and self.report.lingers and self.killed_by is None

    def finish(self) -> int:
        """The wait status, once it has gone (or been killed); a child that exited by
        itself brings its changes to /tmp (tmpsync.py)."""
        self.finished = True
        if not self.lingers:
            self.close_control()
        report = self.report
        if report is None:
            self.reap()  # its monitor died without a report (or was killed): it is gone
        elif report.changes and self.killed_by is None:
            self._take_changes(memoryview(report.changes))
        self.tokens.give(self.memory_slot)
        for drain in self.drains:  # its orphans may write there still: no end to wait for
            drain.flush(self.watcher, 0.0 if self.lingers else DRAIN_WAIT)
        if self.killed_by is not None:
            return self.killed_by
        if report is not None:
            return report.status
        if os.WIFSIGNALED(self.host_status):  # the monitor died without a report
            return os.WTERMSIG(self.host_status)
        return NOT_STARTED

    def close_control(self) -> None:
        self.watcher.forget(self.control.fileno())
        self.control.close()

    def reap(self, block: bool = True) -> Usage | None:
        """What its monitor process used, as the host's wait4 measures it once the process
        is gone (None if it is still going and not `block`). After its report a monitor
        only tears its VM down: its parent waits for that when the usage is wanted, not
        when the child is waited for."""
        if self.usage is None:
            pid, self.host_status, rusage = os.wait4(self.host_pid, 0 if block else os.WNOHANG)
            if pid:
                self.usage = Usage.of(rusage)
        return self.usage

    def used(self) -> Usage:
        """reap(), waiting for the monitor to be gone."""
        usage = self.reap()
        assert usage is not None
        return usage

    def _take_changes(self, changes: memoryview) -> None:
        (length,) = LENGTH.unpack_from(changes)
        header = bytes(changes[LENGTH.size:LENGTH.size + length])
        apply_changes(self.tmp, header, changes[LENGTH.size + length:], self.given, self.parent)

    def send(self, message: Routed, passed: Passed | None = None) -> None:
        """A signal or connection for the child or a process below it, to its monitor
        (hear_parent)."""
        send_message(self.control, message, passed)  # if it has ended, its report is on the way

    def kill(self, sig: int) -> None:
        """End the child's VM (its monitor) at once."""
        if self.killed_by is None and self.usage is None:  # a reaped one's pid is not its
            self.killed_by = sig
            os.kill(self.host_pid, signal.SIGKILL)


class Children:
    """A process's children: vfork children before execve, running ones, and ended ones.

    Host processes and sockets belong to this monitor process: none is
    part of the monitor state a template captures (an unpickled one is empty).
    """

    def __init__(self, tokens: ProcessTokens | None = None,
                 table: ProcessTable | None = None) -> None:
        self.pre_exec: dict[int, PreExec] = {}  # vfork child's tid -> its state
        self.running: dict[int, Child] = {}
        # Ended children whose monitors live on for their orphans (they pass on messages).
        self.ghosts: dict[int, Child] = {}
        self.ended: dict[int, int] = {}  # pid -> wait status, until waited for
        self.ended_children: dict[int, Child] = {}  # pid -> the child, until waited for
        self.exits = WaitQueue()  # threads in wait4 or waitid
        self.waited: list[Child] = []  # those waited for: getrusage(RUSAGE_CHILDREN)
        # CPU seconds of every child that ended and was reaped since the last take_cpu():
        # billed to the invocation, waited for or not; and those ended, not yet reaped.
        self.cpu_s = 0.0
        self.unbilled: list[Child] = []
        self.tokens = tokens  # made at the first child; a child's monitor inherits its own
        self.table = table  # the tree's processes (proctree.py), made with the first child
        self.parent: socket.socket | None = None  # a child's: where its parent's signals come
        self.replaced_by: Child | None = None  # the program this process exec'd, running
        self.watcher: Watcher | None = None  # started with the first child
        # Named pipes (fifo.py): opens of those this process made, not yet paired.
        self.fifo_waiting: dict[str, fifo.Waiting] = {}
        # What this process asked of others (a FIFO's open, prlimit), waiting for their
        # answers: the callable each answer goes to, by request number.
        self.answers: dict[int, Callable[..., None]] = {}
        self.requests = 0

    def request(self, answer: Callable[..., None]) -> int:
        """A number for a request to another process of the tree, answered by `answer`."""
        self.requests += 1
        self.answers[self.requests] = answer
        return self.requests

    def watch(self) -> Watcher:
        if self.watcher is None:
            self.watcher = Watcher()
        return self.watcher

    def process_tokens(self) -> ProcessTokens:
        if self.tokens is None:
            self.tokens = ProcessTokens()
        return self.tokens

    def process_table(self, k: Kernel) -> ProcessTable:
        """The tree's table, made at its first child: pids from then on come from it, and
        the AF_UNIX names this process bound and the TCP ports it listens on are the
        tree's from then on, and so is /tmp (sharedtmp.py)."""
        if self.table is None:
            self.table = ProcessTable(k.sched.next_tid, k.identity.pid)
            for name in k.guest_net.tree_names():
                self.table.claim_name(name, k.identity.pid)
        sharedtmp.share(k, (k.fds, *(state.fds for state in self.pre_exec.values())))
        return self.table

    def host_holders(self) -> list[ProcessSlots | ProcessTable | Watcher]:
        """What holds host fds for this process's children: its tokens' pipe, the tree's
        table, the watching thread (see let_go)."""
        slots = None if self.tokens is None else self.tokens.own_slots
        return [h for h in (slots, self.table, self.watcher) if h is not None]

    def host_fds(self) -> set[int]:
        """The host fds of the tree a child's monitor keeps: its tokens and table."""
        return {*self.process_tokens().fds, *(() if self.table is None else (self.table.fd,))}

    def inherited(self) -> Children:
        """What a forked copy of this process starts with: no children, the same limit.

        The parent's children's sockets are let go of without closing: their
        numbers are this process's to reuse.
        """
        for child in self.running.values():
            child.control.detach()
        return Children(self.tokens, self.table)

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def start(self, k: Kernel, child: Child) -> None:
        """A child now runs: its end is noticed (child_ended)."""
        self.running[child.pid] = child
        child.listen(k, lambda: self.child_ended(k, child))

    def child_ended(self, k: Kernel, child: Child) -> None:
        """A running child has gone: its status is kept for wait4 (announce)."""
        if self.running.get(child.pid) is not child:
            return  # ended with the invocation (end_all) first
        del self.running[child.pid]
        self.announce(k, child.pid, self._ended(child.pid, child))
        if child.lingers:
            self.ghosts[child.pid] = child

    def ghost_gone(self, child: Child) -> None:
        """A lingering child's monitor has gone (its last orphan ended, or it was killed):
        what its orphans wrote to the parent's output is in."""
        if self.ghosts.get(child.pid) is child:
            del self.ghosts[child.pid]
            child.close_control()
            for drain in child.drains:
                drain.flush(child.watcher)

    def lingers(self) -> bool:
        """Has this process children that run on when it ends (orphans)?"""
        return bool(self.running or self.ghosts)

    def announce(self, k: Kernel, pid: int, status: int) -> None:
        """An ended child (`status`, in ended) is a zombie until waited for, or waited for
        already where the parent ignores SIGCHLD or set SA_NOCLDWAIT (as Linux); SIGCHLD
        to the parent, and its waiting threads look again."""
        action = k.signals.action(signal.SIGCHLD)
        if action.handler == SIG_IGN or action.flags & SA_NOCLDWAIT:
            self.reap(pid)
        elif self.table is not None:
            found = self.table.find(pid)
            if found is not None and not found.ended:  # a lingering one said so itself
                found.ended = ENDED
                self.table.update(found)
        code, value = describe(status)
        sigdelivery.send(k, signal.SIGCHLD,
                         SigInfo(signal.SIGCHLD, code, pid, k.identity.uid, value), None)
        self.exits.wake(k.sched)

    def _ended(self, pid: int, child: Child) -> int:
        status = self.ended[pid] = child.finish()
        self.ended_children[pid] = child
        self.unbilled.append(child)
        self._bill(block=False)  # those gone by now: no zombie is left for long
        return status

    def _bill(self, block: bool) -> None:
        """Add the CPU of ended children whose monitors are gone (all, if `block`) to cpu_s."""
        going = []
        for child in self.unbilled:
            usage = child.reap(block)
            if usage is None:
                going.append(child)
            else:
                self.cpu_s += usage.user_s + usage.system_s
        self.unbilled = going

    def reap(self, pid: int) -> Callable[[], Usage]:
        """Forget an ended child that was waited for: what gives its usage."""
        del self.ended[pid]
        if self.table is not None:
            self.table.forget(pid)
        child = self.ended_children.pop(pid, None)
        if child is None:  # a vfork child that exited before execve: it used nothing
            return Usage
        self.waited.append(child)
        return child.used

    def waited_usage(self) -> Usage:
        """What the children waited for used (getrusage(RUSAGE_CHILDREN))."""
        total = Usage()
        for child in self.waited:
            total.add(child.used())
        return total

    def take_cpu(self) -> float:
        """CPU seconds of the children that ended since the last take (billed to the
        invocation)."""
        self._bill(block=True)
        cpu, self.cpu_s = self.cpu_s, 0.0
        return cpu

    def end_all(self, k: Kernel) -> None:
        """Kill every running child and forget the rest (its parent is not told): the
        invocation is over. Memory shared with forked children is this process's own
        again."""
        k.mm.unshare()
        for child in [*self.running.values(), *self.ghosts.values()]:
            child.kill(signal.SIGKILL)
        for child in list(self.ghosts.values()):
            self.ghost_gone(child)
        for pid, child in self.running.items():
            self._ended(pid, child)
        self._bill(block=True)  # a child's own children's CPU is in its monitor's, as Linux's
        sharedtmp.unshare(k)  # its children gone: /tmp is this process's tmpfs again
        self.running.clear()
        if self.table is not None:
            for pid in [*self.ended, *self.pre_exec]:
                self.table.forget(pid)
        self.ended.clear()
        self.ended_children.clear()
        self.waited = []
        k.mm.charge = None
        if self.tokens is not None:
            self.tokens.drop_memory()


# -- vfork: the child thread ----------------------------------------------------------


def start_vfork_child(k: Kernel, stack: int) -> Block:
    """A thread that runs the child's code until execve or exit; the caller waits for it.

    `stack` is the child's stack pointer (0: the caller's, as vfork shares it).
    """
    parent = k.vm.save_context()
    regs = kvm_regs.from_buffer_copy(parent.regs)
    regs.rax = 0  # the child's vfork() returns 0
    table = k.children.process_table(k)
    child = k.sched.new_thread(ThreadContext(bytes(regs), stack or parent.user_rsp,
                                             parent.fs_base, parent.xsave))
    try:
        enter_table(k, table, "vfork", child.tid)
    except SyscallError:
        k.sched.discard(child)
        raise
    state = PreExec(k)
    child.signals.mask = ALL_BLOCKABLE
    k.children.pre_exec[child.tid] = state
    return Block((state.done,), retry=False, interruptible=False)


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
        thread = kernel.thread_signals
        thread.mask = state.mask
        try:
            return handler(kernel, *args)
        finally:
            state.cwd, state.umask, state.mask = kernel.ns.cwd, kernel.umask, thread.mask
            thread.mask = ALL_BLOCKABLE
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
        k.children.announce(k, tid, status)
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
    if not stat.S_ISREG(node.mode) or not node.mode & 0o111 or \
            not isinstance(node, (ImageNode, HostNode, TmpFile, sharedtmp.SharedNode)):
        raise SyscallError(errno.EACCES)
    if isinstance(node, TmpFile):
        return r.path, bytes(node.data[:SCRIPT_HEAD])
    return r.path, bytes(node.read_at(0, SCRIPT_HEAD))


def exec_child(k: Kernel, program: str, argv: list[str], envp: list[str]) -> None:
    """The vfork child's execve of `program` (resolve_program's): it starts in a sibling VM;
    this thread ends."""
    state = k.children.pre_exec[k.sched.current.tid]
    pid = k.sched.current.tid
    k.children.start(k, _start_program(k, state, pid, program, argv, envp))
    end_vfork_child(k, None)


def replace_program(k: Kernel, program: str, argv: list[str], envp: list[str]) -> Stop:
    """execve by a process itself (the USF, a forked child, a program): `program` runs in a
    sibling VM with this process's pid and fds, this VM waits for it (other threads do not
    run again) and then ends with its status, as if it had been replaced. Signals its
    parent sends meanwhile are the program's."""
    child = _start_program(k, PreExec(k), k.identity.pid, program, argv, envp)
    # The old image's files are gone, as at Linux's execve: the program has its own of
    # those it inherits, and the reader of a close-on-exec pipe (subprocess's error pipe
    # after a fork) sees its end now, not when the program ends.
    close_files(k)
    k.children.replaced_by = child
    child.listen(k, lambda: None)
    host = k.sched.host
    try:
        while True:
            for finish in host.take():
                finish()  # signals to route, from its parent or the program's tree
            if child.gone:
                break
            if k.vm.deadline_hit:
                child.kill(signal.SIGKILL)
                raise SyscallError(errno.EINTR)  # time is up, and the run times out
            host.event.wait(WAIT_SLICE)
    finally:
        k.children.replaced_by = None
        status = child.finish()
        usage = child.used()
        k.children.cpu_s += usage.user_s + usage.system_s
    if status & 0x7F:
        return sigdelivery.killed(k, status & 0x7F)
    return Stop("exit", (status >> 8) & 0xFF)


def _start_program(k: Kernel, state: PreExec, pid: int, program: str, argv: list[str],
                   envp: list[str]) -> Child:
    """A forked monitor that runs `program` in a VM of its own, as process `pid`, with the
    files of `state` (its fds that are not close-on-exec). The program is read and checked
    first, so that execve returns what Linux's would where it cannot be loaded."""
    try:
        checked = read_program(k.ns, program)
    except LoadError as e:
        raise SyscallError(e.errno) from None
    tokens = k.children.process_tokens()
    k.children.process_table(k)
    memory_slot = tokens.take(k, "execve")
    fds, drains = _child_files(k, state, pid)
    control, theirs = socket.socketpair()
    keep = {theirs.fileno(), *k.children.host_fds(), *k.mm.page_fds(), *sharedtmp.host_fds(k),
            *(fd for f in fds.values() for fd in f.host_fds())}
    state.clock_ns = k.clock.ns(MONOTONIC)
    k.vm.inherit_on_fork(False)  # the program's VM is its own: the sibling never maps ours
    try:
        host_pid = host_fork(k, "execve", (control, theirs))
    except SyscallError:
        k.vm.inherit_on_fork(True)
        tokens.give(memory_slot)
        for drain in drains:
            os.close(drain.write_fd)
        raise
    if host_pid == 0:
        control.close()
        _run_sibling(k, pid, checked, argv, envp, fds, theirs, keep, memory_slot, state)
    k.vm.inherit_on_fork(True)
    theirs.close()
    held = {*state.parent_fds.files.values(), *state.fds.files.values()}
    for f in set(fds.values()) - held:
        f.close()  # the console pipes' write ends: the sibling has them
    return Child(pid, host_pid, control, drains, tokens, k.ns.tmp, k.children.watch(),
                 memory_slot, fds, k.identity.pid)


def _child_files(k: Kernel, state: PreExec, pid: int
                 ) -> tuple[dict[int, OpenFile], list[ConsoleDrain]]:
    """The files program `pid` gets, by fd (as host fds where they must stay connected to
    this process), and the drains of the parent's captured output it writes to."""
    out: dict[int, OpenFile] = {}
    made: dict[int, OpenFile] = {}  # id of a file replaced -> its replacement
    drains: list[ConsoleDrain] = []
    for fd, f in state.fds.files.items():
        if fd not in state.fds.cloexec and isinstance(f, GuestSocket) and f.is_listener():
            listener_to_host(k, f, (state.parent_fds, state.fds))
    for fd, f in sorted(state.fds.files.items()):
        if fd in state.fds.cloexec:
            continue
        if channel_end(f) is not None and id(f) not in made:
            to_host(k, f, (state.parent_fds, state.fds), made)
        if isinstance(f, EventFile) and id(f) not in made:
            eventfd_to_host(k, f, (state.parent_fds, state.fds), made)
        if isinstance(f, TimerFile) and id(f) not in made:
            timerfd_to_host(k, f, (state.parent_fds, state.fds), made)
        if isinstance(f, OutputFile) and id(f) not in made:
            drain = k.children.watch().drain(f)
            drains.append(drain)
            made[id(f)] = HostStreamFile.for_pipe_end(k, drain.write_fd, reads=False,
                                                      nonblocking=False)
        f = made.get(id(f), f)
        if isinstance(f, GuestSocket) and f.is_listener():
            f.hand_to(pid)  # its name goes with it
            out[fd] = f
        elif isinstance(f, CROSSES) or isinstance(f, GuestSocket) and \
                isinstance(f.conn, SocketFile):  # a socket on a host socket: still a socket
            out[fd] = f
    return out, drains


def listener_to_host(k: Kernel, f: GuestSocket, tables: tuple[FdTable, ...]) -> None:
    """Listener f is held by other processes from now on (a fork's copy, a program given
    it): its connections go to the tree's one accept queue (GuestSocket.share), those its
    backlog holds made host connections first, their clients' ends in `tables` too."""
    if f.accept_queue is not None:
        return
    assert f.backlog is not None
    waiting = FdTable()
    waiting.files = dict(enumerate(f.backlog))
    for s in f.backlog:
        if channel_end(s) is not None:
            to_host(k, s, (*tables, waiting), {})
    f.share()


def channel_end(f: OpenFile) -> ChannelFile | None:
    """The in-monitor channel end f reads and writes: a pipe end, or the connection of a
    guest socket (a socketpair's, or one made to a guest listener)."""
    if isinstance(f, ChannelFile):
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
        if channels[0].capacity != PIPE_CAPACITY:  # F_SETPIPE_SZ's, kept
            fcntl.fcntl(w, F_SETPIPE_SZ, channels[0].capacity)
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
    _replace(k, f, HostStreamFile.for_eventfd(k, f.counter, f.semaphore,
                                              bool(f.flags & O_NONBLOCK)), tables, made)


def timerfd_to_host(k: Kernel, f: TimerFile, tables: tuple[FdTable, ...],
                    made: dict[int, OpenFile]) -> None:
    """Turn the timerfd f into a host one, as eventfd_to_host does: the processes that hold
    it share its expirations."""
    _replace(k, f, HostTimerFile(k, f), tables, made)


def _replace(k: Kernel, f: EventFile | TimerFile, shared: OpenFile,
             tables: tuple[FdTable, ...], made: dict[int, OpenFile]) -> None:
    made[id(f)] = shared
    for t in tables:
        for fd, g in list(t.files.items()):
            if g is f:
                t.files[fd] = shared
        for g in set(t.files.values()):
            g.retarget({id(f): shared})
    f.queue.wake(k.sched)


def enter_table(k: Kernel, table: ProcessTable, call: str, pid: int) -> None:
    """`pid` is a new process of k's tree from now on, or EAGAIN (told on stderr) where the
    tree's table is full."""
    try:
        table.add(pid, k.identity.pid)
    except SyscallError:
        tell(k.fds, AT_LIMIT.format(call=call, why=f"its table holds {CAPACITY} "
                                    "processes, ended ones not waited for included"))
        raise


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


def report_and_exit(control: socket.socket, status: int, changes: bytes,
                    ran: Kernel | None) -> None:
    """A child's monitor process ends: its wait status and its changes to /tmp to the
    parent's monitor, then exit; once its orphans have ended, if the process (`ran`, if
    it ran) has any (linger)."""
    try:
        if ran is not None:
            sharedtmp.hand_fifos(ran)
        lingers = ran is not None and ran.children.lingers()
        if lingers:
            ran.children.process_table(ran).lingers(ran.identity.pid, True)
        send_message(control, Exited(status, changes, lingers))
        if lingers:
            linger(ran)
    finally:
        os._exit(0)


def linger(k: Kernel) -> None:
    """An ended process's children run on, as orphans do on Linux (getppid says the tree's
    first process, its init): its monitor lives on without running its VM, passing their
    messages on and reaping them as they end, until the last has."""
    k.signals.actions[signal.SIGCHLD] = SigAction(SIG_IGN)  # reaped at their end
    host = k.sched.host
    while k.children.lingers():
        for finish in host.take():
            finish()
        host.event.wait(WAIT_SLICE)
    k.children.process_table(k).lingers(k.identity.pid, False)


def parent_pid(k: Kernel) -> int:
    """getppid: the parent, or once it has ended the tree's first process (the USF, pid 1
    as a container's init), to which Linux reparents an orphan in a pid namespace."""
    table, ppid = k.children.table, k.identity.ppid
    if table is None or k.children.parent is None:
        return ppid
    found = table.find(ppid)
    return ppid if found is not None and not found.ended else table.root


def die_with_parent() -> None:
    """This monitor process ends with the one that forked it (and so with the invocation)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _run_sibling(k: Kernel, pid: int, program: Program, argv: list[str], envp: list[str],
                 fds: dict[int, OpenFile], control: socket.socket, keep: set[int],
                 memory_slot: int, state: PreExec) -> None:
    """In the forked monitor process: build the child's VM, run its program, report, exit."""
    status, changes, ran = NOT_STARTED, b"", None
    try:
        die_with_parent()
        close_all_but(keep)
        before, given = snapshot(k.ns.tmp), given_files(fds)
        status, ran = _run_program(k, pid, program, argv, envp, fds, control, memory_slot,
                                   state)
        changes = encode_changes(k.ns.tmp, before, given)
    except BaseException as e:  # never back into the parent's code: this process only exits
        log.error("child %d (%s) could not run: %s", pid, program.path, e)
    report_and_exit(control, status, changes, ran)


def close_all_but(keep: set[int]) -> None:
    """In a forked monitor: every inherited fd above stderr but `keep` is closed, so that a
    child holds no other pipe's end, and its number stays taken (by the read end of a
    pipe with no writer: it reads as at its end).

    The objects that owned those fds live on in this copy of the monitor's heap, and
    one finalized here (garbage the collector finds, or a reference this copy drops)
    closes its number: were the number free, that would close a file this process has
    opened since (a pipe's end: its output lost). The garbage of before the fork is
    never collected here (gc.freeze).
    """
    gc.freeze()
    placeholder, writer = os.pipe()
    os.close(writer)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep and fd != placeholder:
            try:
                os.dup2(placeholder, fd, inheritable=False)
            except OSError:
                continue  # the listing's own fd, gone once listed
    os.close(placeholder)


def _run_program(k: Kernel, pid: int, program: Program, argv: list[str], envp: list[str],
                 fds: dict[int, OpenFile], control: socket.socket, memory_slot: int,
                 state: PreExec) -> tuple[int, Kernel]:
    """The program's wait status, and the kernel that ran it."""
    ns = k.ns
    for name in ("etl", "usetl"):
        ns.dev.entries.pop(name, None)  # the parent's agent and ETL regions are not the child's
    ns.proc.entries["self"].entries["exe"] = StaticLink(6, program.path, DEV_PROC)
    vm = Vm(k.vm.ram.size >> 20)
    child = type(k)(vm, ns, k.handlers, k.output_limit)
    child.clock = k.clock.for_child(child, state.clock_ns)
    child.become_process(pid, k.identity.ppid if pid == k.identity.pid else k.identity.pid)
    child.children = Children(k.children.tokens, k.children.table)
    child.net = k.net
    child.umask = k.umask
    child.sched.current.nice = k.sched.current.nice  # kept across execve, as Linux's
    child.limits = dict(k.limits)  # kept across execve, as Linux's
    # The shared pages of files it has a copy of (its memfds kept, forked on with it).
    child.mm.paged = list(k.mm.paged)
    child.fds.limit = k.fds.limit
    # As Linux's execve: ignored signals stay ignored (caught ones are reset to the
    # default), and the thread's mask is kept.
    child.signals.actions = {sig: action for sig, action in state.signals.actions.items()
                             if action.handler == SIG_IGN}
    child.thread_signals.mask = state.mask
    for fd, f in fds.items():
        if isinstance(f, HostStreamFile):
            f.kernel = child
        elif isinstance(f, GuestSocket) and f.net is not child.guest_net:
            f.given_to(child.guest_net)  # once, though several fds name it
        child.fds.files[fd] = f
    hear_parent(child, control)
    assert child.children.tokens is not None and child.children.tokens.memory is not None
    charge_to(child, child.children.tokens.memory, memory_slot, False)
    try:
        prog = load_program(child.mm, vm.ram.view, program, argv, envp,
                            (child.identity.uid, child.identity.gid),
                            None if child.clock.vdso is None else VDSO_ADDR)
    except (LibosError, SyscallError) as e:
        # Past execve's point of no return, as Linux's binfmt_elf: the process gets SIGSEGV.
        tell(child.fds, f"usetl: cannot load {program.path}: {e}\n")
        return signal.SIGSEGV, child
    vm.enter_user(prog.entry, prog.stack_pointer)
    return run_to_exit(child, program.path), child


def run_to_exit(child: Kernel, program: str) -> int:
    """Run a child's VM until its program exits: its wait status."""
    try:
        stop = child.vm.run(child)
    except VmError as e:
        tell(child.fds, f"usetl: child {program}: {e}\n")
        return signal.SIGSEGV
    finally:
        if not child.children.lingers():  # else its orphans run on (report_and_exit)
            child.children.end_all(child)
        close_files(child)
    if stop.reason != "exit":
        return exit_status(0)  # a forked agent that finished its request
    return child.term_signal if child.term_signal is not None else exit_status(stop.status)


def close_files(k: Kernel) -> None:
    """A process's files close as it ends, before its parent hears of it (as Linux's
    exit_files comes before exit_notify): readers of its pipes see their end, and its
    output is all in, without waiting for its monitor process to be gone."""
    for fd in list(k.fds.files):
        try:
            k.fds.close(fd)
        except (SyscallError, OSError):
            pass


def host_holders(k: Kernel) -> list[HostStreamFile | ProcessSlots | ProcessTable | Watcher]:
    """The objects of k's state that hold host fds of their own: its files on host pipes,
    eventfds and timerfds, and its children's machinery. (A host socket closes itself once
    nothing refers to it.)"""
    files = {id(f): f for f in k.fds.files.values() if isinstance(f, HostStreamFile)}
    return [*files.values(), *k.children.host_holders()]


def let_go(k: Kernel, held: list[HostStreamFile | ProcessSlots | ProcessTable | Watcher]
           ) -> None:
    """After a rollback put the template's state back: close what `held` (host_holders()
    before it) holds that the state now does not, or each invocation that left a pipe open or
    started a child would leave host fds and a thread behind in the clone's monitor."""
    kept = {id(h) for h in host_holders(k)}
    for holder in held:
        if id(holder) not in kept:
            holder.close()


def tell(fds: FdTable, line: str) -> None:
    """A line on stderr (fd 2 of `fds`), wherever that goes; nothing if it cannot take it."""
    f = fds.files.get(2)
    if f is not None:
        try:
            f.write(memoryview(line.encode()))
        except (SyscallError, Block):
            pass


# -- wait4, waitid, kill ----------------------------------------------------------------


def wait_child(k: Kernel, pid: int, options: int
               ) -> tuple[int, int, Callable[[], Usage]] | None:
    """(pid, wait status, what gives its usage) of an ended child matching pid (> 0: that
    one, -1: any, 0: of the caller's group, < -1: of group -pid); None with WNOHANG while
    matching children run; ECHILD if none match; else the thread waits (signals interrupt
    it)."""
    children = k.children
    matches = _wait_matcher(k, pid)
    for p, status in children.ended.items():
        if matches(p):
            if options & WNOWAIT:
                child = children.ended_children.get(p)
                return p, status, Usage if child is None else child.used
            return p, status, children.reap(p)
    if not any(matches(p) for p in children.running):
        raise SyscallError(errno.ECHILD)
    if options & WNOHANG:
        return None
    raise Block((children.exits,))


def _wait_matcher(k: Kernel, pid: int) -> Callable[[int], bool]:
    if pid > 0:
        return lambda p: p == pid
    table = k.children.table
    if pid == -1 or table is None:
        return lambda p: True
    group = process_group(k) if pid == 0 else -pid

    def in_group(p: int) -> bool:
        found = table.find(p)
        return found is not None and found.group == group

    return in_group


def process_group(k: Kernel) -> int:
    """The calling process's group."""
    return find_process(k, 0).group


def find_process(k: Kernel, pid: int) -> Process:
    """Process `pid` of the tree (0: the caller, a vfork child before execve included), or
    ESRCH. A process that never had children leads its own group and session."""
    me = k.sched.current.tid if k.sched.current.tid in k.children.pre_exec else k.identity.pid
    pid = pid or me
    table = k.children.table
    found = table.find(pid) if table is not None else None
    if found is None and table is None and pid == me:
        return Process(me, k.identity.ppid, me, me, False)
    if found is None:
        raise SyscallError(errno.ESRCH)
    return found


def set_process_group(k: Kernel, pid: int, group: int) -> None:
    """setpgid: the caller or a child of it joins or makes group `group` (0: its pid) in
    its session, as Linux allows."""
    caller = find_process(k, 0)
    target = find_process(k, pid)
    if target.pid != caller.pid and target.parent != caller.pid:
        raise SyscallError(errno.ESRCH)
    group = group or target.pid
    if target.session == target.pid or target.session != caller.session:
        raise SyscallError(errno.EPERM)
    table = k.children.table
    if group != target.pid and (table is None or not any(
            p.group == group and p.session == target.session for p in table.all())):
        raise SyscallError(errno.EPERM)
    target.group = group
    _update(k, target)


def new_session(k: Kernel) -> int:
    """setsid: the caller leads a new session and group, unless it leads a group."""
    caller = find_process(k, 0)
    table = k.children.table
    if caller.group == caller.pid or table is None \
            or any(p.group == caller.pid for p in table.all()):
        raise SyscallError(errno.EPERM)
    caller.group = caller.session = caller.pid
    _update(k, caller)
    return caller.pid


def _update(k: Kernel, p: Process) -> None:
    if k.children.table is not None:
        k.children.table.update(p)


def send_signal(k: Kernel, pid: int, sig: int) -> None:
    """kill(pid, sig) in the invocation's process tree, as Linux: pid > 0 one process, 0
    the caller's group, -1 every other process, < -1 group -pid; ESRCH if none exists
    (one ended and not yet waited for does); sig 0 only checks. Every process of the tree
    has the guest's uid, so EPERM never applies; nothing outside the tree is visible."""
    me = k.identity.pid
    table = k.children.table
    if pid in k.children.running or table is None:  # no need to look
        found = [pid] if pid in k.children.running or pid in (0, me) else []
        alive = [me if pid == 0 else pid] if found else []
    else:
        if pid > 0:
            processes = [p for p in (table.find(pid),) if p is not None]
        else:
            group = process_group(k) if pid == 0 else -pid
            processes = [p for p in table.all()
                         if (p.pid != me if pid == -1 else p.group == group)]
        found = [p.pid for p in processes]
        alive = [p.pid for p in processes if not p.ended]
    if not found:
        raise SyscallError(errno.ESRCH)
    for to in alive if sig else ():
        route(k, Signal(to, sig, me, k.identity.uid, SI_USER))


def signal_thread(k: Kernel, pid: int, tid: int, sig: int) -> None:
    """tgkill(pid, tid, sig) of a thread of another process of the tree: ESRCH if that
    process does not exist or has ended; sig 0 only checks. A tid that process does not
    have drops the signal there (the caller is not told: it is another monitor's)."""
    table = k.children.table
    found = None if table is None else table.find(pid)
    if found is None or found.ended:
        raise SyscallError(errno.ESRCH)
    if sig:
        route(k, Signal(pid, sig, k.identity.pid, k.identity.uid, SI_TKILL, tid))


def route(k: Kernel, message: Routed, passed: Passed | None = None) -> None:
    """On the vCPU's thread: deliver a signal or connection (`passed`, its host socket)
    for this process, or pass it on along the control sockets, down toward its target if
    that is below this process, else up. A process replaced by its program (execve)
    passes what is for it or below it to that program. A child's SIGKILL ends its VM at
    once. A connection that reaches no one is closed: its client sees it end."""
    me = k.identity.pid
    children = k.children
    if message.to == me and children.replaced_by is None:
        _deliver(k, message, passed)
        return
    if message.to in children.running:
        hop: int | None = message.to
    else:
        hop = None if children.table is None else children.table.next_hop(me, message.to)
    child = None if hop is None else children.running.get(hop) or children.ghosts.get(hop)
    if children.replaced_by is not None and (message.to == me or hop is not None):
        children.replaced_by.send(message, passed)
    elif child is not None:
        if hop == message.to and isinstance(message, Signal) \
                and message.signo == signal.SIGKILL:
            child.kill(signal.SIGKILL)
        else:
            child.send(message, passed)
    elif hop is None and children.parent is not None:
        send_message(children.parent, message, passed)
    if passed is not None:
        passed.close()  # sent (the receiver has its own), or no one to take it


def _deliver(k: Kernel, message: Routed, passed: Passed | None) -> None:
    if isinstance(message, Connect):
        assert isinstance(passed, socket.socket)  # MessageReader gives each Connect its socket
        k.guest_net.accept_from_tree(message, SocketFile(k, AF_UNIX, False, shared=passed))
    elif isinstance(message, FifoOpen):
        fifo.serve(k, message, route)
    elif isinstance(message, FifoEnd):
        fifo.answered(k, message, passed if isinstance(passed, PassedFd) else None)
    elif isinstance(message, LimitsAsk):
        limits.serve(k, message, route)
    elif isinstance(message, LimitsAnswer):
        limits.answered(k, message)
    elif isinstance(message, ShmOpen):
        shmtree.serve(k, message, route)
    elif isinstance(message, ShmFile):
        shmtree.answered(k, message, passed if isinstance(passed, PassedFd) else None)
    elif isinstance(message, ShmUnlink):
        shmtree.unlink(k, message, route)
    elif isinstance(message, ShmUnlinked):
        shmtree.unlink_answered(k, message)
    else:
        _deliver_signal(k, message)


def host_fds_of(k: Kernel, files: list[OpenFile]) -> list[int]:
    """The host fds of files passed (SCM_RIGHTS) over a connection to another process of
    the tree: pipes, socketpairs, eventfds and timerfds become host ones here first, as for
    a child. A file that has none (a file of a /tmp not shared, an epoll set) cannot
    travel: EINVAL."""
    made: dict[int, OpenFile] = {}
    fds = []
    for f in files:
        if id(f) not in made:
            if channel_end(f) is not None:
                to_host(k, f, (k.fds,), made)
            elif isinstance(f, EventFile):
                eventfd_to_host(k, f, (k.fds,), made)
            elif isinstance(f, TimerFile):
                timerfd_to_host(k, f, (k.fds,), made)
        fd = made.get(id(f), f).host_fd()
        if fd is None:
            raise SyscallError(errno.EINVAL)
        fds.append(fd)
    return fds


def file_of_host_fd(k: Kernel, fd: int) -> OpenFile | None:
    """A host fd received (SCM_RIGHTS) from another process of the tree, as a file of this
    one: a pipe end, a socket, or a file of the tree's shared /tmp (sharedtmp.py); None
    (closed) for anything else."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode) and k.ns.shared_tmp is not None:
        return sharedtmp.received(k.ns.shared_tmp, fd)
    if stat.S_ISFIFO(mode):
        access = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        return HostStreamFile.for_pipe_end(k, fd, reads=access == os.O_RDONLY,
                                           nonblocking=False)
    if stat.S_ISSOCK(mode):
        sock = socket.socket(fileno=fd)
        if sock.family == socket.AF_UNIX:
            g = GuestSocket(k.guest_net, AF_UNIX, sock.type, 0, k.ns.inodes.next())
            g.conn = SocketFile(k, AF_UNIX, False, shared=sock)
            return g
        sock.detach()
    os.close(fd)
    return None


def connect_in_tree(k: Kernel, f: GuestSocket, holder: int, address: Address) -> None:
    """connect() of f to the listener another process of the tree holds at `address` (an
    AF_UNIX name, or a loopback TCP address): f's connection is one end of a host
    socketpair, the other goes to the holder's monitor (route), into its listener's
    backlog. ECONNREFUSED if the holder has ended."""
    table = k.children.table
    found = None if table is None else table.find(holder)
    if found is None or found.ended:
        raise SyscallError(errno.ECONNREFUSED)
    if isinstance(address, bytes):
        message = Connect(holder, k.guest_net.unix_key(address), k.identity.pid,
                          f.local or b"")
    else:
        connected, client = f.tree_address(address)
        message = Connect(holder, listener_name(f.protocol, address[1]), k.identity.pid,
                          connected=connected, client=client)
        address = connected
    mine, theirs = socket.socketpair(socket.AF_UNIX, f.sock_type)
    try:
        f.connected_in_tree(SocketFile(k, AF_UNIX, bool(f.flags & O_NONBLOCK), shared=mine),
                            address, holder)
    finally:
        route(k, message, theirs)


def _deliver_signal(k: Kernel, message: Signal) -> None:
    """A signal from another process of the tree: its action runs here as on Linux (a
    stop signal's default does nothing: a VM is never stopped)."""
    sig = message.signo
    if 0 < sig <= 64 and not (sig in STOPPING and k.signals.action(sig).handler == SIG_DFL):
        info = SigInfo(sig, message.code, message.sender, message.uid)
        thread = k.sched.threads.get(message.tid) if message.tid else None
        if message.tid and thread is None:
            return  # no such thread here (any more)
        sigdelivery.send(k, sig, info, thread.signals if thread is not None else None)


def listen(k: Kernel, control: socket.socket, ended: Callable[[Exited | None], None],
           lingered: Callable[[], None] = lambda: None) -> None:
    """Take in the messages another monitor of the tree sends on `control`: its signals
    and connections are routed on the vCPU's thread (route); ended(its report, or None)
    is called on the watcher's thread, once, at its report, its socket's end or what is
    not a message. After a report that lingers, its messages are taken in until its
    socket ends: then lingered()."""
    reader = MessageReader()
    report: Exited | None = None
    done = False

    def got(data: bytes, fds: list[int]) -> None:
        nonlocal done, report
        try:
            messages = reader.feed(data, fds)
        except TreeProtocolError as e:
            log.error("pid %d's monitor: %s", k.identity.pid, e)
            messages, data = [], b""
        came = None
        for m, passed in messages:
            if isinstance(m, Routed):
                k.sched.host.post(lambda m=m, p=passed: route(k, m, p), k.vm.wake_now)
            elif isinstance(m, Exited) and report is None:
                report = came = m
        if came is not None and came.lingers:
            ended(came)  # its messages go on coming
        if done or data and (report is None or report.lingers):
            return
        done = True
        reader.close()
        # Forgotten before ended(): the vCPU's thread may close the socket then, and its
        # number may name another child's by the time this thread would forget it.
        k.children.watch().forget(control.fileno())
        if report is None or not report.lingers:
            ended(report)
        else:
            lingered()

    k.children.watch().on_data(control, got)


def hear_parent(k: Kernel, control: socket.socket) -> None:
    """In a child's monitor: signals for it (or for processes below it) come from its
    parent on the control socket, and its own go up there (route)."""
    k.children.parent = control
    listen(k, control, lambda report: None)


def exit_status(code: int) -> int:
    return (code & 0xFF) << 8


def describe(status: int) -> tuple[int, int]:
    """waitid's si_code and si_status for a wait status."""
    if status & 0x7F:
        return CLD_KILLED, status & 0x7F
    return CLD_EXITED, (status >> 8) & 0xFF
