"""Pools: per function version, a template and ready instances, under one memory budget.

- An invocation takes a ready instance, or forks one from the template (starting the
  template first if it is not in memory: from its snapshot where the backend has one).
- A used instance is rolled back and kept when the policy says so and the backend can;
  otherwise it is closed and a fresh one is forked in the background.
- Each pool keeps as many ready instances as the concurrency it saw recently, and none
  after `idle_s` without invocations (scale to zero). Templates of idle functions are
  evicted least recently used first when the memory budget is exceeded, after a save()
  where the backend supports snapshots.
- A function's concurrency limit: invocations beyond it wait in a bounded queue; when the
  queue is full they are refused (ConcurrencyLimit, HTTP 429). Its child processes count
  toward it too: the limit is a pipe of slots (libos.children.ProcessSlots) that each
  invocation takes one of here and each child one of in its monitor, so a fork beyond it
  is EAGAIN and invocations wait while children fill it (on the pipe: a slot given back,
  by this pool or by a monitor, wakes them). While they run, children's memory counts
  toward the memory budget (measured by the maintainer, `children_bytes` in the status).
- Learned templates (learning.py): once invocations keep importing the same modules, the
  next template generation is built with them imported, on a thread of its own, and swapped
  in whole: later instances are forked from it, ready ones of the old generation are closed,
  busy ones finish their invocation and are closed instead of rolled back.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from usetl.errors import UsetlError
from usetl.invocation import SANDBOX_ERROR, ErrorInfo, InvocationResult
from usetl.libos.children import ProcessSlots
from usetl.libos.handoff import HandOff, HandOffError

from .backend import (
    REUSE_WARM,
    Backend,
    BackendError,
    FunctionLoadError,
    FunctionSpec,
    FunctionTemplate,
    Instance,
    RollbackImpossible,
)
from .learning import LEARN_AFTER, Generation, ImportLearner
from .metrics import Metrics

log = logging.getLogger(__name__)
RECYCLERS = 2  # threads rolling used instances back
RECYCLE_WAIT_S = 0.05  # how long an invocation waits for a rollback before forking
# An instance's memory for the budget (Instance.own_bytes) walks its process's page tables
# (smaps_rollup: 10-20 ms for a clone here), too dear for every rollback. So after a rollback
# only its resident size is read (a counter: tens of µs); if that moved by MOVED_BYTES since
# the last measure, the maintenance thread measures it again at its next round (every
# MEASURE_EVERY_S). Changes the resident size does not show (a clone's writes to pages it
# shares with its template's process) are caught by measuring each instance again after
# REMEASURE_S. The budget lags a rollback by up to MEASURE_EVERY_S.
MEASURE_EVERY_S = 0.5
MOVED_BYTES = 1 << 20
REMEASURE_S = 10.0
# A function deployed with reuse "warm" keeps an instance, globals and /tmp included, for
# this many calls (and no longer than the pool's idle time), as a Lambda environment is.
WARM_REUSE_CALLS = 1000
# The phases of an invocation's record (InvocationResult.phases), in ms, each measured by the
# host: queue (waiting for a slot under the function's concurrency limit), dispatch (finding
# or waiting for an instance, and the round trip to it beyond the monitor's own time), start
# or restore (the template started, or mapped back from its snapshot, for this invocation),
# fork (a new instance made for it), guest (the monitor's request-to-reply time less the
# ETL requests), etl (the host's wall time serving its ETL requests), rollback (after the
# answer, off the request's path: reported to `RollbackReport` once done).
PHASES = ("queue_ms", "dispatch_ms", "start_ms", "restore_ms", "fork_ms", "guest_ms", "etl_ms",
          "rollback_ms")

# (invocation id, rollback ms or None if the instance was not rolled back): called once for
# every invocation the pool gave an instance, after its answer.
RollbackReport = Callable[[str, float | None], None]


# () -> (spec, concurrency limit, queue limit, whether it is the function's live version)
Definition = Callable[[], tuple[FunctionSpec, int, int, bool]]
# Told of each new template generation of a version (or of a failed attempt at one).
GenerationListener = Callable[[str, Generation], None]


class PoolError(UsetlError):
    """The pool could not serve an invocation."""


class ConcurrencyLimit(PoolError):
    """The function is at its concurrency limit and its queue is full."""


@dataclass
class PoolConfig:
    memory_budget_bytes: int = 4 << 30
    max_ready: int = 16  # ready instances per function at most
    idle_s: float = 60.0  # no invocation for this long: close the ready instances
    reuse: bool = True  # roll back used instances and keep them (if the backend can)
    recent_s: float = 10.0  # the window in which the peak of instances in use is observed
    learn_after: int = LEARN_AFTER  # same imports this many calls in a row: learn (0: never)


class FunctionPool:
    """The pool of one function version."""

    def __init__(self, spec: FunctionSpec, concurrency: int, queue: int, learn_after: int):
        self.spec = spec  # replaced, with the template, by each learned generation
        self.concurrency = concurrency
        # Held by invocations and their children; closed with the pool (no invocation has it).
        self.slots = ProcessSlots.new(concurrency)
        weakref.finalize(self, self.slots.close)
        self.queue = queue
        self.template: FunctionTemplate | None = None
        self.template_lock = threading.Lock()  # one template start at a time
        self.snapshot: Path | None = None
        self.ready: deque[Instance] = deque()
        self.busy = 0
        self.waiting = 0
        self.peak = 0  # most instances out at once in the current window (in_use())
        self.peak_started = time.monotonic()
        self.last_used = time.monotonic()
        self.retired = False
        self.invocations = 0
        self.reusable = True  # False once the backend said it cannot roll back an instance
        self.recycling = 0  # used instances being rolled back
        self.warm_calls: weakref.WeakKeyDictionary[Instance, int] = weakref.WeakKeyDictionary()
        self.learner = ImportLearner(learn_after, spec.learned)
        self.learn_error: ErrorInfo | None = None
        # Each instance's template generation: one of an older one is closed after its call.
        self.generations: weakref.WeakKeyDictionary[Instance, int] = weakref.WeakKeyDictionary()
        self.out: Counter[int] = Counter()  # instances running an invocation, by generation
        self.draining: dict[int, FunctionTemplate] = {}  # old templates, until none is out
        self.held: dict[Instance, str] = {}  # instances out of `ready`: "busy" or "recycling"
        # Each live instance's memory as last measured (the backend's estimate until then).
        self.sizes: weakref.WeakKeyDictionary[Instance, int] = weakref.WeakKeyDictionary()
        # The memory of busy instances' child processes, as the maintainer last measured it.
        self.children_sizes: dict[Instance, int] = {}
        # When each was measured (time.monotonic()), and its resident size then.
        self.measured: weakref.WeakKeyDictionary[Instance, tuple[float, int | None]] = (
            weakref.WeakKeyDictionary())
        # To measure at the maintenance thread's next round (new, or grown since).
        self.unmeasured: weakref.WeakSet[Instance] = weakref.WeakSet()

    def children(self) -> int:
        """Child processes of its invocations running now (each holds a slot)."""
        return max(0, self.concurrency - self.busy - self.slots.free())

    def instance_bytes(self, backend: Backend) -> int:
        """What its next instance will take: the most one of its live instances took, or the
        backend's estimate before any was measured."""
        return max((n for i, n in self.sizes.items() if not i.closed),
                   default=backend.instance_bytes)

    def current(self, instance: Instance) -> bool:
        """Whether the instance was forked from the template that serves now."""
        return self.generations.get(instance) == self.spec.generation

    def generation(self) -> Generation:
        return Generation(self.spec.generation, list(self.spec.learned), self.learn_error)

    def take_ready(self) -> Instance:
        """The instance for the next invocation (called with the pool's lock held).

        Warm reuse serves the one used last, as Lambda reuses a warm environment; rolled-back
        instances are all alike, and the oldest has had the most time to be warmed.
        """
        return self.ready.pop() if self.spec.reuse == REUSE_WARM else self.ready.popleft()

    def add_fresh(self, instance: Instance) -> None:
        """A new instance joins the ready ones: under warm reuse, behind the warm ones."""
        if self.spec.reuse == REUSE_WARM:
            self.ready.appendleft(instance)
        else:
            self.ready.append(instance)

    def take_surplus(self) -> Instance:
        """The instance to close when there are too many: the one take_ready() would not."""
        return self.ready.popleft() if self.spec.reuse == REUSE_WARM else self.ready.pop()

    def in_use(self) -> int:
        """Instances out of `ready`: those running an invocation and, for each, at most one
        being rolled back behind it (a rollback can take longer than the next invocation's
        turn; where rollbacks fall further behind, more instances would not catch up)."""
        return self.busy + (min(self.recycling, self.busy) if self.reusable else 0)

    def target_ready(self, cfg: PoolConfig) -> int:
        """Instances to keep: as many as were in use at once recently, plus one spare where
        used ones come back after a rollback (so back-to-back invocations do not wait for
        it)."""
        if self.retired or time.monotonic() - self.last_used > cfg.idle_s:
            return 0
        return min(max(self.peak, 1) + (1 if self.reusable else 0), cfg.max_ready)


class Pool:
    def __init__(
        self,
        backend: Backend,
        config: PoolConfig | None = None,
        metrics: Metrics | None = None,
        snapshot_dir: Path | None = None,
        on_generation: GenerationListener | None = None,
        on_rollback: RollbackReport | None = None,
    ):
        self.backend = backend
        self.on_rollback = on_rollback
        self.config = config or PoolConfig()
        self.metrics = metrics or Metrics()
        self.snapshot_dir = snapshot_dir
        self.on_generation = on_generation
        self.pools: dict[str, FunctionPool] = {}
        self.cond = threading.Condition()
        self.stopping = False
        self.metrics.gauge("usetl_pool_ready_instances", "Ready instances per function.",
                           lambda: self._gauge(lambda p: len(p.ready)))
        self.metrics.gauge("usetl_pool_busy_instances", "Instances running an invocation.",
                           lambda: self._gauge(lambda p: p.busy))
        self.metrics.gauge("usetl_pool_templates", "Templates in memory.",
                           lambda: {(): sum(p.template is not None for p in self._all())})
        self.metrics.gauge("usetl_pool_memory_bytes", "Memory held by pools, as measured.",
                           lambda: {(): self.memory_bytes()})
        # Set when a pool may need instances made or closed now (not at every notify of `cond`:
        # a maintenance round per invocation costs more than the invocation's own bookkeeping).
        self.wake = threading.Event()
        self.recycler = ThreadPoolExecutor(RECYCLERS, "usetl-recycle")
        self.loop_recycling: set[asyncio.Task] = set()  # rollbacks awaited on an event loop
        self.learning = ThreadPoolExecutor(1, "usetl-learn")  # next generations, one at a time
        self.maintainer = threading.Thread(target=self._maintain, name="pool", daemon=True)
        self.maintainer.start()

    def _all(self) -> list[FunctionPool]:
        with self.cond:
            return list(self.pools.values())

    def wait_settled(self, timeout_s: float) -> bool:
        """Wait until no instance is serving or being rolled back (a benchmark starts each
        timed run from a quiet host); False if that took longer than timeout_s."""
        with self.cond:  # a Condition's lock is reentrant: _all() may take it again
            return self.cond.wait_for(
                lambda: not any(p.busy or p.recycling for p in self._all()), timeout_s)

    def _gauge(self, read) -> dict:
        return {(("function", p.spec.key),): read(p) for p in self._all()}

    # memory

    def memory_bytes(self) -> int:
        """The backend's overhead, the templates and every live instance as measured, and
        the child processes of running invocations: a rolled-back instance keeps the pages
        its invocation touched, so no estimate will do."""
        total = self.backend.overhead_bytes()
        with self.cond:
            for p in self.pools.values():
                if p.template is not None:
                    total += p.template.memory_bytes
                total += sum(n for instance, n in p.sizes.items() if not instance.closed)
                total += sum(p.children_sizes.values())
        return total

    def _measure_children(self, pool: FunctionPool) -> None:
        """The memory of the child processes each running invocation has now."""
        with self.cond:
            busy = [i for i, state in pool.held.items() if state == "busy"]
        sizes = {instance: instance.children_bytes() for instance in busy}
        with self.cond:
            pool.children_sizes = {i: n for i, n in sizes.items()
                                   if n and pool.held.get(i) == "busy"}

    def _counted(self, pool: FunctionPool, instance: Instance) -> None:
        """A new instance: counted as the function's others (or the backend's estimate) until
        its first measure."""
        with self.cond:
            pool.sizes[instance] = pool.instance_bytes(self.backend)
            pool.unmeasured.add(instance)

    def _check_growth(self, pool: FunctionPool, instance: Instance) -> None:
        """After a rollback: measure it again if its resident size moved since its measure."""
        resident = instance.resident_bytes()
        with self.cond:
            last = pool.measured.get(instance)
            if last is None or last[1] is None or resident is None or abs(
                    resident - last[1]) >= MOVED_BYTES:
                pool.unmeasured.add(instance)

    def _measure_due(self) -> None:
        """Measure the instances that are new, have grown, or were measured long ago."""
        now = time.monotonic()
        for pool in self._all():
            with self.cond:
                due = set(pool.unmeasured) | {i for i, (when, _) in pool.measured.items()
                                              if now - when > REMEASURE_S}
                pool.unmeasured = weakref.WeakSet()
            for instance in due:
                if instance.closed:
                    continue
                resident, size = instance.resident_bytes(), instance.own_bytes()
                with self.cond:
                    pool.sizes[instance] = size if size is not None else 0
                    pool.measured[instance] = (time.monotonic(), resident)

    # the function's life

    def add(self, spec: FunctionSpec, concurrency: int, queue: int,
            template: FunctionTemplate | None = None) -> None:
        """Make a function version servable, with the template its deploy already started.

        `concurrency` invocations run at once; `queue` more wait; beyond that they are refused.
        """
        pool = self._new_pool(spec, concurrency, queue)
        pool.template = template
        if template is not None:
            self.metrics.templates_started.inc()
        with self.cond:
            self.pools[spec.key] = pool
        self._make_room(exclude=spec.key)

    def _new_pool(self, spec: FunctionSpec, concurrency: int, queue: int) -> FunctionPool:
        pool = FunctionPool(spec, concurrency, queue, self.config.learn_after)
        saved = self._snapshot_path(spec.key)
        if saved is not None and saved.is_dir() and any(saved.iterdir()):
            pool.snapshot = saved  # from before a restart of the server
        return pool

    def has(self, key: str) -> bool:
        with self.cond:
            return key in self.pools

    def retire(self, key: str) -> None:
        """Close a version once no invocation uses it (a new version is live, or it was deleted)."""
        with self.cond:
            pool = self.pools.get(key)
            if pool is None:
                return
            pool.retired = True
            self.cond.notify_all()
        self._close_if_unused(pool)

    def _snapshot_path(self, key: str) -> Path | None:
        return None if self.snapshot_dir is None else self.snapshot_dir / key.replace("/", "_")

    def _save(self, pool: FunctionPool, template: FunctionTemplate) -> None:
        """Snapshot the template if the backend can and it has none yet (best effort)."""
        path = self._snapshot_path(pool.spec.key)
        if path is None or pool.snapshot is not None:
            return
        try:
            template.save(path)
            pool.snapshot = path
        except NotImplementedError:
            pass
        except UsetlError as e:
            log.warning("could not snapshot %s: %s", pool.spec.key, e)
            shutil.rmtree(path, ignore_errors=True)

    def _close_if_unused(self, pool: FunctionPool, keep_snapshot: bool = False) -> None:
        with self.cond:
            if (pool.busy or pool.waiting or pool.recycling
                    or self.pools.get(pool.spec.key) is not pool):
                return
            del self.pools[pool.spec.key]
            ready, pool.ready = list(pool.ready), deque()
        for instance in ready:
            instance.close()
        for old in pool.draining.values():
            old.close()
        pool.draining = {}
        if pool.template is not None:
            if keep_snapshot:
                self._save(pool, pool.template)
            pool.template.close()
            pool.template = None
        if pool.snapshot is not None and not keep_snapshot:
            shutil.rmtree(pool.snapshot, ignore_errors=True)

    def start_template(self, spec: FunctionSpec) -> FunctionTemplate:
        """A new template for a spec (the deploy's load check; may raise FunctionLoadError)."""
        template = self.backend.template(spec)
        return template

    # invocations

    def invoke(self, key: str, event: Any, context: dict,
               on_start: Callable[[], None] | None = None,
               define: Definition | None = None) -> InvocationResult:
        """Run one invocation; `on_start` is called once it has an instance (not queued).

        A version this pool has not seen (the server restarted; an accepted invocation of a
        replaced version) is added from `define`, atomically with taking its slot.
        """
        return self.invoke_stage(key, event, context, define, on_start=on_start)[0]

    def invoke_stage(self, key: str, event: Any, context: dict, define: Definition | None,
                     files: HandOff | None = None, keep_files: bool = False,
                     on_start: Callable[[], None] | None = None,
                     ) -> tuple[InvocationResult, HandOff | None]:
        """invoke(), as a pipeline stage: with the previous stage's `files` (still the
        caller's) in its host region, and with `keep_files`, the files it wrote."""
        begun = time.perf_counter()
        pool = self._acquire(key, define)
        started = time.perf_counter()
        phases = {"queue_ms": (started - begun) * 1e3}
        instance: Instance | None = None
        kept = None
        sent = round_trip = None
        try:
            instance = self._instance(pool, phases)
            if on_start is not None:
                on_start()
            sent = time.perf_counter()
            # As on the loop (invoke_async), the rollback goes with the call: the recycler
            # thread only waits for its end.
            outcome = instance.invoke(event, context, pool.spec.timeout_s, files, keep_files,
                                      pool.slots, self._rolls_back(pool) and files is None
                                      and not keep_files)
            round_trip = (time.perf_counter() - sent) * 1e3
            kept = instance.take_files() if keep_files else None
            if kept is not None:
                outcome.io.copied_bytes += kept.copied_bytes
        except (BackendError, HandOffError) as e:
            outcome = InvocationResult.failed(SANDBOX_ERROR, str(e),
                                              (time.perf_counter() - started) * 1e3)
        finally:
            self._release(pool, instance, context.get("request_id"))
        self._finished(pool, outcome, _phases(phases, outcome, started, sent, round_trip),
                       started)
        return outcome, kept

    async def invoke_async(self, key: str, event: Any, context: dict) -> InvocationResult | None:
        """invoke() awaited on an event loop where nothing need wait: the version is served
        here, a slot is free and an instance is ready with no invocation queued before it.
        Otherwise None, and invoke() on a thread queues, forks or refuses as it does."""
        begun = time.perf_counter()
        with self.cond:
            pool = self.pools.get(key)
            if pool is None or not pool.ready or pool.waiting or not pool.slots.take():
                return None
            self._admit(pool)
            instance = self._checkout(pool)
        started = sent = time.perf_counter()
        round_trip = None
        # The rollback goes with the call where it will be wanted: the instance starts it
        # once it has answered, and no thread of ours is woken to ask for it.
        rollback = self._rolls_back(pool)
        try:
            outcome = await instance.invoke_async(event, context, pool.spec.timeout_s,
                                                  pool.slots, rollback)
            round_trip = (time.perf_counter() - sent) * 1e3
        except BackendError as e:
            rollback = False
            outcome = InvocationResult.failed(SANDBOX_ERROR, str(e),
                                              (time.perf_counter() - started) * 1e3)
        finally:
            self._release(pool, instance, context.get("request_id"), rollback)
        phases = {"queue_ms": (started - begun) * 1e3}
        self._finished(pool, outcome, _phases(phases, outcome, started, sent, round_trip),
                       started)
        return outcome

    def _rolls_back(self, pool: FunctionPool) -> bool:
        """Whether its instances are rolled back after each invocation."""
        return self.config.reuse and pool.reusable and pool.spec.reuse != REUSE_WARM

    def _finished(self, pool: FunctionPool, outcome: InvocationResult,
                  phases: dict[str, float], started: float) -> None:
        """The invocation's phases, what it imported, and its metrics."""
        outcome.phases = phases
        if outcome.error is None:
            self._learn(pool, outcome.imported)
        key = pool.spec.key
        status = "ok" if outcome.error is None else "error"
        self.metrics.invocations.inc(function=key, status=status)
        if outcome.error is not None:
            self.metrics.errors.inc(function=key, type=outcome.error.type)
        self.metrics.latency.observe(time.perf_counter() - started, function=key)

    def _acquire(self, key: str, define: Definition | None = None) -> FunctionPool:
        with self.cond:
            pool = self.pools.get(key)
            if pool is None and define is not None:
                spec, concurrency, queue, live = define()
                pool = self.pools[key] = self._new_pool(spec, concurrency, queue)
                pool.retired = not live  # it serves this invocation, then goes
            if pool is None:
                raise PoolError(f"function version {key} is not loaded")
            if not pool.slots.take():
                if pool.waiting >= pool.queue:
                    self.metrics.rejected.inc(function=key)
                    raise ConcurrencyLimit(
                        f"{pool.busy} invocations and {pool.children()} of their child "
                        f"processes are running (the limit, {pool.concurrency}) and "
                        f"{pool.waiting} are queued (the queue's limit)"
                    )
                pool.waiting += 1
                try:
                    while not pool.slots.take():
                        # A slot comes back as a byte in the pipe, written by this pool at
                        # an invocation's end or by a monitor at a child's: wait for it
                        # without the lock (every waiter wakes; one gets it).
                        self.cond.release()
                        try:
                            pool.slots.wait()
                        finally:
                            self.cond.acquire()
                finally:
                    pool.waiting -= 1
            self._admit(pool)
            return pool

    def _admit(self, pool: FunctionPool) -> None:
        """An invocation took a slot (the pool's lock held)."""
        pool.busy += 1
        pool.invocations += 1
        pool.last_used = time.monotonic()
        if pool.in_use() > pool.peak:  # more instances to keep ready
            pool.peak = pool.in_use()
            self.wake.set()

    def _instance(self, pool: FunctionPool, phases: dict[str, float]) -> Instance:
        with self.cond:
            deadline = time.monotonic() + RECYCLE_WAIT_S
            # A rollback under way is much cheaper than a new instance: wait for it briefly.
            while not pool.ready and pool.recycling and pool.reusable:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            if pool.ready:
                return self._checkout(pool)
        instance = self._fork(pool, out=True, phases=phases)
        with self.cond:
            pool.held[instance] = "busy"
        return instance

    def _checkout(self, pool: FunctionPool) -> Instance:
        """A ready instance, now busy (the pool's lock held)."""
        instance = pool.take_ready()
        pool.out[pool.generations.get(instance, 0)] += 1
        pool.held[instance] = "busy"
        return instance

    def _fork(self, pool: FunctionPool, out: bool = False,
              phases: dict[str, float] | None = None) -> Instance:
        """A new instance; `out`: for an invocation, so its template is kept until it is back
        (`phases` then gets the time it took)."""
        # Under the template lock: a generation swap waits for a fork from the old template.
        with pool.template_lock:
            template = self._template(pool, phases)
            forked = time.perf_counter()
            instance = template.fork()
            if phases is not None:
                phases["fork_ms"] = (time.perf_counter() - forked) * 1e3
            generation = pool.generations[instance] = pool.spec.generation
            if out:
                with self.cond:
                    pool.out[generation] += 1
        self.metrics.instances_created.inc()
        self._counted(pool, instance)
        return instance

    def _template(self, pool: FunctionPool,
                  phases: dict[str, float] | None = None) -> FunctionTemplate:
        """The pool's template, started or restored if it is not in memory (template lock held;
        `phases` gets the time it took)."""
        if pool.template is None:
            self._make_room(exclude=pool.spec.key)
            begun = time.perf_counter()
            phase = "start_ms"
            if pool.snapshot is not None:
                try:
                    pool.template = self.backend.restore(pool.spec, pool.snapshot)
                    self.metrics.templates_restored.inc()
                    phase = "restore_ms"
                except (BackendError, NotImplementedError) as e:
                    log.warning("snapshot of %s refused (%s); starting it afresh",
                                pool.spec.key, e)
                    shutil.rmtree(pool.snapshot, ignore_errors=True)
                    pool.snapshot = None
            if pool.template is None:
                pool.template = self.backend.template(pool.spec)
            self.metrics.templates_started.inc()
            if phases is not None:
                phases[phase] = (time.perf_counter() - begun) * 1e3
        return pool.template

    def _release(self, pool: FunctionPool, instance: Instance | None,
                 request_id: str | None, rolling_back: bool = False) -> None:
        """The invocation is over: roll its instance back off the request's path
        (`rolling_back`: its call started the rollback, awaited on the running loop)."""
        with self.cond:
            pool.busy -= 1
            pool.slots.give()
            if instance is not None:
                pool.children_sizes.pop(instance, None)
                pool.recycling += 1
                pool.held[instance] = "recycling"
            self.cond.notify_all()
        if instance is None:
            self.wake.set()  # it failed to get one: the pool may have none ready
            self._report_rollback(request_id, None)
            if pool.retired:
                self._close_if_unused(pool)
            return
        if rolling_back:
            task = asyncio.get_running_loop().create_task(
                self._recycle_on_loop(pool, instance, request_id))
            self.loop_recycling.add(task)  # held: the loop keeps only weak references
            task.add_done_callback(self.loop_recycling.discard)
            return
        if pool.spec.reuse == REUSE_WARM:
            self._recycle(pool, instance, request_id)  # nothing to roll back: ready at once
            return
        try:
            self.recycler.submit(self._recycle, pool, instance, request_id)
        except RuntimeError:  # shutting down
            instance.close()
            with self.cond:
                pool.held.pop(instance, None)
            self._report_rollback(request_id, None)

    def _report_rollback(self, request_id: str | None, ms: float | None) -> None:
        if self.on_rollback is not None and request_id is not None:
            self.on_rollback(request_id, ms)

    async def _recycle_on_loop(self, pool: FunctionPool, instance: Instance,
                               request_id: str | None) -> None:
        """_recycle() of an instance whose call started its rollback, all on the loop: the
        rollback awaited, and the rest blocks nothing."""
        begun = time.perf_counter()
        ms = None
        try:
            if not instance.closed:
                await instance.rolled_back_async()
                ms = (time.perf_counter() - begun) * 1e3
        except RollbackImpossible:
            pool.reusable = False
        except BackendError as e:
            log.warning("rollback failed for %s: %s", pool.spec.key, e)
            instance.close()
        self._recycle(pool, instance, request_id, ms)

    def _recycle(self, pool: FunctionPool, instance: Instance, request_id: str | None,
                 rolled_back_ms: float | None = None) -> None:
        """`rolled_back_ms`: the time of the rollback that ran already (_recycle_on_loop)."""
        rollback_ms = None
        keep = False
        if pool.retired or not pool.current(instance) or instance.closed:
            instance.close()  # closed already: its guest ended, which says nothing of others
        elif pool.spec.reuse == REUSE_WARM:
            keep = self._keep_warm(pool, instance)
        elif self.config.reuse:
            try:
                rollback_ms = rolled_back_ms
                if rollback_ms is None:
                    begun = time.perf_counter()
                    instance.rollback()
                    rollback_ms = (time.perf_counter() - begun) * 1e3
                self.metrics.rollbacks.inc()
                self._check_growth(pool, instance)
                keep = True
            except RollbackImpossible:
                pool.reusable = False
            except BackendError as e:
                log.warning("rollback failed for %s: %s", pool.spec.key, e)
                instance.close()
        else:
            instance.close()
        with self.cond:
            pool.recycling -= 1
            pool.out[pool.generations.get(instance, 0)] -= 1
            pool.held.pop(instance, None)
            # A generation swap may have come while it was rolled back.
            stale = keep and not pool.current(instance)
            if keep and not stale:
                pool.ready.append(instance)
            self.cond.notify_all()
        if stale:
            instance.close()
        if not keep or stale:  # one instance fewer
            self.wake.set()
        self._report_rollback(request_id, rollback_ms)
        self._drain(pool)
        if pool.retired:
            self._close_if_unused(pool)

    def _keep_warm(self, pool: FunctionPool, instance: Instance) -> bool:
        """Lambda's semantics, opted into: serve again as it is, up to WARM_REUSE_CALLS calls."""
        calls = pool.warm_calls.get(instance, 0) + 1
        if instance.closed or calls >= WARM_REUSE_CALLS:
            pool.warm_calls.pop(instance, None)
            instance.close()
            return False
        pool.warm_calls[instance] = calls
        return True

    # learned templates

    def _learn(self, pool: FunctionPool, imported: list[str]) -> None:
        """Count an invocation's imports; build the next generation once they are stable."""
        with self.cond:
            if pool.retired or self.stopping:
                return
            modules = pool.learner.observe(imported)
        if modules is None:
            return
        try:
            self.learning.submit(self._next_generation, pool, modules)
        except RuntimeError:  # shutting down
            pass

    def _next_generation(self, pool: FunctionPool, modules: list[str]) -> None:
        """Build the template that imports `modules` (off the request path), then swap it in."""
        spec = replace(pool.spec, generation=pool.spec.generation + 1, learned=modules)
        try:
            template = self.backend.template(spec)
        except UsetlError as e:
            error = e.error if isinstance(e, FunctionLoadError) else ErrorInfo(SANDBOX_ERROR,
                                                                                str(e))
            log.warning("generation %d of %s failed: %s", spec.generation, spec.key, e)
            with self.cond:
                pool.learner.failed(modules)
                pool.learn_error = error
                generation = pool.generation()
            self._tell(pool, generation)
            return
        if not self._swap(pool, spec, template):
            template.close()
            return
        self.metrics.templates_started.inc()
        log.info("generation %d of %s serves, importing %s", spec.generation, spec.key,
                 ", ".join(modules))

    def adopt(self, spec: FunctionSpec, template: FunctionTemplate) -> bool:
        """Serve a generation of a version learned elsewhere (another host's, shipped) as
        one learned here is swapped in; False if the version is not served here."""
        with self.cond:
            pool = self.pools.get(spec.key)
        if pool is None or not self._swap(pool, spec, template):
            return False
        self.metrics.templates_started.inc()
        return True

    def serving(self, key: str) -> tuple[FunctionSpec, FunctionTemplate | None] | None:
        """The spec of a version's generation that serves (its template, if in memory)."""
        with self.cond:
            pool = self.pools.get(key)
            return None if pool is None else (pool.spec, pool.template)

    def _swap(self, pool: FunctionPool, spec: FunctionSpec, template: FunctionTemplate) -> bool:
        """Serve from the new generation's template; False if the version is gone meanwhile."""
        with pool.template_lock:  # no fork from the old template is under way
            with self.cond:
                if pool.retired or self.stopping:
                    return False
                old, pool.template = pool.template, template
                ready, pool.ready = list(pool.ready), deque()
                snapshot, pool.snapshot = pool.snapshot, None
                pool.spec = spec
                pool.learner.built(spec.learned)
                pool.learn_error = None
                generation = pool.generation()
                self.cond.notify_all()
        # Nothing can reach the old generation now: its idle instances go, and its template
        # once the invocations running on it are over (a zygote takes its children with it).
        for instance in ready:
            instance.close()
        if old is not None:
            with self.cond:
                pool.draining[spec.generation - 1] = old
            self._drain(pool)
        if snapshot is not None:
            shutil.rmtree(snapshot, ignore_errors=True)
        self.wake.set()  # ready instances of the new generation
        self._tell(pool, generation)
        return True

    def _drain(self, pool: FunctionPool) -> None:
        """Close the old generations' templates that no running invocation uses any more."""
        with self.cond:
            done = [pool.draining.pop(g) for g in list(pool.draining) if pool.out[g] <= 0]
        for template in done:
            template.close()

    def _tell(self, pool: FunctionPool, generation: Generation) -> None:
        if self.on_generation is not None:
            try:
                self.on_generation(pool.spec.key, generation)
            except UsetlError as e:
                log.warning("could not record generation %d of %s: %s", generation.number,
                            pool.spec.key, e)

    # background work: refill, scale to zero, memory budget

    def _maintain(self) -> None:
        next_measure = time.monotonic()
        while not self.stopping:
            self.wake.wait(timeout=MEASURE_EVERY_S)
            self.wake.clear()
            if self.stopping:
                return
            if time.monotonic() >= next_measure:
                self._measure_due()
                next_measure = time.monotonic() + MEASURE_EVERY_S
            for pool in self._all():
                try:
                    self._measure_children(pool)
                    self._balance(pool)
                except UsetlError as e:
                    log.warning("pool %s: %s", pool.spec.key, e)
            self._make_room(exclude=None)

    def _balance(self, pool: FunctionPool) -> None:
        cfg = self.config
        now = time.monotonic()
        if now - pool.peak_started > cfg.recent_s:
            with self.cond:
                pool.peak, pool.peak_started = pool.in_use(), now
        # An evicted template comes back for an invocation, not to refill a pool.
        target = pool.target_ready(cfg) if pool.template is not None else 0
        while True:
            with self.cond:
                excess = len(pool.ready) - target
                surplus = pool.take_surplus() if excess > 0 else None
            if surplus is None:
                break
            surplus.close()
        while not self.stopping:
            with self.cond:
                # Busy instances come back after a rollback, unless the backend cannot roll back.
                coming_back = pool.busy + pool.recycling if pool.reusable else 0
                missing = target - len(pool.ready) - coming_back
                if (missing <= 0 or pool.retired
                        or self.memory_bytes() + pool.instance_bytes(self.backend)
                        > cfg.memory_budget_bytes):
                    return
            instance = self._fork(pool)
            with self.cond:
                stale = not pool.current(instance)
                if not stale:
                    pool.add_fresh(instance)
                self.cond.notify_all()
            if stale:
                instance.close()

    def _make_room(self, exclude: str | None) -> None:
        """Evict the templates of idle functions, least recently used first, to fit the budget."""
        budget = self.config.memory_budget_bytes
        if self.memory_bytes() <= budget:
            return
        idle = sorted(
            (p for p in self._all()
             if p.spec.key != exclude and p.busy == 0 and p.template is not None),
            key=lambda p: p.last_used,
        )
        for pool in idle:
            if self.memory_bytes() <= budget:
                return
            self._evict(pool)

    def _evict(self, pool: FunctionPool) -> None:
        with pool.template_lock:
            with self.cond:
                if pool.busy or pool.template is None:
                    return
                ready, pool.ready = list(pool.ready), deque()
                template = pool.template
            for instance in ready:
                instance.close()
            # Still the pool's while it is saved: an eviction of it by another thread waits
            # for the snapshot instead of finding neither a template nor a snapshot.
            self._save(pool, template)
            with self.cond:
                pool.template = None
            template.close()
        self.metrics.evictions.inc()
        log.info("evicted the template of %s", pool.spec.key)

    def status(self) -> list[dict]:
        return [
            {
                **self._status(p),
                "instances": self._instances(p),
            }
            for p in self._all()
        ]

    def _instances(self, pool: FunctionPool) -> list[dict]:
        """Each instance of a version, its state and its host memory (None: not visible)."""
        with self.cond:
            states = [(i, "ready") for i in pool.ready] + list(pool.held.items())
        return [{"id": instance.instance_id, "state": state, "memory": instance.memory()}
                for instance, state in states]

    def _status(self, p: FunctionPool) -> dict:
        return {
            "function": p.spec.key,
            "template": p.template is not None,
            "snapshot": p.snapshot is not None,
            "ready": len(p.ready),
            "busy": p.busy,
            "children": p.children(),
            "children_bytes": sum(p.children_sizes.values()),
            "queued": p.waiting,
            "concurrency_limit": p.concurrency,
            "target_ready": p.target_ready(self.config),
            "idle_s": round(time.monotonic() - p.last_used, 1),
            "template_bytes": p.template.memory_bytes if p.template is not None else 0,
            "generation": p.spec.generation,
            "learned": list(p.spec.learned),
            "learn_error": None if p.learn_error is None else p.learn_error.as_dict(),
            "learning": p.learner.building,  # the next generation is being built
        }

    def close(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.wake.set()
        self.maintainer.join(timeout=10)
        self.learning.shutdown(wait=True, cancel_futures=True)
        self.recycler.shutdown(wait=True)
        for pool in self._all():
            pool.retired = True
            with self.cond:
                pool.busy = pool.waiting = pool.recycling = 0
            # Snapshots stay: after a restart the templates come back from them.
            self._close_if_unused(pool, keep_snapshot=True)


def _phases(measured: dict[str, float], outcome: InvocationResult, started: float,
            sent: float | None, round_trip: float | None) -> dict[str, float]:
    """The invocation's phases (PHASES, but rollback's, which comes after the answer)."""
    phases = dict(measured)
    made = sum(phases.get(k, 0.0) for k in ("start_ms", "restore_ms", "fork_ms"))
    etl = outcome.io.wall_s * 1e3
    if sent is None or round_trip is None:  # the sandbox failed before or while it ran
        phases["dispatch_ms"] = max(0.0, outcome.total_ms - made)
        return phases
    # The monitor's total time includes the guest's ETL requests; the rest of the round trip
    # is the message to the instance and back.
    phases["dispatch_ms"] = max(0.0, (sent - started) * 1e3 - made) + max(
        0.0, round_trip - outcome.total_ms)
    phases["guest_ms"] = max(0.0, outcome.total_ms - etl)
    phases["etl_ms"] = etl
    return phases
