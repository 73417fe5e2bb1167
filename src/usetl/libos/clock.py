"""The guest's clocks, read as the guest reads them, and the deadlines of its timed waits.

Linux never ends a timed wait before its timeout on the clock it was given.
With the vDSO (vdso.py) the guest reads CLOCK_MONOTONIC and CLOCK_REALTIME
from the TSC, extrapolated from the last anchor at a calibrated rate, which
runs a little slower or faster than the host's clock between anchors; a wait
timed on the host's clock alone could end early on the guest's (a 0.1 s
Event.wait measured as 0.0994 s). So a Deadline names a guest clock, and a
wait ends only once the guest would read its time there (reached); the host's
clock only says when to look again (host_at), and a look that comes early
waits the rest. Without the vDSO the guest's clocks are the host's.

The CPU clocks are read through the syscall until the guest first asks for
one; from then on the vDSO serves them too (CpuClocks), since a profiler or
a benchmark reads them in a loop and a VM exit per read (~100 µs) cost more
than the work it timed.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import SyscallError

if TYPE_CHECKING:
    from .kernel import Kernel
    from .sched import Thread
    from .vdso import VdsoClock

MONOTONIC, REALTIME = "monotonic", "realtime"
# clock_gettime's ids the guest's two clocks serve (the vDSO's).
GUEST_CLOCKS = {0: REALTIME, 5: REALTIME, 1: MONOTONIC, 4: MONOTONIC, 6: MONOTONIC,
                7: MONOTONIC}
# The process's CPU clock is the monitor process's; a thread's, its turns on the vCPU's host
# thread (Scheduler.cpu_ns).
PROCESS_CPUTIME, THREAD_CPUTIME = 2, 3
# A negative id names a process's or a thread's CPU clock (glibc's clock_getcpuclockid,
# pthread_getcpuclockid): ~pid << 3 | PERTHREAD (4) | PROF, VIRT or SCHED (0-2).
CPUCLOCK_PERTHREAD, CPUCLOCK_KIND = 4, 3
HOST_OF = {MONOTONIC: time.CLOCK_MONOTONIC, REALTIME: time.CLOCK_REALTIME}


@dataclass(frozen=True)
class Deadline:
    """When a timed wait ends: `ns` on the guest's clock `clock` (MONOTONIC or REALTIME)."""

    clock: str
    ns: int

    def shifted(self, ns: int) -> Deadline:
        return Deadline(self.clock, self.ns + ns)


class GuestClock:
    """The clocks of the guest `kernel` serves: the vDSO's reading, else the host's."""

    def __init__(self, kernel: Kernel, vdso: VdsoClock | None = None):
        self.k = kernel  # its VM changes (a clone's, a child's), its RAM with it
        self.vdso = vdso  # None: the guest has no vDSO, and exits to read the host's clocks
        self.cpu: CpuClocks | None = None  # the CPU clocks, once the vDSO serves them

    def ns(self, clock: str) -> int:
        """What the guest reads on `clock` now."""
        if self.vdso is None:
            return time.clock_gettime_ns(HOST_OF[clock])
        return self.vdso.read(self.k.vm.ram, clock == MONOTONIC)

    def of_id(self, clock_id: int) -> int:
        """clock_gettime(clock_id) in the guest, in ns; EINVAL for an unknown clock."""
        clock = GUEST_CLOCKS.get(clock_id)
        if clock is not None:
            return self.ns(clock)
        if clock_id in (PROCESS_CPUTIME, THREAD_CPUTIME) and self.cpu is None \
                and self.vdso is not None:
            self.cpu = CpuClocks(self)  # its next reads, in the vDSO
        if clock_id == PROCESS_CPUTIME:
            return self.process_cpu_ns()
        if clock_id >= 0 and clock_id != THREAD_CPUTIME:
            raise SyscallError(errno.EINVAL)
        sched = self.k.sched
        if clock_id == THREAD_CPUTIME:
            return self.thread_cpu_ns(sched.current)
        owner = ~(clock_id >> 3)
        if clock_id & CPUCLOCK_KIND == CPUCLOCK_KIND:
            raise SyscallError(errno.EINVAL)
        if clock_id & CPUCLOCK_PERTHREAD:
            thread = sched.threads.get(owner) if owner else sched.current
            if thread is None:
                raise SyscallError(errno.EINVAL)
            return self.thread_cpu_ns(thread)
        if owner not in (0, self.k.identity.pid):
            raise SyscallError(errno.EINVAL)  # another process's: not this monitor's to read
        return self.process_cpu_ns()

    def process_cpu_ns(self) -> int:
        """CLOCK_PROCESS_CPUTIME_ID: the monitor process's CPU time (never below what the
        vDSO let the guest read)."""
        now = time.clock_gettime_ns(time.CLOCK_PROCESS_CPUTIME_ID)
        return now if self.cpu is None else max(now, self.cpu.process_floor)

    def thread_cpu_ns(self, thread: Thread) -> int:
        """A thread's CPU clock: its turns on the vCPU (Scheduler.cpu_ns), never below what
        the vDSO let it read."""
        now = self.k.sched.cpu_ns(thread)
        return now if self.cpu is None else max(now, self.cpu.thread_floors.get(thread.tid, 0))

    def withdraw_cpu(self) -> None:
        """The guest reads its CPU clocks through the syscall again (a new process's clocks
        start from its own CPU time: a fork's child, a clone, a rollback)."""
        if self.cpu is not None:
            assert self.vdso is not None
            self.vdso.withdraw_cpu(self.k.vm.ram)
            self.cpu = None

    def seconds(self) -> float:
        """The guest's CLOCK_MONOTONIC in seconds (its interval timers count on it)."""
        return self.ns(MONOTONIC) / 1e9

    def after(self, seconds: float) -> Deadline:
        return Deadline(MONOTONIC, self.ns(MONOTONIC) + round(seconds * 1e9))

    def at(self, clock_id: int, ns: int) -> Deadline:
        """An absolute timeout on clock_gettime's `clock_id` (TIMER_ABSTIME, FUTEX_WAIT_BITSET)."""
        clock = GUEST_CLOCKS.get(clock_id)
        if clock is None:
            raise SyscallError(errno.EINVAL)
        return Deadline(clock, ns)

    def left(self, deadline: Deadline) -> float:
        """Seconds until `deadline` on its clock (0 once reached)."""
        return max(deadline.ns - self.ns(deadline.clock), 0) / 1e9

    def reached(self, deadline: Deadline) -> bool:
        return self.ns(deadline.clock) >= deadline.ns

    def host_at(self, deadline: Deadline) -> float:
        """When on time.monotonic() to look at `deadline` again: the host's estimate, which
        the guest's clock may not have reached then (reached says; the rest is waited)."""
        return time.monotonic() + self.left(deadline)

    def for_child(self, child: Kernel, floor: int) -> GuestClock:
        """The clocks of a child program in a sibling VM: the vDSO's too, if this guest has
        it, its monotonic clock going on from `floor`, this one's reading before the child
        was made (one clock for the process tree, as Linux's)."""
        if self.vdso is not None:
            self.vdso.install(child.vm.ram, floor)
        return GuestClock(child, self.vdso)

    def anchor(self) -> None:
        """Bring the guest's clocks to the host's again (monotonic never steps back)."""
        if self.vdso is not None:
            self.vdso.anchor(self.k.vm.ram)


class CpuClocks:
    """The process's and the running thread's CPU clocks, served in the vDSO.

    At each entry into the guest (Vm.run's observer) the clocks' readings are
    published, and the guest's reads go on from them with the TSC while it runs.
    The TSC counts wall time, which also passes while the host preempts the vCPU's
    thread, so a read can run ahead of the host's count: what the guest could have read by
    the exit becomes that clock's floor, and no later reading goes below it (a CPU clock
    never steps back, as on Linux).
    """

    def __init__(self, clock: GuestClock):
        self.clock = clock
        self.process_floor = 0
        self.thread_floors: dict[int, int] = {}  # tid -> ns
        # At the last entry: the TSC, the thread that ran, and what each clock read.
        self.entry: tuple[int, int, int, int] | None = None

    def entering(self) -> None:
        clock = self.clock
        vdso, thread = clock.vdso, clock.k.sched.on_cpu
        assert vdso is not None
        process_ns, thread_ns = clock.process_cpu_ns(), clock.thread_cpu_ns(thread)
        tsc = vdso.tsc.read()
        vdso.publish_cpu(clock.k.vm.ram, tsc, process_ns, thread_ns)
        self.entry = (tsc, thread.tid, process_ns, thread_ns)

    def exited(self) -> None:
        if self.entry is None:
            return
        vdso, ram = self.clock.vdso, self.clock.k.vm.ram
        assert vdso is not None
        tsc, tid, process_ns, thread_ns = self.entry
        ran = vdso.since_anchor(ram, vdso.tsc.read()) - vdso.since_anchor(ram, tsc)
        self.process_floor = process_ns + ran
        floors = self.thread_floors
        floors[tid] = thread_ns + ran
        if len(floors) > 2 * len(self.clock.k.sched.threads):  # of threads that ended
            for gone in floors.keys() - self.clock.k.sched.threads.keys():
                del floors[gone]
