"""Guest threads, M:1 on the one vCPU: thread records, wait queues and the scheduler.

A thread is a record here, in the Kernel, so it is part of the monitor
state a template captures and a rollback restores. The thread on the vCPU
has its state there; every other one holds a saved ThreadContext. A syscall
that must wait raises Block: its thread leaves the vCPU and the scheduler
puts a runnable one there or, with none, waits on the host without CPU for
a timeout or for host work (an ETL request, a proxied socket) to finish. A
thread that makes no syscalls is taken off at the end of its time slice by
the VM's wake (Vm.wake_at), the same kick out of KVM_RUN as the deadline.

Threads do not outlive an invocation in a clone: its rollback restores the
template's records. A USF reused without rollback keeps them, frozen while
no request runs, as Lambda freezes an environment between invocations.

M:N later: a record holds all a vCPU needs (ThreadContext) and wait queues
name threads, never the vCPU; several vCPUs would each have their own
`current` and `on_cpu`, take threads from the one run queue under a lock,
and the trampoline's save slot and stack would become per vCPU.
"""

from __future__ import annotations

import errno
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from usetl.vm import ThreadContext, VmError

from .clock import MONOTONIC, Deadline
from .errors import SyscallError
from .signals import ITIMER_REAL, ThreadSignals

if TYPE_CHECKING:
    from .kernel import Kernel

MAX_THREADS = 512  # per USF; clone past it is EAGAIN
# 10 ms: a switch costs an exit plus three ioctls (about 0.1 ms here), so
# round robin between busy threads costs about 1%; CPython itself asks for
# the GIL back after 5 ms (sys.getswitchinterval), with a timed futex wait
# whose deadline arms the alarm on its own, so the GIL changes hands on time.
TIME_SLICE = 0.010
# A thread another wakes runs at once, at the waker's syscall exit, if it has had this much
# less of the vCPU (Linux's wakeup preemption): else a thread that drops and takes CPython's
# GIL around each syscall takes it back before a woken waiter runs, and starves it.
WAKEUP_GRANULARITY_NS = 1_000_000
IDLE_SLICE = 0.1  # an idle vCPU checks the invocation's deadline this often
TRAMPOLINE_RETRY = 0.001  # a kick inside the syscall entry is tried again this soon
HOST_POLL_SLICE = 0.05  # a host thread watching sockets sees its wait end this soon
ALL_BITS = 0xFFFFFFFF
MASK64 = (1 << 64) - 1

RUNNING, RUNNABLE, WAITING, EXITED = "running", "runnable", "waiting", "exited"


class GuestDeadlock(VmError):
    """Every guest thread waits and nothing (timer, host work) can wake one."""


class ExitThread(Exception):  # noqa: N818 - a control-flow signal, like StopIteration
    """Raised by exit(): the calling thread ends (the others run on)."""


class Block(Exception):
    """Raised by a handler whose thread must wait.

    It waits on `queues` until one wakes it, or until `deadline` (a
    clock.Deadline, judged on the guest's clock; None: no timeout). With
    `retry`, waking re-runs the handler (readiness: read, poll), and so does
    `recheck`'s time coming (a wake, not a timeout: a timerfd's due time);
    without, the waker gives the result (futex). At the deadline the result
    is `timeout_result`, or with None the handler is re-run with
    Scheduler.timed_out() true. Unless
    `interruptible` is false (vfork's parent, as on Linux), a due signal ends
    the wait (EINTR).
    """

    def __init__(self, queues: tuple[WaitQueue, ...] = (), deadline: Deadline | None = None, *,
                 retry: bool = True, timeout_result: int | None = None,
                 bitset: int = ALL_BITS, host_token: HostToken | None = None,
                 interruptible: bool = True, recheck: Deadline | None = None):
        super().__init__()
        self.queues = queues
        self.deadline = deadline
        self.recheck = recheck
        self.retry = retry
        self.timeout_result = timeout_result
        self.bitset = bitset
        self.host_token = host_token  # set by Scheduler.start_host_work
        self.interruptible = interruptible


class HostToken:
    """Names one piece of host work a thread waits for; cancelled when the wait ends."""

    def __init__(self) -> None:
        self.cancelled = False


class Wait:
    """What a waiting thread waits for (a Block, and the syscall to re-run)."""

    interruptible = True  # what a wait pickled before the attribute existed reads

    def __init__(self, block: Block, call: tuple | None):
        self.queues = list(block.queues)
        self.deadline = block.deadline
        self.recheck = block.recheck if call is not None else None
        self.timeout_result = block.timeout_result
        self.bitset = block.bitset
        self.call = call  # (handler, args) re-run when woken; None: the waker gives the result
        self.timed_out = False
        self.signalled = False  # re-run because a signal is due: the syscall ends with EINTR
        self.interruptible = block.interruptible
        self.host_token = block.host_token  # the host work it waits for, if any


class Thread:
    def __init__(self, tid: int, context: ThreadContext | None = None,
                 signals: ThreadSignals | None = None):
        self.tid = tid
        self.signals = signals or ThreadSignals()  # its mask, pending signals, altstack
        self.context = context  # None while its state is on the vCPU
        self.state = RUNNABLE
        self.clear_child_tid = 0  # set_tid_address / CLONE_CHILD_CLEARTID
        self.result: int | None = None  # what its syscall returns when it next runs
        self.wait: Wait | None = None
        self.cpu_ns = 0  # the vCPU's host CPU time it had in its past turns on the vCPU
        self.name: bytes | None = None  # PR_SET_NAME's (comm); None: its program's name
        self.nice = 0  # setpriority's, per thread as on Linux; it only goes up (not root)

    def __repr__(self) -> str:
        return f"Thread({self.tid}, {self.state})"


class WaitQueue:
    """Threads waiting for one thing (a futex word, a pipe's data, an eventfd)."""

    def __init__(self) -> None:
        self.waiters: list[Thread] = []

    def wake(self, sched: Scheduler, count: int = -1, result: int | None = None,
             bitset: int = ALL_BITS) -> int:
        """Wake up to `count` waiters (-1: all) whose bitset matches; how many woke."""
        woken = 0
        for t in list(self.waiters):
            if woken == count:
                break
            assert t.wait is not None
            if t.wait.bitset & bitset:
                sched.wake(t, result)
                woken += 1
        return woken


class HostWork:
    """Work host threads do for waiting guest threads; not monitor state (never pickled).

    A worker's result is handed to the vCPU's thread, which alone touches
    the monitor state, through `done`; the worker then kicks the vCPU.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.lock = threading.Lock()
        self.done: deque[Callable[[], None]] = deque()
        self.event = threading.Event()
        self.inflight = 0

    def __getstate__(self) -> dict:
        return {}  # in-flight host work belongs to this process (see Scheduler.restored)

    def __setstate__(self, state: dict) -> None:
        # In place (a rollback), the queue stays while no work of an earlier invocation can
        # reach it: new locks and an Event cost ~20 µs a rollback.
        if getattr(self, "inflight", None) != 0 or self.done or self.event.is_set():
            self._reset()

    def submit(self, work: Callable[[], object], finish: Callable[[object], None],
               kick: Callable[[], None]) -> None:
        """Run work() on a host thread, then finish(its result or exception) on the vCPU's.

        One daemon thread per piece of work: a worker never holds up the
        monitor's exit, and each in-flight request has its own.
        """

        # The queue as it is now: a rollback that resets this object in place gives it a new
        # one, so that work of an earlier invocation never reaches the next.
        lock, done, event = self.lock, self.done, self.event

        def run() -> None:
            try:
                outcome: object = work()
            except BaseException as e:  # handed to finish(), which raises nothing
                outcome = e
            with lock:
                done.append(lambda: finish(outcome))
                event.set()
            kick()

        with self.lock:
            self.inflight += 1
        threading.Thread(target=run, name="usetl-io", daemon=True).start()

    def post(self, finish: Callable[[], None], kick: Callable[[], None]) -> None:
        """Have finish() run on the vCPU's thread, from any thread (news a watcher has)."""
        with self.lock:
            self.inflight += 1
            self.done.append(finish)
            self.event.set()
        kick()

    def take(self) -> list[Callable[[], None]]:
        with self.lock:
            done = list(self.done)
            self.done.clear()
            self.inflight -= len(done)
            self.event.clear()
        return done


class Scheduler:
    """The guest's threads and which one has the vCPU."""

    def __init__(self, kernel: Kernel, main_tid: int):
        self.k = kernel
        main = Thread(main_tid)
        main.state = RUNNING
        self.threads: dict[int, Thread] = {main_tid: main}
        self.current = main  # whose syscall is being served
        self.on_cpu = main  # whose state the vCPU holds
        self.runnable: deque[Thread] = deque()
        self.next_tid = main_tid + 1
        self.check_at: float | None = None  # a syscall exit past this time reschedules
        self.yielding = False  # sched_yield: give way now, slice or not
        self.slice_end: float | None = None
        self.futexes: dict[int, WaitQueue] = {}  # futex word's address -> its waiters
        self.host = HostWork()
        # (host thread CPU ns, native thread id) when on_cpu's turn began: all guest threads
        # share the vCPU's host thread, whose CPU time is split between them by turns
        self.turn_mark: tuple[int, int] | None = None

    # -- for handlers -------------------------------------------------------------

    @property
    def alone(self) -> bool:
        """One guest thread only: a handler may then wait on the host in place."""
        return len(self.threads) == 1

    def deadline_after(self, seconds: float | None) -> Deadline | None:
        """The deadline of a wait of `seconds`; a re-run syscall keeps its first one."""
        wait = self.current.wait
        if wait is not None:
            return wait.deadline
        return None if seconds is None else self.k.clock.after(seconds)

    def timed_out(self) -> bool:
        """Is this a re-run of a syscall whose wait reached its deadline?"""
        wait = self.current.wait
        return wait is not None and wait.timed_out

    def rerun(self) -> bool:
        """Is this a re-run of a syscall whose wait ended (it blocked before)?"""
        return self.current.wait is not None

    def signalled(self) -> bool:
        """Is this a re-run of a waiting syscall that a due signal interrupts (EINTR)?"""
        wait = self.current.wait
        return wait is not None and wait.signalled

    def cpu_ns(self, t: Thread) -> int:
        """Thread t's CPU time (CLOCK_THREAD_CPUTIME_ID, RUSAGE_THREAD): its past turns on
        the vCPU and, if it holds it, this one so far."""
        return t.cpu_ns + (self._turn_ns() if t is self.on_cpu else 0)

    def _turn_ns(self) -> int:
        """The vCPU's host CPU time since on_cpu's turn began. With no mark (a fresh USF, a
        forked process) the turn began with this host thread: all its CPU time went to the
        guest thread it runs; a mark of another host thread (the state was captured there:
        a clone, a rollback, a snapshot) goes on from the CPU time it had then."""
        now, host_thread = time.thread_time_ns(), threading.get_native_id()
        if self.turn_mark is None:
            self.turn_mark = (0, host_thread)
        elif self.turn_mark[1] != host_thread:
            self.turn_mark = (now, host_thread)
        return now - self.turn_mark[0]

    def _next_turn(self, leaving: Thread) -> None:
        leaving.cpu_ns += self._turn_ns()
        self.turn_mark = (time.thread_time_ns(), threading.get_native_id())

    def new_id(self) -> int:
        """A new thread's or child process's id: the process tree's next once it has
        children (proctree.py), so ids are unique across the tree, as on Linux."""
        table = self.k.children.table
        if table is not None:
            return table.new_pid()
        tid = self.next_tid
        self.next_tid += 1
        return tid

    def new_thread(self, context: ThreadContext) -> Thread:
        """A thread made by the current one: it inherits its signal mask, name and nice
        value, not its altstack or pending signals (Linux's clone with CLONE_VM)."""
        if len(self.threads) >= MAX_THREADS:
            raise SyscallError(errno.EAGAIN)
        tid = self.new_id()
        signals = ThreadSignals(mask=self.current.signals.mask)
        t = self.threads[tid] = Thread(tid, context, signals)
        t.name, t.nice = self.current.name, self.current.nice  # as its creator's
        self._make_runnable(t)
        return t

    def become_process(self, pid: int) -> None:
        """The current thread is a new process's only one, with tid `pid` (a forked child,
        a program's first thread); host work in flight was another process's."""
        t = self.current
        t.tid = pid
        self.threads = {pid: t}
        self.on_cpu = t
        t.cpu_ns, self.turn_mark = 0, None  # a new process's thread starts at no CPU time
        self.runnable.clear()
        self.futexes = {}
        self.check_at = self.slice_end = None
        self.host = HostWork()

    def discard(self, t: Thread) -> None:
        """Forget a thread that never ran (its clone failed half-way)."""
        del self.threads[t.tid]
        self.runnable.remove(t)

    def wake(self, t: Thread, result: int | None = None) -> None:
        """End t's wait: with a result, or (None) to re-run its syscall if it retries."""
        wait = t.wait
        if wait is None or t.state != WAITING:
            return
        for q in wait.queues:
            if t in q.waiters:
                q.waiters.remove(t)
        wait.queues = []
        if wait.host_token is not None:
            wait.host_token.cancelled = True
        if result is not None or wait.call is None:
            t.result = result if result is not None else 0
            t.wait = None
        self._make_runnable(t)
        if t.cpu_ns + WAKEUP_GRANULARITY_NS < self.cpu_ns(self.current):
            self.give_way()

    def move(self, t: Thread, src: WaitQueue, dst: WaitQueue) -> None:
        """FUTEX_REQUEUE: t goes on waiting, on dst."""
        assert t.wait is not None
        src.waiters.remove(t)
        dst.waiters.append(t)
        t.wait.queues = [dst if q is src else q for q in t.wait.queues]

    def start_host_work(self, work: Callable[[], object],
                        finish: Callable[[object], int]) -> Block:
        """Block the current thread while a host thread does work(); finish(outcome) is its result.

        finish runs on the vCPU's thread (it may touch monitor state) and
        gets work's return value or the exception it raised.
        """
        t = self.current
        token = HostToken()

        def complete(outcome: object) -> None:
            if t.wait is None or t.wait.host_token is not token:
                return  # the thread is gone (exit_group, rollback)
            served, self.current = self.current, t  # finish() works for t
            try:
                result = finish(outcome)
            except SyscallError as e:
                result = -e.errno
            finally:
                self.current = served
            t.wait.call = None
            self.wake(t, result)

        self.host.submit(work, complete, self.k.vm.wake_now)
        return Block(retry=False, host_token=token)

    def watch_host(self, fds: dict[int, int], queues: tuple[WaitQueue, ...],
                   deadline: Deadline | None, recheck: Deadline | None = None) -> Block:
        """Block the current thread on `queues` and host fds (fd -> poll events).

        A host thread polls the fds while other guest threads run; readiness
        re-runs the syscall. The watch ends with the wait, however it ends
        (its timeout is the wait's, judged on the guest's clock).
        """
        t = self.current
        token = HostToken()
        until = None if deadline is None else self.k.clock.host_at(deadline)

        def work() -> bool:
            poller = select.poll()
            for fd, events in fds.items():
                poller.register(fd, events)
            while not token.cancelled:
                if until is not None and time.monotonic() >= until:
                    return False
                if poller.poll(HOST_POLL_SLICE * 1000):
                    return True
            return False

        def complete(outcome: object) -> None:
            if outcome is True and t.wait is not None and t.wait.host_token is token:
                self.wake(t)

        self.host.submit(work, complete, self.k.vm.wake_now)
        return Block(queues, deadline, host_token=token, recheck=recheck)

    # -- called by the Kernel -------------------------------------------------------

    def block(self, regs, call: tuple, b: Block) -> None:
        """The current thread waits (b); another thread gets the vCPU."""
        t = self.current
        t.wait = Wait(b, call if b.retry else None)
        t.state = WAITING
        for q in b.queues:
            q.waiters.append(t)
        self._switch(regs)

    def exit_current(self, regs) -> None:
        """The current thread ended (exit with others left)."""
        t = self.current
        t.state = EXITED
        del self.threads[t.tid]
        if t.clear_child_tid:
            try:
                self.k.mem.put_u32(t.clear_child_tid, 0)
            except SyscallError:
                pass  # Linux ignores a bad address here too
            else:
                self.futex_wake(t.clear_child_tid, 1)
        self._switch(regs)

    # -- futex words ------------------------------------------------------------------

    def futex_queue(self, addr: int) -> WaitQueue:
        q = self.futexes.get(addr)
        if q is None:
            q = self.futexes[addr] = WaitQueue()
        return q

    def futex_wake(self, addr: int, count: int, bitset: int = ALL_BITS) -> int:
        q = self.futexes.get(addr)
        if q is None:
            return 0
        woken = q.wake(self, count, 0, bitset)
        self.forget_futex(addr)
        return woken

    def forget_futex(self, addr: int) -> None:
        q = self.futexes.get(addr)
        if q is not None and not q.waiters:
            del self.futexes[addr]

    def at_syscall_exit(self, regs) -> None:
        """Past check_at: let a woken or timed-out thread in if the slice is over."""
        self._collect()
        self._wake_for_signals()
        now = time.monotonic()
        yielding, self.yielding = self.yielding, False
        if self.runnable and (yielding or self.slice_end is None or now >= self.slice_end):
            self._yield(regs)
        else:
            self._arm()

    def give_way(self) -> None:
        """sched_yield: other runnable threads go first, at this syscall's exit."""
        if self.runnable:
            self.yielding = True
            self.check_at = 0.0

    def preempt(self, regs) -> None:
        """The alarm stopped the guest between two instructions."""
        self._collect()
        self._wake_for_signals()
        if not self.runnable:
            self._arm()
        elif self.k.vm.in_trampoline(regs.rip):
            # Its stack and save slot are shared: let the thread leave the entry first.
            self.check_at = time.monotonic() + TRAMPOLINE_RETRY
            self.k.rearm_wake()
        else:
            self._yield(regs)

    def restored(self, shift: int) -> None:
        """After a rollback or restore, `shift` ns after the state was captured (on the
        guest's monotonic clock): timed waits keep the time they had left then (a clone made
        later does not time out early; one until a wall-clock time keeps that time), and
        host work that was in flight is lost with its process."""
        for t in self.threads.values():
            wait = t.wait
            if wait is not None and wait.deadline is not None and wait.deadline.clock == MONOTONIC:
                wait.deadline = wait.deadline.shifted(shift)
            if wait is not None and wait.recheck is not None and wait.recheck.clock == MONOTONIC:
                wait.recheck = wait.recheck.shifted(shift)
        if self.check_at is not None:
            self.check_at += shift / 1e9
        if self.slice_end is not None:
            self.slice_end += shift / 1e9
        for t in list(self.threads.values()):
            if t.wait is not None and t.wait.host_token is not None:
                t.wait.host_token = None
                t.wait.call = None
                self.wake(t, -errno.EINTR)

    # -- the machinery ----------------------------------------------------------------

    def _make_runnable(self, t: Thread) -> None:
        t.state = RUNNABLE
        self.runnable.append(t)
        if self.check_at is None:
            self.check_at = time.monotonic()

    def _yield(self, regs) -> None:
        t = self.current
        t.state = RUNNABLE
        self.runnable.append(t)
        self._switch(regs)

    def _switch(self, regs) -> None:
        """Give the vCPU to the next runnable thread, waiting on the host for one if need be."""
        nxt = self._pick()
        if nxt is None:
            return  # the deadline passed: the VM stops at its next entry
        vm = self.k.vm
        cur = self.on_cpu
        if nxt is not cur:
            self._next_turn(cur)
            if cur.state != EXITED:
                cur.context = vm.save_context()
            assert nxt.context is not None
            vm.load_context(nxt.context)
            nxt.context = None
            self.on_cpu = nxt
        if nxt.result is not None:
            regs.rax = nxt.result & MASK64
            nxt.result = None
        nxt.state = RUNNING
        self.current = nxt
        self.slice_end = time.monotonic() + TIME_SLICE
        self._arm()

    def _pick(self) -> Thread | None:
        while True:
            self._collect()
            while self.runnable:
                t = self.runnable.popleft()
                if t.state == RUNNABLE and (t.wait is None or self._rerun(t)):
                    return t
            if self.k.vm.deadline_hit:
                return None
            if self._wake_for_signals():
                continue
            self._idle()

    def _rerun(self, t: Thread) -> bool:
        """Re-run t's waiting syscall; True if it finished (its result is set)."""
        wait = t.wait
        assert wait is not None and wait.call is not None
        handler, args = wait.call
        served = self.current
        self.current = t
        try:
            result = handler(self.k, *args)
        except SyscallError as e:
            result = -e.errno
        except Block as b:
            if wait.signalled:
                result = -errno.EINTR
                t.wait = None
                t.result = result
                return True
            t.wait = Wait(b, wait.call if b.retry else None)
            t.state = WAITING
            for q in b.queues:
                q.waiters.append(t)
            return False
        finally:
            self.current = served
        t.wait = None
        t.result = int(result)
        return True

    def _collect(self) -> None:
        """Finish host work that completed and end waits whose deadline passed."""
        for finish in self.host.take():
            finish()
        clock = self.k.clock
        for t in list(self.threads.values()):
            wait = t.wait
            if t.state != WAITING or wait is None:
                continue
            if wait.deadline is not None and clock.reached(wait.deadline):
                if wait.timeout_result is not None or wait.call is None:
                    wait.call = None
                    self.wake(t, wait.timeout_result if wait.timeout_result is not None else 0)
                else:
                    wait.timed_out = True
                    self.wake(t)
            elif wait.recheck is not None and clock.reached(wait.recheck):
                self.wake(t)

    def _wake_for_signals(self) -> bool:
        """Linux's complete_signal: a due signal wakes the waiting thread it is for at once,
        while another thread has the vCPU; True if one woke.

        A signal for the process goes to the main thread if it does not block it (as Linux
        prefers the thread it was sent to, the group leader), else to the running thread,
        else to the first that does not. One chosen for a waiting thread moves to that
        thread's own pending set, so that the running thread does not take it first.
        """
        k = self.k
        k.signal_due(self.current.signals)  # fires the interval timers that are due
        shared = k.signals.pending
        if shared:
            main = self.threads.get(k.identity.pid)
            for t in (main, self.current, *self.threads.values()):
                if t is not None and t.state != EXITED and shared & ~t.signals.mask:
                    if t.state == WAITING:
                        k.signals.move_pending(shared & ~t.signals.mask, t.signals)
                    break
        woken = False
        for t in list(self.threads.values()):
            if t.state == WAITING and t.wait is not None and t.wait.interruptible \
                    and t.signals.pending & ~t.signals.mask:
                self._interrupt_for_signal(t)
                woken = True
        return woken

    def _interrupt_for_signal(self, t: Thread) -> None:
        """A due signal interrupts t's wait: EINTR, or its syscall's re-run says so."""
        assert t.wait is not None
        if t.wait.call is not None:
            t.wait.signalled = True  # its re-run ends it (a sleep writes the time left)
            self.wake(t)
        else:
            self.wake(t, -errno.EINTR)

    def _idle(self) -> None:
        """No thread can run: sleep on the host until a deadline or host work finishes."""
        self.k.check_memory(waiting=True)
        deadlines = self._timed()
        # A real-time timer's signal may end a wait (CPU-time ones do not run while idle), and
        # so may a running child program's end (SIGCHLD, its pipes closing) or, in a child,
        # a signal from its parent.
        if (not deadlines and not self.host.inflight and not self.k.children.running
                and self.k.children.parent is None
                and ITIMER_REAL not in self.k.signals.timers):
            raise GuestDeadlock(
                f"all {len(self.threads)} guest thread(s) wait and nothing can wake them "
                "(a deadlock: a lock or futex no other thread will release, or a signal "
                "nothing will send)"
            )
        # The waits' own deadlines too: check_at was set before they began (a wait of 50 ms
        # took the whole idle slice, 100 ms).
        wakes = [self.k.clock.host_at(d) for d in deadlines]
        wake = self.k.next_wake()  # a signal timer, a retried delivery
        if wake is not None:
            wakes.append(wake)
        left = min([IDLE_SLICE, *(max(w - time.monotonic(), 0.0) for w in wakes)])
        self.host.event.wait(left)

    def _arm(self) -> None:
        """Set the alarm and check_at: the slice's end if others can run, else the next timeout."""
        when = self.slice_end if self.runnable else None
        for deadline in self._timed():
            at = self.k.clock.host_at(deadline)
            when = at if when is None else min(when, at)
        self.check_at = when
        self.k.rearm_wake()

    def _timed(self) -> list[Deadline]:
        """The times the waiting threads wait for: their deadlines and rechecks."""
        return [d for t in self.threads.values() if t.wait is not None
                for d in (t.wait.deadline, t.wait.recheck) if d is not None]
