"""The per-VM OS state the monitor keeps and the syscall dispatcher.

One Kernel serves one USF: its memory map, namespace, fd table, captured
output and syscall statistics. The vm run loop calls handle_syscall() on
every SYSCALL exit; the handler in the table does the work.
"""

from __future__ import annotations

import errno
import logging
import ssl
import struct
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from usetl.etl.accounting import IoAccount
from usetl.kvm.structs import kvm_regs
from usetl.vm import Stop, Vm, VmError

from . import children, procfs, sigdelivery
from .clock import MONOTONIC, CpuClocks, GuestClock
from .devices import Blocked
from .errors import LibosError, MonitorError, SyscallError
from .files import FdTable, OutputFile
from .fs import GUEST_ID, Namespace
from .guestnet import GuestNet
from .mm import AddressSpace
from .net import SocketPolicy, hosts_file
from .sched import Block, ExitThread, Scheduler, WaitQueue
from .signals import ITIMER_REAL, ProcessSignals, ThreadSignals, timer_clock
from .syscalls.numbers import SYSCALL_NAMES
from .usermem import UserMemory

log = logging.getLogger(__name__)

Handler = Callable[..., object]  # handler(kernel, *six syscall arguments) -> result or Stop

MASK64 = (1 << 64) - 1
# kvm_regs from rax to r10: the syscall number and its six arguments (rdi, rsi, rdx, r10,
# r8, r9) are among them.
SYSCALL_REGS = struct.Struct("<11Q")
PAUSE = Stop("pause")
EXIT_THREAD = object()


@dataclass
class TraceRecord:
    name: str
    args: tuple[int, ...]
    result: int
    micros: float


@dataclass
class Identity:
    pid: int = 1
    ppid: int = 0  # the USF's parent is outside the guest; a child's is its parent's pid
    uid: int = GUEST_ID
    gid: int = GUEST_ID
    hostname: str = "usf"


@dataclass
class SyscallStats:
    count: int = 0
    seconds: float = 0.0
    by_name: Counter = field(default_factory=Counter)
    unimplemented: Counter = field(default_factory=Counter)
    # (syscall, exception class) -> count of handler exceptions that were not an errno
    monitor_errors: Counter = field(default_factory=Counter)
    # Traced only: KVM's counters (FAULT_COUNTERS) from a syscall's return to the next
    # syscall, by the name of the one before: what the guest touched after it (the pages
    # an mmap filled, a read's buffer), which never exits to the monitor.
    after: dict[str, Counter] = field(default_factory=dict)
    last: tuple[str, dict[str, int]] | None = None  # the syscall before and the counters then


# pf_fixed: guest page faults KVM fixed (first touches, copy-on-write); exits: every exit.
FAULT_COUNTERS = ("pf_fixed", "exits")


class Kernel:
    """What the guest program sees as its operating system."""

    def __init__(self, vm: Vm, namespace: Namespace, handlers: Mapping[int, Handler],
                 output_limit: int = 16 << 20):
        """`handlers` is the syscall table (syscalls/table.py): the kernel never imports it."""
        self.vm = vm
        self.handlers = handlers
        self.mem = UserMemory(vm.ram)
        self.mm = AddressSpace(vm.ram)
        self.ns = namespace
        self.fds = FdTable()
        self.identity = Identity()
        self.output_limit = output_limit
        self.stats = SyscallStats()
        self.trace: list[TraceRecord] | None = None
        self.term_signal: int | None = None
        self.clock = GuestClock(self)  # the guest's clocks; builders give it the vDSO's
        self.sched = Scheduler(self, self.identity.pid)
        self.signals = ProcessSignals()
        self.signal_sent = WaitQueue()  # woken when a signal is made pending (signalfd.py)
        self.retry_wake: float | None = None  # a kick to retry a delivery the trampoline put off
        self.umask = 0o022
        self.limits: dict[int, tuple[int, int]] = {}  # setrlimit's (soft, hard) by resource
        self.blocked: tuple | None = None  # (handler, args) of a syscall waiting on the monitor
        self.net: SocketPolicy | None = None  # where sockets may connect; None: no sockets
        self.net_account = IoAccount()  # the socket path's I/O, billed like ETL requests
        self.children = children.Children()
        self.guest_net = GuestNet(self.sched, namespace)  # addresses bound inside the guest
        self.captured_at: int | None = None  # the guest's monotonic ns at the capture restored from
        self.started = procfs.uptime()  # the process's start (/proc/self/stat's starttime)
        # When the invocation must end (time.monotonic()): bounds a wait on the egress,
        # which the deadline's kick out of KVM_RUN does not interrupt.
        self.deadline: float | None = None
        procfs.install(self)
        # The captures of stdout and stderr, held apart from the fd table: the guest
        # may close or dup2 over fds 1 and 2, and what it wrote is still its output.
        self.console: dict[int, OutputFile] = {}

    def answer_getpid(self) -> None:
        """Let the guest's syscall entry answer getpid (Vm.answer_getpid), unless the guest
        is traced: then every syscall reaches the monitor and its trace."""
        self.vm.answer_getpid(self.identity.pid if self.trace is None else 0)

    def start_trace(self) -> None:
        """Record every syscall from now on (TraceRecord)."""
        self.trace = []
        self.answer_getpid()

    def become_process(self, pid: int, ppid: int) -> None:
        """This kernel now serves process `pid`, child of `ppid` (a fork's copy, a program
        in a sibling VM): its one thread and its /proc/<pid> take the pid."""
        self.identity.pid, self.identity.ppid = pid, ppid
        self.answer_getpid()
        self.started = procfs.uptime()
        self.sched.become_process(pid)
        self.clock.withdraw_cpu()
        procfs.show_pid(self)

    def captured(self) -> None:
        """The state is being captured (a template freezes): restored() counts from now."""
        self.mm.unshare()  # a captured state holds no host fds
        self.captured_at = self.clock.ns(MONOTONIC)

    def restored(self) -> None:
        """Run again after a restore (a clone, a rollback): deadlines and the real-time timer
        keep the time they had left at the capture, on the guest's clock (its memory is the
        capture's until the next request anchors it to the host's clocks)."""
        shift = 0 if self.captured_at is None else self.clock.ns(MONOTONIC) - self.captured_at
        self.sched.restored(shift)
        self.clock.withdraw_cpu()  # a new process's CPU time (a clone's), or the template's
        real = self.signals.timers.get(ITIMER_REAL)
        if real is not None:
            real.expiry += shift / 1e9
        if self.retry_wake is not None:
            self.retry_wake += shift / 1e9

    def allow_sockets(self, policy: SocketPolicy | None) -> None:
        """Let the guest's TCP sockets connect where `policy` allows (None: no sockets).

        The guest resolves names from /etc/hosts: the allowed host names,
        resolved here on the host; nsswitch.conf keeps glibc off DNS.
        """
        self.net = policy
        hosts = policy.allowed_hosts() if policy is not None else {}
        self.ns.put_etc("hosts", hosts_file(hosts, self.identity.hostname))
        self.ns.put_etc("nsswitch.conf", b"hosts: files\n")

    def add_trust_roots(self, pem: str, ca_file: str | None) -> None:
        """Have the guest's TLS trust the certificates in `pem` as well as the image's.

        They are appended to the image's bundle, at the path OpenSSL opens
        (`ca_file`, the image's; the host OpenSSL's default if it has none).
        """
        try:
            ssl.create_default_context(cadata=pem)
        except (ssl.SSLError, ValueError) as e:
            raise LibosError(f"the extra trust roots are not PEM certificates: {e}") from None
        r = self.ns.resolve(ca_file or ssl.get_default_verify_paths().openssl_cafile)
        node = r.node
        base = bytes(node.read_at(0, node.size)) if node is not None else b""
        self.ns.put_file(r.path, base.rstrip(b"\n") + b"\n" + pem.strip().encode() + b"\n")

    # -- the dispatcher --------------------------------------------------------

    def handle_syscall(self, regs: kvm_regs) -> Stop | None:
        t0 = time.perf_counter()
        # One unpack for the number and the six arguments: seven ctypes field reads cost
        # five times as much, at every syscall.
        nr, _, _, rdx, rsi, rdi, _, _, r8, r9, r10 = SYSCALL_REGS.unpack_from(regs)
        handler = self.handlers.get(nr)
        if self.children.pre_exec and self.sched.current.tid in self.children.pre_exec:
            handler = children.before_exec(self, nr, handler)
        args = (rdi, rsi, rdx, r10, r8, r9)
        stop = None
        on_cpu = self.sched.on_cpu
        if handler is None:
            result = self._unimplemented(nr)
            regs.rax = result & MASK64
        else:
            outcome = self._call(handler, args)
            if type(outcome) is int:  # the common case first
                result = outcome
                regs.rax = result & MASK64
            elif outcome is PAUSE:
                return PAUSE
            else:
                result, stop = self._take_outcome(regs, handler, args, outcome)
        if stop is None and self.sched.check_at is not None \
                and time.monotonic() >= self.sched.check_at:
            self.sched.at_syscall_exit(regs)
        if stop is not None:
            regs.rax = 0
        elif sigdelivery.due(self):
            # A thread switched in here returns from its own syscall, not from nr.
            stop = sigdelivery.deliver(self, regs, nr if self.sched.on_cpu is on_cpu else None)
        dt = time.perf_counter() - t0
        stats = self.stats
        stats.count += 1
        stats.seconds += dt
        if self.trace is not None:
            self._record(SYSCALL_NAMES.get(nr, f"syscall_{nr}"), args, result, dt)
        return stop

    def _take_outcome(self, regs: kvm_regs, handler: Handler, args: tuple[int, ...],
                      outcome: object) -> tuple[int, Stop | None]:
        """Act on a handler's outcome other than a plain int: (the result recorded, a stop).
        A thread that waits or exits is recorded with 0."""
        if isinstance(outcome, Stop):
            return 0, outcome
        if isinstance(outcome, Block):
            self.sched.block(regs, (handler, args), outcome)
            return 0, None
        if outcome is EXIT_THREAD:
            self.sched.exit_current(regs)
            return 0, None
        regs.rax = outcome & MASK64
        return outcome, None

    def _record(self, name: str, args: tuple[int, ...], result: int, dt: float) -> None:
        """Trace one syscall; count what the guest did since the syscall before it."""
        stats = self.stats
        stats.by_name[name] += 1
        self.trace.append(TraceRecord(name, args, result, dt * 1e6))
        now = self.vm.vcpu.stats().read(FAULT_COUNTERS)
        if stats.last is not None:
            before, then = stats.last
            counts = stats.after.setdefault(before, Counter())
            for counter, value in now.items():
                counts[counter] += value - then[counter]
            counts["exits"] -= 1  # this syscall's own exit
        stats.last = (name, now)

    def _unimplemented(self, nr: int) -> int:
        name = SYSCALL_NAMES.get(nr, f"syscall_{nr}")
        if not self.stats.unimplemented[name]:
            log.info("unimplemented syscall %s (%d): ENOSYS", name, nr)
        self.stats.unimplemented[name] += 1
        return -errno.ENOSYS

    def interrupted(self, regs: kvm_regs) -> Stop | None:
        """The run loop was kicked out of KVM_RUN (Vm.wake_at): switch threads if one is
        due (a time slice, a timeout, finished host work), deliver what signal is due."""
        self.retry_wake = None
        self.sched.preempt(regs)
        self.check_memory()
        stop = sigdelivery.deliver(self, regs) if sigdelivery.due(self) else None
        self.rearm_wake()  # a CPU-time timer may not have expired yet
        return stop

    def check_memory(self, waiting: bool = False) -> None:
        """In a process tree, measure this process's memory when it is due: while it runs
        (the kick out of KVM_RUN) and while it waits (it may have grown before); and as it
        begins to wait, if its guest ran since the last measurement, so that what it
        touched is the tree's to see before a sibling's mmap asks for room."""
        charge = self.mm.charge
        if charge is None:
            return
        if time.monotonic() >= charge.next_check or waiting and charge.ran_to != self.vm.exits:
            charge.ran_to = self.vm.exits
            children.check_memory(self)

    @property
    def vcpu_observer(self) -> CpuClocks | None:
        """The vDSO's CPU clocks, told of each entry and exit once the guest reads them."""
        return self.clock.cpu

    def next_wake(self) -> float | None:
        """When (time.monotonic()) the run loop should kick the vCPU next, if ever.

        A CPU-time timer cannot expire before its CPU time left has passed
        on the wall clock: the kick comes then, and checks again. The
        scheduler's next check (a slice's end, a thread's timeout) is one.
        """
        now = time.monotonic()
        wakes = [] if self.retry_wake is None else [self.retry_wake]
        if self.sched.check_at is not None:
            wakes.append(self.sched.check_at)
        if self.mm.charge is not None:  # in a tree: its memory is measured (check_memory)
            wakes.append(self.mm.charge.next_check)
        for which, timer in self.signals.timers.items():
            wakes.append(now + max(timer.expiry - timer_clock(self, which), 0.0))
        return min(wakes, default=None)

    def rearm_wake(self) -> None:
        self.vm.wake_at(self.next_wake())

    @property
    def thread_signals(self) -> ThreadSignals:
        """The signal state of the thread whose syscall is being served."""
        return self.sched.current.signals

    def signal_due(self, thread: ThreadSignals | None = None) -> bool:
        """Is a signal deliverable now to `thread` (default: the current one)?"""
        return sigdelivery.due(self, thread)

    def wait_interrupted(self) -> bool:
        """Must a syscall waiting on the host stop now (EINTR)? A signal is due or time is up.

        A lone guest thread waits in place, so news from host threads (a child's end,
        a parent's signal) is taken in here.
        """
        if self.sched.alone:
            for finish in self.sched.host.take():
                finish()
        self.check_memory(waiting=True)
        return self.vm.deadline_hit or sigdelivery.due(self)

    def resume(self, regs: kvm_regs) -> Stop | None:
        """Re-run the syscall that blocked, now that the monitor has what it waited for."""
        if self.blocked is None:
            raise RuntimeError("resume() without a blocked syscall")
        handler, args = self.blocked
        self.blocked = None
        result = self._call(handler, args)
        if isinstance(result, Stop):
            return result
        regs.rax = result & MASK64
        return None

    def _call(self, handler, args: tuple[int, ...]) -> int | Stop | Block | object:
        """Run a handler: its result, -errno, PAUSE if it must wait for the monitor,
        a Block if its thread must wait, or EXIT_THREAD."""
        try:
            result = handler(self, *args)
        except SyscallError as e:
            return -e.errno
        except Blocked:
            self.blocked = (handler, args)
            return PAUSE
        except Block as b:
            return b
        except ExitThread:
            return EXIT_THREAD
        except VmError:
            raise  # a deliberate stop (a deadline, a crash the handler detected)
        except Exception as e:
            # A bug in the monitor, whatever the guest passed: never a crash of the
            # host process, and never an errno the guest could build on.
            self._monitor_error(handler, args, e)
        if type(result) is not int and not isinstance(result, (int, Stop, Block)):
            self._monitor_error(handler, args, TypeError(f"it returned {result!r}"))
        return result

    def _monitor_error(self, handler, args: tuple[int, ...], e: Exception) -> NoReturn:
        name = handler.__name__.removeprefix("sys_")
        self.stats.monitor_errors[(name, type(e).__name__)] += 1
        log.error("monitor error in syscall %s%s", name, tuple(map(hex, args)), exc_info=e)
        raise MonitorError(name, args, e) from e

    # -- helpers for handlers -------------------------------------------------

    def output(self, fd: int) -> OutputFile:
        """The capture of stdout (1) or stderr (2), wherever the guest moved those fds."""
        return self.console[fd]
