"""The per-VM OS state the monitor keeps and the syscall dispatcher.

One Kernel serves one USF: its memory map, namespace, fd table, captured
output and syscall statistics. The vm run loop calls handle_syscall() on
every SYSCALL exit; the handler in the table does the work.
"""

from __future__ import annotations

import errno
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from usetl.etl.accounting import IoAccount
from usetl.kvm.structs import kvm_regs
from usetl.vm import Stop, Vm, VmError

from .devices import Blocked
from .errors import MonitorError, SyscallError
from .files import FdTable, OutputFile
from .fs import Namespace
from .mm import AddressSpace
from .net import SocketPolicy, hosts_file
from .syscalls.numbers import SYSCALL_NAMES
from .usermem import UserMemory

log = logging.getLogger(__name__)

Handler = Callable[..., object]  # handler(kernel, *six syscall arguments) -> result or Stop

MASK64 = (1 << 64) - 1
PAUSE = Stop("pause")


@dataclass
class TraceRecord:
    name: str
    args: tuple[int, ...]
    result: int
    micros: float


@dataclass
class Identity:
    pid: int = 1
    uid: int = 1000
    gid: int = 1000
    hostname: str = "usf"


@dataclass
class SyscallStats:
    count: int = 0
    seconds: float = 0.0
    by_name: Counter = field(default_factory=Counter)
    unimplemented: Counter = field(default_factory=Counter)
    # (syscall, exception class) -> count of handler exceptions that were not an errno
    monitor_errors: Counter = field(default_factory=Counter)


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
        self.fs_base = 0
        self.tid_address = 0
        self.signal_actions: dict[int, bytes] = {}
        self.signal_mask = 0
        self.umask = 0o022
        self.blocked: tuple | None = None  # (handler, args) of a syscall waiting on the monitor
        self.net: SocketPolicy | None = None  # where sockets may connect; None: no sockets
        self.net_account = IoAccount()  # the socket path's I/O, billed like ETL requests
        # The captures of stdout and stderr, held apart from the fd table: the guest
        # may close or dup2 over fds 1 and 2, and what it wrote is still its output.
        self.console: dict[int, OutputFile] = {}

    def allow_sockets(self, policy: SocketPolicy | None) -> None:
        """Let the guest's TCP sockets connect where `policy` allows (None: no sockets).

        The guest resolves names from /etc/hosts: the allowed host names,
        resolved here on the host; nsswitch.conf keeps glibc off DNS.
        """
        self.net = policy
        hosts = policy.allowed_hosts() if policy is not None else {}
        self.ns.put_etc("hosts", hosts_file(hosts))
        self.ns.put_etc("nsswitch.conf", b"hosts: files\n")

    # -- the dispatcher --------------------------------------------------------

    def handle_syscall(self, regs: kvm_regs) -> Stop | None:
        nr = regs.rax
        t0 = time.perf_counter()
        handler = self.handlers.get(nr)
        args = (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9)
        if handler is None:
            result = -errno.ENOSYS
            name = SYSCALL_NAMES.get(nr, f"syscall_{nr}")
            if not self.stats.unimplemented[name]:
                log.info("unimplemented syscall %s (%d): ENOSYS", name, nr)
            self.stats.unimplemented[name] += 1
        else:
            result = self._call(handler, args)
            if result is PAUSE:
                return PAUSE
        stop = None
        if isinstance(result, Stop):
            stop, result = result, 0
        regs.rax = result & MASK64
        dt = time.perf_counter() - t0
        stats = self.stats
        stats.count += 1
        stats.seconds += dt
        if self.trace is not None:
            name = SYSCALL_NAMES.get(nr, f"syscall_{nr}")
            stats.by_name[name] += 1
            self.trace.append(TraceRecord(name, args, result, dt * 1e6))
        return stop

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

    def _call(self, handler, args: tuple[int, ...]) -> int | Stop:
        """Run a handler: its result, -errno, or PAUSE if it must wait for the monitor."""
        try:
            result = handler(self, *args)
        except SyscallError as e:
            return -e.errno
        except Blocked:
            self.blocked = (handler, args)
            return PAUSE
        except VmError:
            raise  # a deliberate stop (a deadline, a crash the handler detected)
        except Exception as e:
            # A bug in the monitor, whatever the guest passed: never a crash of the
            # host process, and never an errno the guest could build on.
            self._monitor_error(handler, args, e)
        if not isinstance(result, (int, Stop)):
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
