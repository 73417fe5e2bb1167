"""`usetl gateway`: the HTTP API over the shared registry and JetStream. Stateless:
several may run, each answering for every function.

A deploy is checked here (names, limits, requirements, installed by this host's module
store), its code and module-store entries go to the object store, and one worker builds
its template (a load error is the deployer's 400 as on one host) before the version is
recorded and goes live. A sync invocation is published with its caller's reply subject
and waited for until the function's deadline; an async one is recorded 'queued', then
published with its id as the message id (a retried publish is dropped as a duplicate),
and acknowledged to the caller once JetStream has stored it. A pipeline runs here, each
stage a sync invocation on any worker, its files handed on by reference (handoffs.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from usetl.image.modstore import ModuleStore
from usetl.invocation import PLATFORM_ERROR, ErrorInfo, InvocationResult
from usetl.platform.callbacks import CallbackConfig, Callbacks
from usetl.platform.fair import FairRunner
from usetl.platform.metrics import Metrics
from usetl.platform.registry import Registry, Schedule, Tenant, Tick, Version, version_key
from usetl.platform.schedule import Scheduler
from usetl.platform.secrets import SecretBox
from usetl.platform.service import (
    Deployment,
    DeployRequest,
    Limits,
    Platform,
    ServiceError,
    Settings,
)
from usetl.platform.timers import Timers

from . import bundles, membership
from .bus import ACK_WAIT_S, BUILD_SUBJECT, MAX_RUNS, REPLY_HEADER, Bus, invoke_subject
from .callbacks import send_callbacks
from .config import ClusterConfig
from .handoffs import HeldFiles
from .messages import Build, Built, HandOffRef, Invocation, decode, encode

log = logging.getLogger(__name__)
BUILD_TIMEOUT_S = 300.0  # a worker building a template installs nothing: it fetches, starts
DISPATCH_MARGIN_S = 5.0  # beyond the function's timeout: queueing, fetching, the round trips
LIVE_CACHE_S = 1.0  # another gateway's deploy or delete reaches this one's calls within this
PUBLISH_RETRY_S = 10.0  # a publish is retried this long (NATS restarting); the id dedups it


@dataclass(frozen=True)
class Remote:
    """What a gateway reports as its backend: invocations run on the workers."""

    name: str = "cluster"
    isolation: str = "invocations run on the workers, each in its own sandbox"


class Gateway(Platform):
    """The platform's API without sandboxes: the same methods, dispatching to workers."""

    def __init__(self, config: ClusterConfig, state_dir: Path,
                 modules: ModuleStore | None = None, limits: Limits | None = None,
                 name: str = "gateway", max_runs: int = MAX_RUNS,
                 callbacks: CallbackConfig | None = None, ack_wait_s: float = ACK_WAIT_S):
        """`max_runs`: deliveries of an invocation to workers that die before it goes to
        the dead letters, and `ack_wait_s`: how long a worker may fall silent before its
        message is redelivered (both set on a function's first deploy). `callbacks`: where
        this gateway may POST async invocations' records, and how often it tries."""
        # Not Platform.__init__: a gateway holds no backend, pool or async runner. Secrets
        # are sealed here under $USETL_SECRET_KEY, which workers must share to open them.
        self.backend = Remote()
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        state_dir.chmod(0o700)
        self.code_root = state_dir / "code"
        self.code_root.mkdir(exist_ok=True)
        self.registry = Registry(config.database_url)
        self.modules = modules or ModuleStore()
        self.metrics = Metrics()
        self.limits = limits or Limits()
        self.deploy_locks: dict[tuple[int, str], threading.Lock] = {}
        self.lock = threading.Lock()
        self.closed = False
        self.tenants: dict[str, Tenant] = {}
        self.live_cache: dict[tuple[int, str], tuple[Version, float]] = {}  # -> (it, when read)
        self.recovered = {"requeued": 0, "interrupted": 0}
        self.max_runs = max_runs
        self.ack_wait_s = ack_wait_s
        self.async_runner = FairRunner(self.limits.async_workers, "usetl-async")  # pipelines'
        self.timers = Timers("usetl-timers")
        self.secret_box = SecretBox(state_dir)
        self.callbacks = Callbacks(self.registry, callbacks or CallbackConfig(), self.timers,
                                   self.metrics.callbacks)
        self.bus = Bus(config, name)
        self.sender = self.bus.spawn(send_callbacks(self.bus, self.callbacks, ack_wait_s))
        self.inbox = f"_INBOX.usetl.{uuid.uuid4().hex}"
        self.waiting: dict[str, asyncio.Future] = {}
        self.bus.run(self.bus.nc.subscribe(f"{self.inbox}.*", cb=self._on_reply))
        # Every gateway runs the schedules: a tick is claimed by one (a conditional update)
        # and its invocation published like any other.
        self.scheduler = Scheduler(self.registry, self._submit_tick)
        self.scheduler.start()

    def _cached_live(self, tenant: Tenant, name: str) -> Version | None:
        """The live version as read less than LIVE_CACHE_S ago, if it was."""
        cached = self.live_cache.get((tenant.id, name))
        if cached is not None and time.monotonic() - cached[1] < LIVE_CACHE_S:
            return cached[0]
        return None

    def _live(self, tenant: Tenant, name: str) -> Version:
        """The live version, read again after LIVE_CACHE_S (another gateway may have
        deployed or deleted it since): read per call, PostgreSQL would be on every call's
        path."""
        cached = self._cached_live(tenant, name)
        if cached is not None:
            return cached
        version = self.registry.version(tenant.id, name)
        if version is None:
            self.live_cache.pop((tenant.id, name), None)
            raise ServiceError(404, "function_not_found", f"no function {name!r}")
        self.live_cache[(tenant.id, name)] = (version, time.monotonic())
        return version

    # deploys

    def _go_live(self, tenant: Tenant, name: str, request: DeployRequest, settings: Settings,
                 module_dirs: list[Path], code_dir: Path) -> Deployment:
        number = max((v.version for v in self.registry.versions(tenant.id, name)), default=0) + 1
        key = version_key(tenant.id, name, number, str(code_dir))
        self.bus.run(bundles.upload_version(self.bus, key, code_dir, module_dirs))
        built = self._build(Build(
            key=key, handler=request.handler, env=settings.env, memory_mib=settings.memory_mib,
            timeout_s=settings.timeout_s, allow=settings.allow,
            concurrency=settings.concurrency, queue=settings.queue, warmup=settings.warmup,
            reuse=settings.reuse))
        version = self.registry.add_version(
            tenant.id, name, handler=request.handler, requirements=list(request.requirements),
            module_dirs=[str(d) for d in module_dirs], code_dir=str(code_dir),
            memory_mib=settings.memory_mib, timeout_s=settings.timeout_s,
            concurrency=settings.concurrency, queue=settings.queue, allow=settings.allow,
            env=settings.env, warmup=settings.warmup, reuse=settings.reuse,
            retries=settings.retries, retry_backoff_s=settings.retry_backoff_s,
            secrets=settings.secrets)
        assert version.key == key
        self.bus.run(self.bus.ensure_consumer(tenant.id, name, self.max_runs, self.ack_wait_s))
        self.live_cache[(tenant.id, name)] = (version, time.monotonic())
        warmup = None if built.warmup is None else msgspec.convert(built.warmup,
                                                                   InvocationResult)
        return Deployment(version, warmup)

    def _build(self, build: Build) -> Built:
        try:
            reply = self.bus.run(self.bus.nc.request(BUILD_SUBJECT, encode(build),
                                                     timeout=BUILD_TIMEOUT_S))
        except NoRespondersError as e:
            raise ServiceError(503, "no_workers", "no worker is connected to build the "
                               "function's template") from e
        except NatsTimeout as e:
            raise ServiceError(504, "build_timeout", "no worker built the function's template "
                               f"within {BUILD_TIMEOUT_S:g} s") from e
        built = decode(reply.data, Built)
        if built.load_error is not None:
            error = ErrorInfo(**built.load_error)
            raise ServiceError(400, "load_failed",
                               f"the function failed to load: {error.type}: {error.message}",
                               error)
        if built.error is not None:
            raise ServiceError(500, "sandbox_failed", f"on {built.host}: {built.error}")
        return built

    def delete(self, tenant: Tenant, name: str) -> list[Version]:
        with self._deploy_lock(tenant.id, name):
            versions = self.registry.delete_function(tenant.id, name)
            self.live_cache.pop((tenant.id, name), None)
            if not versions:
                raise ServiceError(404, "function_not_found", f"no function {name!r}")
            shutil.rmtree(self.code_root / str(tenant.id) / name, ignore_errors=True)
        return versions  # workers drop the templates as they go idle

    # invocations

    def invoke(self, tenant: Tenant, name: str, event: Any) -> dict:
        return self._invoke_sync(tenant, name, event)["record"]

    def invoke_coroutine(self, tenant: Tenant, name: str, event: Any) -> Coroutine | None:
        """On the bus's own loop (the API runs there: api/server.py's run_api `loop`), the
        sync invocation awaited where its messages come and go: no hop to a thread of the
        API and back on the call's path."""
        try:
            here = asyncio.get_running_loop() is self.bus.loop
        except RuntimeError:
            here = False
        return self._invoke_awaited(tenant, name, event) if here else None

    async def _invoke_awaited(self, tenant: Tenant, name: str, event: Any) -> dict:
        version = self._cached_live(tenant, name) or await asyncio.to_thread(
            self._live, tenant, name)  # a registry read: not on the loop
        return _answered(await self._call(self._sync_invocation(tenant, version, event)))[
            "record"]

    def _invoke_sync(self, tenant: Tenant, name: str, event: Any, **stage: Any) -> dict:
        """A sync invocation on whichever worker pulls it: its answer (`stage`: the
        Invocation's pipeline-stage fields)."""
        invocation = self._sync_invocation(tenant, self._live(tenant, name), event, **stage)
        return _answered(self.bus.run(self._call(invocation)))

    def _sync_invocation(self, tenant: Tenant, version: Version, event: Any,
                         **stage: Any) -> Invocation:
        created = time.time()
        return Invocation(uuid.uuid4().hex, tenant.id, version.name, version.id, "sync",
                          json.dumps(event), created,
                          deadline=created + version.timeout_s + DISPATCH_MARGIN_S, **stage)

    async def _call(self, invocation: Invocation) -> dict:
        """Publish the invocation and wait for its answer, not for JetStream's
        acknowledgement first: a worker answering means it was stored (its ack often comes
        later), and a publish that fails is the caller's error at once."""
        reply = f"{self.inbox}.{invocation.id}"
        future = asyncio.get_running_loop().create_future()
        self.waiting[reply] = future
        published = asyncio.ensure_future(self._publish(invocation, {REPLY_HEADER: reply}))
        try:
            wait = invocation.deadline - time.time()
            done, _ = await asyncio.wait((future, published), timeout=max(wait, 0.0),
                                         return_when=asyncio.FIRST_COMPLETED)
            if future not in done and published in done:
                published.result()  # a ServiceError if it was not stored
                await asyncio.wait_for(future, max(invocation.deadline - time.time(), 0.0))
            if not future.done():
                raise TimeoutError
            return json.loads(future.result())
        except TimeoutError as e:
            raise ServiceError(504, "deadline_exceeded", "no worker returned the result within "
                               "the function's deadline") from e
        finally:
            published.cancel()
            self.waiting.pop(reply, None)

    async def _on_reply(self, msg) -> None:
        future = self.waiting.get(msg.subject)
        if future is not None and not future.done():
            future.set_result(msg.data)

    async def _publish(self, invocation: Invocation, headers: dict[str, str]) -> None:
        """Publish until JetStream has stored it; retries (NATS restarting) are deduplicated."""
        subject = invoke_subject(invocation.tenant_id, invocation.function)
        headers = {"Nats-Msg-Id": invocation.id, **headers}
        give_up = time.monotonic() + PUBLISH_RETRY_S
        while True:
            try:
                await self.bus.js.publish(subject, encode(invocation), timeout=2.0,
                                          headers=headers)
                return
            except Exception as e:  # noqa: BLE001 - any failure to store it is retried
                if time.monotonic() > give_up:
                    raise ServiceError(503, "dispatch_failed",
                                       f"JetStream did not store the invocation: {e}") from e
                await asyncio.sleep(0.2)

    def _submit_async(self, tenant_id: int, invocation_id: str) -> None:
        """Publish a queued async invocation (an API call's or a schedule tick's)."""
        queued = self.registry.queued_invocation(invocation_id)
        if queued is None or queued.version is None:
            return  # gone meanwhile (deleted): nothing to run
        version = queued.version
        invocation = Invocation(invocation_id, tenant_id, version.name, version.id, "async",
                                json.dumps(queued.event), time.time())
        try:
            self.bus.run(self._publish(invocation, {}))
        except ServiceError as e:
            self.registry.fail_invocation(invocation_id, ErrorInfo(PLATFORM_ERROR, str(e)))
            raise

    def _submit_tick(self, schedule: Schedule, tick: Tick) -> None:
        try:
            super()._submit_tick(schedule, tick)
        except ServiceError:
            log.exception("tick of schedule %s", schedule.id)  # its record says it failed

    def invoke_stage(self, tenant: Tenant, name: str, event: Any, files: HeldFiles | None,
                     keep_files: bool) -> tuple[dict, InvocationResult, HeldFiles | None]:
        """A pipeline stage on whichever worker pulls it; the files it keeps stay on that
        worker, handed to the next stage from there (handoffs.py)."""
        answer = self._invoke_sync(tenant, name, event, stage=True, keep_files=keep_files,
                                   files=None if files is None else files.ref)
        outcome = msgspec.convert(answer["outcome"], InvocationResult)
        kept = answer["kept"]
        return answer["record"], outcome, None if kept is None else HeldFiles(
            self.bus, msgspec.convert(kept, HandOffRef))

    def pool_report(self, tenant: Tenant) -> dict:
        """The workers, from their heartbeats (an admin's view: hosts are shared)."""
        if not tenant.admin:
            raise ServiceError(403, "forbidden", "hosts are for the admin tenant")
        return {"backend": self.backend.name,
                "hosts": self.bus.run(membership.hosts(self.bus))}

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.async_runner.shutdown()
        self.scheduler.close()
        self.timers.close()
        self.sender.cancel()
        self.callbacks.close()
        self.bus.close()
        self.registry.close()


def _answered(answer: dict) -> dict:
    """A worker's answer to a sync invocation, or its error raised as the caller's."""
    if "error" in answer:
        error = answer["error"]
        raise ServiceError(error["status"], error["code"], error["message"])
    return answer
