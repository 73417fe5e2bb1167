"""`usetl worker`: one per host. It holds templates and clones (the existing pool and
backend), pulls invocations from JetStream for every function and runs them.

Delivery: a message is acknowledged only after the invocation's record is written; while
it runs the worker tells JetStream it is in progress, so a worker that dies (kill -9) has
its message redelivered after the ack wait. An async invocation whose record is already
finished is not run again (its earlier run completed; only the ack was lost); one
delivered more often than its consumer's runs allow (MAX_RUNS by default) goes to the
dead letters, its record failed with
DeadLetter. A sync invocation is at most once: redelivered, it answers its caller that the
worker running it died (the effects of a half-run call are unknown). A warm sync call is
served on the bus's loop, as the single host serves one (Platform.run_on_loop); the rest
run on the worker's threads.

Placement is pull: a worker that holds the live version's template pulls at once; one
that does not pulls only when messages are waiting (then it fetches the code bundle and
builds the template), so warm workers take the work and several warm ones share it.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgspec
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import FetchTimeoutError

from usetl.errors import UsetlError
from usetl.image.modstore import ModuleStore
from usetl.invocation import (
    FUNCTION_DELETED,
    PLATFORM,
    PLATFORM_ERROR,
    ErrorInfo,
    InvocationResult,
)
from usetl.libos.handoff import HandOff, HandOffError
from usetl.platform.backend import (
    BackendError,
    FunctionLoadError,
    FunctionSpec,
    FunctionTemplate,
)
from usetl.platform.backends import choose_backend
from usetl.platform.learning import Generation
from usetl.platform.pool import ConcurrencyLimit, PoolConfig
from usetl.platform.registry import FINISHED, Registry, Version, invocation_record
from usetl.platform.service import ASYNC_RETRY_S, RETRIED_KINDS, Platform

from . import bundles, membership, templates
from .bus import (
    BUILD_SUBJECT,
    PING_SUBJECT,
    PULL_WAIT_S,
    REPLY_HEADER,
    RING_SUBJECTS,
    STREAM,
    Bus,
    callback_subject,
    dead_subject,
    invoke_subject,
    keep_in_progress,
    ring_durable,
)
from .config import ClusterConfig
from .handoffs import HandOffHolder
from .messages import Build, Built, CallbackDue, Invocation, decode, encode

log = logging.getLogger(__name__)
DEAD_LETTER = "DeadLetter"  # the error type of an invocation no worker could finish
# A pull request sent for a ring (beyond the slots) waits this long: another host may have
# taken the message.
RING_PULL_WAIT_S = 0.25
COLD_POLL_S = 0.1  # how often a worker without the template looks for waiting messages
DISCOVER_S = 0.5  # how often a worker looks for newly deployed functions
# What a stopped worker (SIGTERM) gives the invocations it runs to answer and ack, as
# Kubernetes gives a pod: one still running after that is redelivered to another host.
STOP_GRACE_S = 30.0


@dataclass(frozen=True)
class Delivery:
    """What becomes of an async invocation's message once its delivery is done."""

    dead_letter: bool = False  # to the dead letters (its record says so)
    retry_in_s: float | None = None  # published again after this back-off
    attempt: int = 0  # the run that failed, when retried
    callback: bool = False  # its record is final and has a callback still to deliver


class WorkerPlatform(Platform):
    """The platform on a worker host: versions come from the shared registry, their files
    from the object store (fetched and checked once per host), their learned template
    generations from whichever host learned them (templates.py)."""

    def __init__(self, bus: Bus, host: str, executor: ThreadPoolExecutor, *args: Any,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.bus = bus
        self.host = host
        self.executor = executor
        self.specs: dict[str, FunctionSpec] = {}  # by key, generation 1
        self.origins: dict[str, str] = {}  # version key -> how its template came here
        self.loading: dict[str, threading.Lock] = {}

    def ensure_loaded(self, version: Version | Build, key: str) -> FunctionTemplate | None:
        """The version servable here, at the template generation the registry names: its
        template fetched from another host, or built (returned; None when it was here
        already). Raises UsetlError if neither works."""
        with self.lock:
            loading = self.loading.setdefault(key, threading.Lock())
        with loading:
            if self.pool.has(key):
                return None
            if isinstance(version, Version):  # a row read earlier may name an old generation
                version = self.registry.version_by_id(version.id) or version
            spec = self.spec(version, key)
            template, how = templates.obtain(self, spec)
            self.pool.add(spec, version.concurrency, version.queue, template)
            self.origins[key] = how
            log.info("template of %s generation %d %s", key, spec.generation, how)
            return template

    def catch_up(self, version: Version) -> None:
        """Serve the generation the registry names for a version served here at another
        (learned by another host): fetched, or built here, and swapped in."""
        with self.lock:
            loading = self.loading.setdefault(version.key, threading.Lock())
        with loading:
            spec = self.spec(version)
            template, how = templates.obtain(self, spec)
            if self.pool.adopt(spec, template):
                self.origins[version.key] = how
                log.info("template of %s generation %d %s", version.key, spec.generation, how)
            else:
                template.close()

    def behind(self, version: Version) -> bool:
        """Whether this host serves the version at another generation than the registry's
        (an older one, or the same number learned with other modules: a lost claim)."""
        serving = self.pool.serving(version.key)
        if serving is None:
            return False
        spec = serving[0]
        return (version.generation > spec.generation or version.generation == spec.generation
                and version.learned != spec.learned)

    def _record_generation(self, key: str, generation: Generation) -> None:
        """The pool serves a new generation (learned here, or caught up) or failed to learn
        one. One learned here is shipped and its number claimed before the registry names
        it; one whose number another host claimed first is not recorded (this host then
        catches up to that one)."""
        version = self._version_of(key)
        if version is None or generation.number < version.generation:
            return
        if generation.error is not None:
            self.registry.set_generation(version.id, version.generation, version.learned,
                                         generation.error)
            return
        serving = self.pool.serving(key)
        if generation.number == version.generation or serving is None or serving[1] is None:
            return  # caught up to the registry's (or gone meanwhile)
        if templates.ship(self, *serving):
            self.registry.set_generation(version.id, generation.number, generation.modules,
                                         None)

    def _version_of(self, key: str) -> Version | None:
        tenant_id, name, rest = key.split("/", 2)
        return self.registry.version(int(tenant_id), name, int(rest.split("-", 1)[0]))

    def spec(self, version: Version | Build, version_key: str | None = None) -> FunctionSpec:
        """The version's spec with its files on this host (fetched if missing), at the
        generation a registry row names."""
        key = version_key or version.key
        if key not in self.specs:
            self.specs[key] = self._first_spec(version, key)
        spec = self.specs[key]
        if isinstance(version, Version) and version.generation > 1:
            spec = replace(spec, generation=version.generation, learned=list(version.learned))
        return spec

    def _first_spec(self, version: Version | Build, key: str) -> FunctionSpec:
        manifest = self.bus.run(bundles.manifest(self.bus, key))
        code_dir = self.bus.run(bundles.materialise(
            self.bus, manifest.code, self.code_root / key.replace("/", "_")))
        module_dirs = [self.bus.run(bundles.materialise(self.bus, digest, self.modules.root / n))
                       for n, digest in manifest.modules.items()]
        return FunctionSpec(
            key=key, code_dir=code_dir, handler=version.handler, module_dirs=module_dirs,
            env=version.env, memory_mib=version.memory_mib, timeout_s=version.timeout_s,
            allow=version.allow, warmup=version.warmup, reuse=version.reuse)

    def _definition(self, version: Version):
        spec = self.spec(version)
        return lambda: (spec, version.concurrency, version.queue, True)

    def template_state(self) -> tuple[list[str], dict[str, int]]:
        """The keys whose templates are in memory, and each served key's generation."""
        status = self.pool.status()
        return ([s["function"] for s in status if s["template"]],
                {s["function"]: s["generation"] for s in status})


class Worker:
    def __init__(self, config: ClusterConfig, name: str, state_dir: Path,
                 backend_name: str | None = None, slots: int = 2,
                 memory_budget_mib: int = 4096, module_dir: Path | None = None,
                 pull_wait_s: float = PULL_WAIT_S):
        self.name = name
        self.slots = slots
        self.pull_wait_s = pull_wait_s
        self.registry = Registry(config.database_url)
        modules = ModuleStore(module_dir or state_dir / "modules")
        backend = choose_backend(backend_name, hide=[state_dir, modules.root.parent])
        self.bus = Bus(config, f"worker-{name}")
        # Slots for invocations, one for builds, one for shipping snapshots.
        self.executor = ThreadPoolExecutor(slots + 2, thread_name_prefix=f"worker-{name}")
        self.platform = WorkerPlatform(
            self.bus, name, self.executor, backend, state_dir, modules,
            PoolConfig(memory_budget_bytes=memory_budget_mib << 20), registry=self.registry)
        # On the bus's loop only: slots not taken by a pull request or the message it
        # brought (below 0 while pull requests sent for rings are out), and an event set
        # and replaced whenever that, `fetching` or `rung` changes.
        self.free = slots
        self.changed = asyncio.Event()
        self.rung: set[str] = set()  # durables whose message was stored since their last pull
        self.beyond = 0  # pull requests out beyond the slots (of `fetching`)
        # Pullers waiting for a slot, first come first served: one whose pull request just
        # expired goes behind the others, or it would take its slot again at once.
        self.turns: collections.deque[str] = collections.deque()
        self.running = 0
        self.fetching = 0  # pull requests waiting at the server: a drain is done at 0
        self.draining = False
        self.beat_now = asyncio.Event()  # used on the bus's loop only (membership.py)
        self.pullers: dict[str, asyncio.Task] = {}
        self.handling: set[asyncio.Task] = set()  # messages being run, answered and acked
        self.warm: set[str] = set()  # durables whose live version's template is here
        self.catching_up: set[str] = set()  # keys whose registry generation is being fetched
        self.versions: dict[int, Version] = {}  # by id, as sync calls name them
        self.stopped = threading.Event()
        self.handoffs = HandOffHolder(self.bus, name)

    # the loop's side

    def serve(self) -> None:
        """Run until stop(): build requests, pulls, heartbeats."""
        self.executor.submit(self._prepare_restore)
        main = self.bus.spawn(self._main())
        self.stopped.wait()
        main.cancel()
        for task in list(self.pullers.values()):
            self.bus.loop.call_soon_threadsafe(task.cancel)

    def _prepare_restore(self) -> None:
        """What restoring a shipped template needs, started now: not on the first call of
        a function this host lacks."""
        try:
            self.platform.backend.prepare_restore()
        except BackendError:
            log.warning("could not prepare restores (the first restore tries again)",
                        exc_info=True)

    def stop(self) -> None:
        self.stopped.set()

    def close(self) -> None:
        """Stop pulling, let the messages in hand run, answer and ack (up to STOP_GRACE_S:
        a call served on the loop would otherwise die with it and run again elsewhere),
        then close."""
        self.stop()
        self.bus.run(self._finish_handling(STOP_GRACE_S))
        self.executor.shutdown(wait=True)
        self.handoffs.close()
        self.bus.close()
        self.platform.close()

    async def _finish_handling(self, grace_s: float) -> None:
        if self.handling:
            print(f"usetl: worker {self.name} stopping: finishing {len(self.handling)} "
                  "invocations", flush=True)
            await asyncio.wait(list(self.handling), timeout=grace_s)

    async def _main(self) -> None:
        await self.bus.nc.subscribe(BUILD_SUBJECT, queue="workers", cb=self._on_build)
        await self.bus.nc.subscribe(PING_SUBJECT, queue="workers", cb=self._on_ping)
        await self.bus.nc.subscribe(RING_SUBJECTS, cb=self._on_ring)
        await self.handoffs.subscribe()
        heartbeat = asyncio.ensure_future(membership.heartbeat(self))
        try:
            while True:
                try:
                    self._start_pullers(await self.bus.consumers())
                    self.warm = await asyncio.to_thread(self._warm_durables, list(self.pullers))
                except Exception:  # noqa: BLE001 - NATS or PostgreSQL restarting: next round
                    log.debug("discovery failed", exc_info=True)
                await asyncio.sleep(DISCOVER_S)
        finally:
            heartbeat.cancel()

    def _start_pullers(self, durables: list[str]) -> None:
        """A puller for each function; one that ended (NATS went away as it bound its
        consumer) is started again, or that function would never be pulled here again."""
        for durable in durables:
            task = self.pullers.get(durable)
            if task is not None and task.done() and not task.cancelled():
                log.warning("puller of %s ended: %r; starting it again", durable,
                            task.exception())
            if task is None or task.done():
                self.pullers[durable] = asyncio.ensure_future(self._pull(durable))

    async def _pull(self, durable: str) -> None:
        sub = await self.bus.js.pull_subscribe_bind(durable, STREAM)
        max_runs, ack_wait_s = await self.bus.delivery_settings(durable)
        while True:
            try:
                pull = not self.draining and await self._should_pull(durable)
            except Exception:  # noqa: BLE001 - NATS or PostgreSQL restarting: ask again
                log.debug("whether to pull %s", durable, exc_info=True)
                pull = False
            if not pull:
                await asyncio.sleep(COLD_POLL_S)
                continue
            beyond = await self._take_slot(durable)
            if self.draining:  # drained while it waited for the slot: take nothing new
                self._give_slot()
                continue
            self.fetching += 1
            self.beyond += beyond
            self._changed()
            try:
                msgs = await sub.fetch(1, timeout=RING_PULL_WAIT_S if beyond
                                       else self.pull_wait_s)
            except (FetchTimeoutError, NatsTimeout):
                self._give_slot()
                continue
            except Exception:  # noqa: BLE001 - NATS restarting: the client reconnects
                self._give_slot()
                await asyncio.sleep(COLD_POLL_S)
                continue
            finally:
                self.fetching -= 1
                self.beyond -= beyond
                self._changed()
                if self.draining and not self.fetching:
                    self.beat_now.set()  # drained: say so now
            for msg in msgs:
                task = asyncio.ensure_future(self._handle(msg, max_runs, ack_wait_s))
                self.handling.add(task)
                task.add_done_callback(self.handling.discard)
            await asyncio.sleep(0)  # each handed to its thread before the next pull request

    async def _take_slot(self, durable: str) -> bool:
        """Wait for a free slot for a pull request of this function's, and take it; or,
        when its message rang while a slot only waits on another function's pull request,
        take one beyond the slots, one for each such slot (else the message waits for that
        request to expire, or for the next function's turn; a slot busy running stays busy,
        and the message is left to another host). Returns whether it was taken beyond."""
        self.turns.append(durable)
        try:
            while True:
                changed = self.changed
                waiting = self.fetching - self.beyond  # slots only waiting on a pull request
                if self.free > 0 and self.turns[0] == durable:
                    break
                if durable in self.rung and waiting > self.beyond:
                    break
                await changed.wait()
        finally:
            self.turns.remove(durable)
            self._changed()  # the next in turn may take a slot still free
        self.rung.discard(durable)
        self.free -= 1
        return self.free < 0

    def _give_slot(self) -> None:
        self.free += 1
        self._changed()

    def _changed(self) -> None:
        """Wake every puller waiting in _take_slot to look again."""
        self.changed.set()
        self.changed = asyncio.Event()

    async def _on_ring(self, msg) -> None:
        self.rung.add(ring_durable(msg.subject))
        self._changed()

    def _warm_durables(self, durables: list[str]) -> set[str]:
        """The functions whose live version this host holds (the registry and the pool are
        read here, every DISCOVER_S, not between a message and the next pull request);
        one held at another template generation than the registry's catches up."""
        warm = set()
        for durable in durables:
            _, tenant_id, name = durable.split("_", 2)
            live = self.registry.version(int(tenant_id), name)
            if live is not None and self.platform.pool.has(live.key):
                warm.add(durable)
                if self.platform.behind(live) and live.key not in self.catching_up:
                    self.catching_up.add(live.key)
                    self.executor.submit(self._catch_up, live)
        return warm

    def _catch_up(self, version: Version) -> None:
        try:
            self.platform.catch_up(version)
        except Exception:  # noqa: BLE001 - the old generation serves on; tried again later
            log.exception("catching up with generation %d of %s", version.generation,
                          version.key)
        finally:
            self.catching_up.discard(version.key)

    async def _should_pull(self, durable: str) -> bool:
        """Pull at once for a function whose template is here; else only while it has
        messages waiting or out on delivery."""
        if durable in self.warm:
            return True
        info = await self.bus.js.consumer_info(STREAM, durable)
        # Waiting messages, or ones out on delivery: a redelivery (its worker died) is not
        # counted as pending, and only a waiting pull request can receive it.
        return info.num_pending > 0 or info.num_ack_pending > 0

    async def _in_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _handle(self, msg, max_runs: int, ack_wait_s: float) -> None:
        self.running += 1
        keepalive = None
        try:
            reply = (msg.headers or {}).get(REPLY_HEADER)
            try:
                invocation = decode(msg.data, Invocation)
            except (msgspec.ValidationError, msgspec.DecodeError):
                log.warning("refused a malformed invocation message")
                await msg.term()
                return
            delivered = msg.metadata.num_delivered
            keepalive = asyncio.ensure_future(keep_in_progress(msg, ack_wait_s))
            try:
                if reply:
                    outcome = await self._sync(invocation, delivered)
                else:
                    outcome = await self._in_thread(self._deliver_async, invocation,
                                                    delivered, max_runs)
            finally:
                self._ran()  # its slot pulls again now, not after the answer and the ack
            if reply:
                answer, record = outcome
                if answer is not None:
                    await self.bus.nc.publish(reply, answer)
                    await asyncio.sleep(0)  # the client's flusher writes it out first
                if record is not None:
                    record()  # queued for the registry's writer: the loop is not held
            else:
                await self._after_async(msg, invocation, outcome)
            await msg.ack()
        except Exception:  # noqa: BLE001 - a worker outlives any one message
            log.exception("invocation message")
        finally:
            if keepalive is None:  # refused before it ran
                self._ran()
            else:
                keepalive.cancel()

    async def _sync(self, invocation: Invocation, delivered: int,
                    ) -> tuple[bytes | None, Callable[[], None] | None]:
        """_deliver_sync(): awaited here on the loop when a warm instance serves it at
        once (no thread hop there and back on the caller's time), else on a thread."""
        version = self.versions.get(invocation.version_id)
        event = json.loads(invocation.event)
        if (version is not None and delivered == 1 and not invocation.stage
                and invocation.files is None and self.platform.runs_on_loop(version)
                and (invocation.deadline is None or time.time() <= invocation.deadline)):
            outcome = await self.platform.run_on_loop(version, invocation.id, event)
            if outcome is not None:
                return self._answered(invocation, version, event, outcome, None)
        return await self._in_thread(self._deliver_sync, invocation, delivered, event)

    def _ran(self) -> None:
        self.running -= 1
        self._give_slot()

    async def _after_async(self, msg, invocation: Invocation, delivery: Delivery) -> None:
        """Dead-letter the message, or publish the retry after its back-off (still in
        progress meanwhile: a worker dying now leaves the message to be redelivered), and
        hand a due callback to the gateways (before the ack: one lost in a crash is handed
        on again by the redelivery, the message id making it one)."""
        if delivery.callback:
            await self.bus.js.publish(
                callback_subject(invocation.tenant_id),
                encode(CallbackDue(invocation.id, invocation.tenant_id)),
                headers={"Nats-Msg-Id": f"{invocation.id}.callback"})
        if delivery.dead_letter:
            await self.bus.js.publish(
                dead_subject(invocation.tenant_id, invocation.function), msg.data,
                headers={"Nats-Msg-Id": invocation.id})
        elif delivery.retry_in_s is not None:
            await asyncio.sleep(delivery.retry_in_s)
            await self.bus.js.publish(
                invoke_subject(invocation.tenant_id, invocation.function), msg.data,
                headers={"Nats-Msg-Id": f"{invocation.id}.{delivery.attempt + 1}"})

    # the threads' side

    def _deliver_async(self, invocation: Invocation, delivered: int,
                       max_runs: int) -> Delivery:
        """Run (or refuse) one delivery of an async invocation, its record written before
        this returns; what is to become of the message."""
        record = self.registry.invocation(invocation.tenant_id, invocation.id)
        if record is None:
            return Delivery()  # not accepted
        callback = record["callback"] is not None
        if record["status"] in FINISHED:
            return Delivery(callback=callback)  # ran to completion before: the ack was lost
        if delivered > max_runs:
            self.registry.fail_invocation(invocation.id, ErrorInfo(
                DEAD_LETTER, f"no worker finished this invocation in {max_runs} "
                "deliveries; it is in the dead letters", kind=PLATFORM))
            return Delivery(dead_letter=True, callback=callback)
        version = self.registry.version_by_id(invocation.version_id)
        if version is None:
            self.registry.fail_invocation(invocation.id, ErrorInfo(
                FUNCTION_DELETED, "the function was deleted before this invocation ran"))
            return Delivery(callback=callback)
        event = json.loads(invocation.event)
        started = time.time()
        try:
            self.platform.ensure_loaded(version, version.key)
        except UsetlError as e:
            self.registry.fail_invocation(invocation.id, _load_error(e))
            return Delivery(callback=callback)
        while True:
            try:
                outcome = self.platform._run(
                    version, invocation.id, event,
                    lambda: self.registry.set_running(invocation.id, self.name))
                break
            except ConcurrencyLimit:
                time.sleep(ASYNC_RETRY_S)  # an accepted invocation waits its turn
        return self._finish_async(invocation, version, record, outcome, started)

    def _finish_async(self, invocation: Invocation, version: Version, record: dict,
                      outcome: InvocationResult, started: float) -> Delivery:
        """A failure of a retried kind is queued again (the worker publishes it after the
        back-off); else the record is final and its callback, if any, due."""
        attempt = len(record["attempts"]) + 1
        error = outcome.error
        if error is not None and error.kind in RETRIED_KINDS and attempt <= version.retries:
            backoff = version.retry_backoff_s * 2 ** (attempt - 1)
            self.platform.rollback_times.record(invocation.id, outcome, lambda: (
                self.registry.retry_invocation(invocation.id, outcome, started, backoff)))
            self.platform.metrics.retries.inc(function=version.key)
            return Delivery(retry_in_s=backoff, attempt=attempt)
        self.platform.rollback_times.record(invocation.id, outcome, lambda: (
            self.registry.finish_invocation(invocation.id, outcome, started)))
        if error is not None:
            self.platform.metrics.dead_letters.inc(function=version.key)
        return Delivery(callback=record["callback"] is not None)

    def _deliver_sync(self, invocation: Invocation, delivered: int, event: Any,
                      ) -> tuple[bytes | None, Callable[[], None] | None]:
        """Run a sync invocation: its answer for the caller (None: no one waits), and what
        writes its record, for the loop to call once the answer is on its way (from this
        thread the loop would wait for the GIL behind it, on the caller's time)."""
        if invocation.deadline is not None and time.time() > invocation.deadline:
            return None, None
        if delivered > 1:
            return _error(502, "worker_died", "the worker running this invocation stopped; "
                          "a synchronous invocation is not run again"), None
        version = self._version(invocation.version_id)
        if version is None:
            return _error(404, "function_not_found", "the function was deleted"), None
        try:
            self.platform.ensure_loaded(version, version.key)
        except UsetlError as e:
            return _error(500, "load_failed", _load_error(e).message), None
        try:
            outcome, kept = self._run_with_files(invocation, version, event)
        except ConcurrencyLimit as e:
            return _error(429, "concurrency_limit",
                          f"function {version.name!r} is at its concurrency limit: {e}"), None
        return self._answered(invocation, version, event, outcome, kept)

    def _answered(self, invocation: Invocation, version: Version, event: Any,
                  outcome: InvocationResult, kept: HandOff | None,
                  ) -> tuple[bytes, Callable[[], None]]:
        """A sync invocation's answer, and what writes its record."""
        record = invocation_record(invocation.id, version, "sync", outcome, invocation.created,
                                   self.name)
        answer: dict[str, Any] = {"record": record}
        if invocation.stage:
            answer["outcome"] = msgspec.to_builtins(outcome)
            answer["kept"] = None if kept is None else msgspec.to_builtins(
                self.handoffs.hold(kept))
        return json.dumps(answer).encode(), lambda: self.platform.rollback_times.record(
            invocation.id, outcome, lambda: self.registry.record_invocation(
                invocation.id, version, event, outcome, invocation.created, self.name))

    def _run_with_files(self, invocation: Invocation, version: Version,
                        event: Any) -> tuple[InvocationResult, HandOff | None]:
        """Run it with the previous stage's files, if it is a pipeline stage that has some
        (held here: mapped; elsewhere: fetched, the copy counted)."""
        files, owned = None, False
        try:
            if invocation.files is not None:
                files, owned = self.handoffs.take(invocation.files)
        except HandOffError as e:
            return InvocationResult.failed(PLATFORM_ERROR, str(e)), None
        try:
            outcome, kept = self.platform._run_stage(version, invocation.id, event, files,
                                                     invocation.keep_files)
        finally:
            if owned:
                files.close()
        if owned:
            outcome.io.copied_bytes += files.copied_bytes
        return outcome, kept

    def _version(self, version_id: int) -> Version | None:
        """A version's row, read once: its settings never change, and a sync call's was
        live at its gateway a moment ago (PostgreSQL stays off the call's path)."""
        version = self.versions.get(version_id)
        if version is None:
            version = self.registry.version_by_id(version_id)
            if version is not None:
                self.versions[version_id] = version
        return version

    async def _on_ping(self, msg) -> None:
        await msg.respond(self.name.encode())

    async def _on_build(self, msg) -> None:
        built = await self._in_thread(self._build, msg.data)
        await msg.respond(encode(built))

    def _build(self, data: bytes) -> Built:
        """A new version's template, built here and kept warm, or why it failed."""
        try:
            build = decode(data, Build)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            return Built(self.name, error=f"malformed build request: {e}")
        try:
            if self.platform.pool.has(build.key):
                return Built(self.name)
            template = self.platform.ensure_loaded(build, build.key)
        except FunctionLoadError as e:
            return Built(self.name, load_error=e.error.as_dict())
        except Exception as e:  # noqa: BLE001 - the gateway reports any failure to the deployer
            log.exception("build of %s", build.key)
            return Built(self.name, error=f"{type(e).__name__}: {e}")
        warmup = None if template is None else template.warmup
        return Built(self.name, warmup=None if warmup is None else msgspec.to_builtins(warmup))


def _load_error(e: UsetlError) -> ErrorInfo:
    """Why this host could not load a version that loaded at its deploy."""
    if isinstance(e, FunctionLoadError):
        return e.error
    return ErrorInfo(PLATFORM_ERROR, f"this host could not load the function: {e}")


def _error(status: int, code: str, message: str) -> bytes:
    return json.dumps({"error": {"status": status, "code": code, "message": message}}).encode()

