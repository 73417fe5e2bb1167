"""The platform as one object: deploy, invoke (sync and async), inspect, delete.

The HTTP API is a thin layer over `Platform`; every method takes the calling
tenant and reaches only that tenant's objects. Errors a caller can act on
are `ServiceError`s with a stable code and the HTTP status that fits.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from usetl import abi
from usetl.errors import UsetlError
from usetl.image.modstore import ModuleStore, ModuleStoreError, archive_path
from usetl.invocation import (
    FUNCTION_DELETED,
    PLATFORM_ERROR,
    RESULT_TOO_LARGE,
    ErrorInfo,
    InvocationResult,
    invocation_context,
)
from usetl.libos.handoff import HandOff

from . import code_archive
from .backend import (
    REUSE_ROLLBACK,
    REUSE_WARM,
    Backend,
    FunctionLoadError,
    FunctionSpec,
    FunctionTemplate,
)
from .callbacks import CallbackConfig, CallbackRefused, Callbacks
from .code_archive import CodeArchiveError
from .fair import FairRunner
from .learning import Generation
from .metrics import LATENCY_BUCKETS, Metrics
from .pool import ConcurrencyLimit, Definition, Pool, PoolConfig, PoolError
from .registry import (
    Registry,
    RegistryError,
    Schedule,
    Tenant,
    Tick,
    Version,
    invocation_record,
    version_key,
)
from .rollbacks import RollbackTimes
from .schedule import CronError, Scheduler, next_tick
from .secrets import MAX_VALUE_BYTES, SecretBox, SecretError, redact
from .secrets import NAME as SECRET_NAME
from .timers import Timers

log = logging.getLogger(__name__)

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
HANDLER = re.compile(r"^[A-Za-z0-9_./-]+\.py:[A-Za-z_][A-Za-z0-9_]*$")
# A package from the index: a name, extras and version clauses, and sha256 hashes that its
# artifacts must match (pip's hash-checking mode); no paths, URLs or other options.
REQUIREMENT = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?(\[[A-Za-z0-9._,-]+\])?"
    r"(\s*(==|!=|<=|>=|~=|<|>)\s*[A-Za-z0-9.*+!]+\s*(,|(?=\s--hash=)|$))*"
    r"(\s+--hash=sha256:[0-9a-f]{64})*$"
)
ASYNC_RETRY_S = 0.05
# The error kinds a failed async invocation is retried for, under its version's policy: the
# function's own exception and a sandbox that broke (a crash, a timeout) may pass another
# time. Platform errors (a result over the limit, a deleted function, a missing secret) would
# fail the same way again; bad input never becomes an invocation (refused at submit).
RETRIED_KINDS = frozenset({abi.HANDLER, abi.SANDBOX})


class ServiceError(UsetlError):
    """An error a caller can act on: an HTTP status, a stable code, and the guest's error
    (type, message, traceback) where one caused it."""

    def __init__(self, status: int, code: str, message: str, cause: ErrorInfo | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.cause = cause


@dataclass
class Limits:
    max_payload_bytes: int = 6 << 20
    max_result_bytes: int = 6 << 20
    max_output_bytes: int = 1 << 20  # of stdout, and of stderr, kept in a record
    max_code_bytes: int = 50 << 20  # decoded, of a deploy's files as JSON (base64)
    max_unpacked_bytes: int = 250 << 20  # of a deploy's code archive, unpacked (Lambda's)
    max_memory_mib: int = 2048
    max_timeout_s: float = 900.0
    max_concurrency: int = 1000
    max_queue: int = 10000
    default_memory_mib: int = 256
    default_timeout_s: float = 30.0
    default_concurrency: int = 64
    default_queue: int = 256
    async_workers: int = 16
    max_retries: int = 10
    max_retry_backoff_s: float = 3600.0  # the first back-off; each retry waits twice the last


@dataclass
class DeployRequest:
    handler: str
    files: dict[str, str]  # relative path -> base64 content
    requirements: list[str]
    executables: list[str] = field(default_factory=list)  # paths among files: mode 0555
    memory_mib: int | None = None
    timeout_s: float | None = None
    concurrency: int | None = None
    queue: int | None = None
    allow: list[str] | None = None
    env: dict[str, str] | None = None
    warmup: Any = None  # an event the handler runs on once before the template freezes
    reuse: str | None = None  # "rollback" (default) or "warm"
    retries: int | None = None  # of a failed async invocation (RETRIED_KINDS); default 0
    retry_backoff_s: float | None = None  # before the first retry, doubled after; default 1
    secrets: list[str] | None = None  # names of the tenant's secrets its invocations get


@dataclass
class Settings:
    """A deploy's settings, defaults filled in."""

    memory_mib: int
    timeout_s: float
    concurrency: int
    queue: int
    allow: list[str]
    env: dict[str, str]
    warmup: str | None  # JSON
    reuse: str
    retries: int
    retry_backoff_s: float
    secrets: list[str]

    def check(self, lim: Limits) -> None:
        if not 32 <= self.memory_mib <= lim.max_memory_mib:
            raise ServiceError(400, "invalid_memory",
                               f"memory_mib must be 32..{lim.max_memory_mib}")
        if not 0 < self.timeout_s <= lim.max_timeout_s:
            raise ServiceError(400, "invalid_timeout",
                               f"timeout_s must be in (0, {lim.max_timeout_s:g}]")
        if not 1 <= self.concurrency <= lim.max_concurrency:
            raise ServiceError(400, "invalid_concurrency",
                               f"concurrency must be 1..{lim.max_concurrency}")
        if not 0 <= self.queue <= lim.max_queue:
            raise ServiceError(400, "invalid_queue", f"queue must be 0..{lim.max_queue}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()):
            raise ServiceError(400, "invalid_env", "env must map names to strings")
        if self.reuse not in (REUSE_ROLLBACK, REUSE_WARM):
            raise ServiceError(400, "invalid_reuse",
                               f"reuse must be {REUSE_ROLLBACK!r} or {REUSE_WARM!r}")
        if self.warmup is not None and len(self.warmup) > lim.max_payload_bytes:
            raise ServiceError(413, "payload_too_large",
                               f"the warm-up event is over the limit of {lim.max_payload_bytes}")
        if not 0 <= self.retries <= lim.max_retries:
            raise ServiceError(400, "invalid_retries", f"retries must be 0..{lim.max_retries}")
        if not 0 <= self.retry_backoff_s <= lim.max_retry_backoff_s:
            raise ServiceError(400, "invalid_retries",
                               f"retry_backoff_s must be 0..{lim.max_retry_backoff_s:g}")
        for name in self.secrets:
            _check_secret_name(name)


@dataclass
class Deployment:
    """A deploy's outcome: the new live version, and its warm-up run if it had one."""

    version: Version
    warmup: InvocationResult | None

    def public(self) -> dict:
        answer = self.version.public()
        if self.warmup is not None:
            answer["warmup"] = {"stdout": self.warmup.stdout, "stderr": self.warmup.stderr,
                                "duration_ms": self.warmup.total_ms}
        return answer


class Platform:
    def __init__(
        self,
        backend: Backend,
        state_dir: Path,
        modules: ModuleStore | None = None,
        pool_config: PoolConfig | None = None,
        limits: Limits | None = None,
        callbacks: CallbackConfig | None = None,
        clock: Callable[[], float] = time.time,  # the schedules' (a test drives it)
        registry: Registry | None = None,
    ):
        """`registry`: one shared by several hosts (a `usetl worker`'s); recovering async
        invocations after a restart is then the dispatcher's (JetStream redelivers them)."""
        self.backend = backend
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        state_dir.chmod(0o700)  # tokens' hashes, every tenant's code
        self.code_root = state_dir / "code"
        self.code_root.mkdir(exist_ok=True)
        self.registry = registry or Registry(state_dir / "registry.db")
        self.modules = modules or ModuleStore()
        self.metrics = Metrics()
        self.versions: dict[str, Version] = {}  # by key: the versions handed to the pool
        self.rollback_times = RollbackTimes(self.registry)
        self.pool = Pool(backend, pool_config, self.metrics, state_dir / "snapshots",
                         on_generation=self._record_generation,
                         on_rollback=self.rollback_times.report)
        self.limits = limits or Limits()
        self.deploy_locks: dict[tuple[int, str], threading.Lock] = {}
        self.lock = threading.Lock()
        self.async_runner = FairRunner(self.limits.async_workers, "usetl-async")
        self.closed = False
        self.tenants: dict[str, Tenant] = {}
        self.live: dict[tuple[int, str], Version] = {}
        self.timers = Timers("usetl-timers")
        self.secret_box = SecretBox(state_dir)
        self.callbacks = Callbacks(self.registry, callbacks or CallbackConfig(), self.timers,
                                   self.metrics.callbacks)
        self.scheduler = Scheduler(self.registry, self._submit_tick, clock)
        if registry is None:
            self.recovered = self._recover()
            self.scheduler.start()
        else:  # several hosts: JetStream redelivers, and workers fire no schedules
            self.recovered = {"requeued": 0, "interrupted": 0}

    # tenants

    def known_tenant(self, token: str | None) -> Tenant | None:
        """The tenant of a token seen before (no registry read: safe on an event loop)."""
        return self.tenants.get(token) if token else None

    def authenticate(self, token: str | None) -> Tenant:
        tenant = self.known_tenant(token)
        if tenant is None and token:
            tenant = self.registry.tenant_for_token(token)
            if tenant is not None:
                self.tenants[token] = tenant  # tokens are never revoked while serving
        if tenant is None:
            raise ServiceError(401, "unauthenticated", "a valid bearer token is required")
        return tenant

    def _live(self, tenant: Tenant, name: str) -> Version:
        """The live version (cached: only this process changes it, under the deploy lock)."""
        version = self.live.get((tenant.id, name))
        if version is None:
            version = self.registry.version(tenant.id, name)
            if version is None:
                raise _no_function(name)
            self.live[(tenant.id, name)] = version
        return version

    def add_tenant(self, caller: Tenant, name: str) -> tuple[Tenant, str]:
        if not caller.admin:
            raise ServiceError(403, "forbidden", "only the admin tenant can add tenants")
        _check_name(name, "tenant")
        try:
            return self.registry.add_tenant(name)
        except RegistryError as e:
            raise ServiceError(409, "tenant_exists", str(e)) from e

    # functions

    def deploy(self, tenant: Tenant, name: str, request: DeployRequest,
               archive: tuple[Path, str] | None = None,
               progress: Callable[[str, int, int], None] | None = None) -> Deployment:
        """A new live version; on any failure nothing changes and the old version stays live.

        The code is `request.files` (base64), or `archive`: a tar or zip file and its
        content type (code_archive.py). `progress(phase, done, total)` hears of the module
        store's phases and of "template". The handler may be given as Lambda's
        "module.function"; the version keeps it as "file.py:function".
        """
        _check_name(name, "function")
        request = dataclasses.replace(request, handler=abi.canonical_handler(request.handler))
        settings = self._settings(request)
        files = self._decode_files(request.files) if archive is None else {}
        handler_file = request.handler.split(":")[0]
        if archive is None and handler_file not in files:
            raise ServiceError(400, "invalid_handler",
                               f"the handler's file {handler_file} is not among the files")
        missing = set(settings.secrets) - set(
            self.registry.sealed_secrets(tenant.id, settings.secrets))
        if missing:
            raise ServiceError(400, "secret_not_found",
                               f"no secret {', '.join(sorted(missing))} (`usetl secret set`)")
        strays = sorted(set(request.executables) - set(files))
        if strays:
            raise ServiceError(400, "invalid_files",
                               f"executables not among the files: {', '.join(strays)[:200]}")
        with self._deploy_lock(tenant.id, name):
            try:
                module_dirs = self.modules.install(request.requirements, progress)
            except ModuleStoreError as e:
                raise ServiceError(400, "requirements_failed", str(e)) from e
            code_dir = self.code_root / str(tenant.id) / name / uuid.uuid4().hex
            try:
                self._write_code(code_dir, files, archive, handler_file,
                                 set(request.executables))
                if progress is not None:
                    progress("template", 0, 1)
                deployment = self._go_live(tenant, name, request, settings, module_dirs,
                                           code_dir)
            except BaseException:
                shutil.rmtree(code_dir, ignore_errors=True)
                archive_path(code_dir).unlink(missing_ok=True)
                raise
        if progress is not None:
            progress("template", 1, 1)
        log.info("deployed %s", deployment.version.key)
        return deployment

    def _write_code(self, code_dir: Path, files: dict[str, bytes],
                    archive: tuple[Path, str] | None, handler_file: str,
                    executables: set[str]) -> None:
        if archive is None:
            _write_files(code_dir, files, executables)
            return
        try:
            code_archive.unpack(*archive, code_dir, self.limits.max_unpacked_bytes)
        except CodeArchiveError as e:
            raise ServiceError(e.status, e.code, str(e)) from e
        if not (code_dir / handler_file).is_file():
            raise ServiceError(400, "invalid_handler",
                               f"the handler's file {handler_file} is not in the archive")
        _seal_code(code_dir)

    def _settings(self, request: DeployRequest) -> Settings:
        """The request's settings with the defaults filled in, each checked against the limits."""
        lim = self.limits
        if not HANDLER.match(request.handler):
            raise ServiceError(400, "invalid_handler",
                               f"handler {request.handler!r} is not of the form 'file.py:function' "
                               "(or Lambda's 'module.function')")
        settings = Settings(
            memory_mib=request.memory_mib or lim.default_memory_mib,
            timeout_s=request.timeout_s or lim.default_timeout_s,
            concurrency=request.concurrency or lim.default_concurrency,
            queue=lim.default_queue if request.queue is None else request.queue,
            allow=request.allow or [], env=request.env or {},
            warmup=None if request.warmup is None else json.dumps(request.warmup),
            reuse=request.reuse or REUSE_ROLLBACK,
            retries=request.retries or 0,
            retry_backoff_s=1.0 if request.retry_backoff_s is None else request.retry_backoff_s,
            secrets=sorted(set(request.secrets or [])),
        )
        for requirement in request.requirements:
            if not isinstance(requirement, str) or not REQUIREMENT.match(requirement.strip()):
                raise ServiceError(400, "invalid_requirement",
                                   f"requirement {requirement!r} must be a package name with "
                                   "optional extras and versions (no paths, URLs or options)")
        settings.check(lim)
        return settings

    def _go_live(self, tenant: Tenant, name: str, request: DeployRequest, settings: Settings,
                 module_dirs: list[Path], code_dir: Path) -> Deployment:
        """Start the new version's template, record the version, and switch traffic to it."""
        old = self.registry.version(tenant.id, name)
        number = max((v.version for v in self.registry.versions(tenant.id, name)), default=0) + 1
        spec = FunctionSpec(
            key=version_key(tenant.id, name, number, str(code_dir)), code_dir=code_dir,
            handler=request.handler, module_dirs=module_dirs, env=settings.env,
            memory_mib=settings.memory_mib, timeout_s=settings.timeout_s, allow=settings.allow,
            warmup=settings.warmup, reuse=settings.reuse,
        )
        template = self._start_template(spec)
        try:
            version = self.registry.add_version(
                tenant.id, name, handler=request.handler,
                requirements=list(request.requirements),
                module_dirs=[str(d) for d in module_dirs], code_dir=str(code_dir),
                memory_mib=settings.memory_mib, timeout_s=settings.timeout_s,
                concurrency=settings.concurrency, queue=settings.queue, allow=settings.allow,
                env=settings.env, warmup=settings.warmup, reuse=settings.reuse,
                retries=settings.retries, retry_backoff_s=settings.retry_backoff_s,
                secrets=settings.secrets,
            )
        except BaseException:
            template.close()
            raise
        assert version.key == spec.key
        self.versions[version.key] = version
        self.pool.add(spec, settings.concurrency, settings.queue, template)
        self.live[(tenant.id, name)] = version
        if old is not None:
            self.pool.retire(old.key)
        return Deployment(version, template.warmup)

    def _start_template(self, spec: FunctionSpec) -> FunctionTemplate:
        try:
            return self.pool.start_template(spec)
        except FunctionLoadError as e:
            raise ServiceError(400, "load_failed",
                               f"the function failed to load: {e}", e.error) from e
        except UsetlError as e:
            raise ServiceError(500, "sandbox_failed", str(e)) from e

    def _deploy_lock(self, tenant_id: int, name: str) -> threading.Lock:
        with self.lock:
            return self.deploy_locks.setdefault((tenant_id, name), threading.Lock())

    def _decode_files(self, files: dict[str, str]) -> dict[str, bytes]:
        if not files:
            raise ServiceError(400, "invalid_files", "no files were uploaded")
        decoded: dict[str, bytes] = {}
        total = 0
        for path, content in files.items():
            pure = PurePosixPath(path)
            if (pure.is_absolute() or ".." in pure.parts or not pure.parts
                    or str(pure) != path):
                raise ServiceError(400, "invalid_files",
                                   f"file name {path!r} must be a plain relative path")
            try:
                data = base64.b64decode(content, validate=True)
            except (binascii.Error, TypeError) as e:
                raise ServiceError(400, "invalid_files", f"{path}: not base64 ({e})") from e
            total += len(data)
            if total > self.limits.max_code_bytes:
                raise ServiceError(413, "code_too_large",
                                   f"the code exceeds {self.limits.max_code_bytes} bytes")
            decoded[path] = data
        return decoded

    def functions(self, tenant: Tenant) -> list[Version]:
        return self.registry.functions(tenant.id)

    def function(self, tenant: Tenant, name: str) -> tuple[Version, list[Version]]:
        version = self.registry.version(tenant.id, name)
        if version is None:
            raise _no_function(name)
        return version, self.registry.versions(tenant.id, name)

    def delete(self, tenant: Tenant, name: str) -> list[Version]:
        with self._deploy_lock(tenant.id, name):
            versions = self.registry.delete_function(tenant.id, name)
            self.live.pop((tenant.id, name), None)
            if not versions:
                raise _no_function(name)
            for version in versions:
                self.pool.retire(version.key)
            shutil.rmtree(self.code_root / str(tenant.id) / name, ignore_errors=True)
        return versions

    # invocations

    def _definition(self, version: Version) -> Definition:
        """How the pool adds a version it has not served yet (e.g. after a restart)."""

        def define() -> tuple[FunctionSpec, int, int, bool]:
            spec = FunctionSpec(
                key=version.key, code_dir=Path(version.code_dir), handler=version.handler,
                module_dirs=[Path(d) for d in version.module_dirs], env=version.env,
                memory_mib=version.memory_mib, timeout_s=version.timeout_s, allow=version.allow,
                warmup=version.warmup, reuse=version.reuse, generation=version.generation,
                learned=version.learned,
            )
            self.versions[version.key] = version
            live = self.registry.version(version.tenant_id, version.name)
            return spec, version.concurrency, version.queue, (
                live is not None and live.key == version.key)

        return define

    def _record_generation(self, key: str, generation: Generation) -> None:
        """The pool built a version's next template generation (or failed to): keep it."""
        version = self.versions.get(key)
        if version is None:
            return
        self.registry.set_generation(version.id, generation.number, generation.modules,
                                     generation.error)
        live = (version.tenant_id, version.name)
        if live in self.live and self.live[live].key == key:
            self.live[live] = self.registry.version_by_id(version.id) or self.live[live]

    def _run(self, version: Version, invocation_id: str, event: Any,
             on_start: Callable[[], None] | None = None,
             submitted: float | None = None) -> InvocationResult:
        return self._run_stage(version, invocation_id, event, None, False, on_start,
                               submitted)[0]

    def _run_stage(self, version: Version, invocation_id: str, event: Any,
                   files: HandOff | None, keep_files: bool,
                   on_start: Callable[[], None] | None = None, submitted: float | None = None,
                   ) -> tuple[InvocationResult, HandOff | None]:
        """One invocation, as _run(); as a pipeline stage with the previous stage's `files`
        and, with `keep_files`, the files it wrote (None if it failed). `submitted`
        (time.monotonic()) is when an async one was handed to a worker, whose wait for it
        counts as queueing."""
        try:
            secrets = self._secret_values(version)
        except SecretError as e:
            return InvocationResult.failed(PLATFORM_ERROR, str(e)), None
        context = _context(version, invocation_id, secrets)
        kept = None
        waited_ms = 0.0 if submitted is None else (time.monotonic() - submitted) * 1e3
        try:
            outcome, kept = self.pool.invoke_stage(version.key, event, context,
                                                   self._definition(version), files,
                                                   keep_files, on_start)
        except ConcurrencyLimit:
            raise
        except PoolError as e:
            outcome = InvocationResult.failed(PLATFORM_ERROR, str(e))
        if outcome.phases:
            outcome.phases["queue_ms"] += waited_ms
        redact(outcome, secrets)
        self._check_outcome(outcome)
        if kept is not None and outcome.error is not None:
            kept.close()
            kept = None
        return outcome, kept

    def _check_outcome(self, outcome: InvocationResult) -> None:
        """Hold the result and the output to the limits."""
        if outcome.error is None:
            size = len(json.dumps(outcome.value))
            if size > self.limits.max_result_bytes:
                outcome.value = None
                outcome.error = ErrorInfo(
                    RESULT_TOO_LARGE, f"the result is {size} bytes, over the limit of "
                                      f"{self.limits.max_result_bytes}")
        outcome.stdout = _capped(outcome.stdout, self.limits.max_output_bytes)
        outcome.stderr = _capped(outcome.stderr, self.limits.max_output_bytes)

    def _secret_values(self, version: Version) -> dict[str, str]:
        """The version's secrets, opened for one invocation; SecretError if one is gone."""
        sealed = self.registry.sealed_secrets(version.tenant_id, version.secrets)
        missing = sorted(set(version.secrets) - set(sealed))
        if missing:
            raise SecretError(f"secret {', '.join(missing)}, which function {version.name!r} "
                              "is deployed with, does not exist (removed since the deploy?)")
        return {name: self.secret_box.open(version.tenant_id, name, value)
                for name, value in sealed.items()}

    def parse_event(self, body: bytes) -> Any:
        if len(body) > self.limits.max_payload_bytes:
            raise ServiceError(413, "payload_too_large",
                               f"the event is {len(body)} bytes, over the limit of "
                               f"{self.limits.max_payload_bytes}")
        if not body.strip():
            return None
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ServiceError(400, "invalid_json", f"the event is not valid JSON: {e}") from e

    def invoke(self, tenant: Tenant, name: str, event: Any) -> dict:
        version = self._live(tenant, name)
        invocation_id = uuid.uuid4().hex
        started = time.time()
        try:
            outcome = self._run(version, invocation_id, event)
        except ConcurrencyLimit as e:
            raise ServiceError(429, "concurrency_limit",
                               f"function {name!r} is at its concurrency limit: {e}") from e
        return self._recorded(invocation_id, version, event, outcome, started)

    def _recorded(self, invocation_id: str, version: Version, event: Any,
                  outcome: InvocationResult, started: float) -> dict:
        """A sync invocation's record, queued for the registry and answered."""
        self.rollback_times.record(invocation_id, outcome, lambda: self.registry.record_invocation(
            invocation_id, version, event, outcome, started))
        return invocation_record(invocation_id, version, "sync", outcome, started)

    def invoke_stage(self, tenant: Tenant, name: str, event: Any, files: HandOff | None,
                     keep_files: bool) -> tuple[dict, InvocationResult, HandOff | None]:
        """invoke() as a pipeline stage (pipeline.py): the record, the outcome (with what the
        host copied), and the files it kept."""
        version = self._live(tenant, name)
        invocation_id = uuid.uuid4().hex
        started = time.time()
        try:
            outcome, kept = self._run_stage(version, invocation_id, event, files, keep_files)
        except ConcurrencyLimit as e:
            outcome, kept = InvocationResult.failed(
                "ConcurrencyLimit", f"function {name!r} is at its concurrency limit: {e}"), None
        return self._recorded(invocation_id, version, event, outcome, started), outcome, kept

    def invoke_coroutine(self, tenant: Tenant, name: str, event: Any) -> Coroutine | None:
        """A coroutine that makes invoke() on the API's event loop and answers its record,
        or None (from the call, or from the coroutine) where the invocation would wait for
        a thread's work here: then invoke() runs on one of the API's threads.

        On a single host that is a warm call of a live version the pool can serve at once
        with no secrets to read: the sandbox's reply is awaited on the loop."""
        version = self.live.get((tenant.id, name))
        if version is None or not self.runs_on_loop(version):
            return None
        # Shielded: a caller that goes away does not cut the invocation short.
        return _shielded(self._invoke_on_loop(version, event))

    async def _invoke_on_loop(self, version: Version, event: Any) -> dict | None:
        invocation_id = uuid.uuid4().hex
        started = time.time()
        outcome = await self.run_on_loop(version, invocation_id, event)
        if outcome is None:
            return None
        return self._recorded(invocation_id, version, event, outcome, started)

    def runs_on_loop(self, version: Version) -> bool:
        """Whether run_on_loop() may serve the version: it has no secrets to read (a
        registry query) and the platform is open."""
        return not version.secrets and not self.closed

    async def run_on_loop(self, version: Version, invocation_id: str,
                          event: Any) -> InvocationResult | None:
        """_run() of a version runs_on_loop() allows, awaited on the running event loop
        where nothing need wait (a warm instance free, no call queued before it); None
        where it would wait for a thread's work: then _run() on a thread."""
        outcome = await self.pool.invoke_async(version.key, event,
                                               _context(version, invocation_id, {}))
        if outcome is not None:
            self._check_outcome(outcome)
        return outcome

    def invoke_async(self, tenant: Tenant, name: str, event: Any,
                     callback_url: str | None = None) -> str:
        """Persist the invocation, then acknowledge it; a worker runs it. A callback URL
        (checked against the outbound policy now) is POSTed the record once it is done."""
        version = self._live(tenant, name)
        if callback_url is not None:
            try:
                self.callbacks.check(callback_url)
            except CallbackRefused as e:
                raise ServiceError(400, "callback_refused", str(e)) from e
        # Accepted invocations wait in the registry: as many as may wait on a sync call.
        waiting = self.registry.queued_count(tenant.id, name)
        if waiting >= version.waiting_limit:
            raise ServiceError(429, "queue_full",
                               f"function {name!r} has {waiting} invocations waiting, its limit")
        invocation_id = self.registry.add_invocation(version, "async", event, "queued",
                                                     callback_url)
        self._submit_async(tenant.id, invocation_id)
        return invocation_id

    def _submit_tick(self, schedule: Schedule, tick: Tick) -> None:
        function = f"{schedule.tenant_id}/{schedule.function}"
        if tick.invocation is None:
            assert tick.refused is not None
            self.metrics.ticks_refused.inc(function=function, code=tick.refused["code"])
            log.warning("schedule %s: tick %s refused: %s", schedule.id, tick.tick,
                        tick.refused["message"])
            return
        self.metrics.ticks.inc(function=function)
        self._submit_async(schedule.tenant_id, tick.invocation)

    def _submit_async(self, tenant_id: int, invocation_id: str) -> None:
        if not self.closed:  # else it stays queued in the registry, run at the next start
            self.async_runner.submit(tenant_id, self._run_async, tenant_id, invocation_id,
                                     time.monotonic())

    def _run_async(self, tenant_id: int, invocation_id: str, submitted: float) -> None:
        """One attempt; a failure of a retried kind is queued again after its back-off."""
        queued = self.registry.queued_invocation(invocation_id)
        if queued is None:
            return
        version = queued.version
        if version is None:
            self.registry.fail_invocation(invocation_id, ErrorInfo(
                FUNCTION_DELETED, "the function was deleted before this invocation ran"))
        else:
            started = time.time()
            outcome = self._attempt(version, invocation_id, queued.event, submitted)
            if outcome is None:
                return  # closing: still queued, run at the next start
            error = outcome.error
            if (error is not None and error.kind in RETRIED_KINDS
                    and queued.attempt <= version.retries):
                backoff = version.retry_backoff_s * 2 ** (queued.attempt - 1)
                self.rollback_times.record(invocation_id, outcome, lambda: (
                    self.registry.retry_invocation(invocation_id, outcome, started, backoff)))
                self.metrics.retries.inc(function=version.key)
                self.timers.call_in(backoff, self._submit_async, tenant_id, invocation_id)
                return
            self.rollback_times.record(invocation_id, outcome, lambda: (
                self.registry.finish_invocation(invocation_id, outcome, started)))
            if error is not None:
                self.metrics.dead_letters.inc(function=version.key)
        if queued.callback:
            self.callbacks.deliver(invocation_id, tenant_id)

    def _attempt(self, version: Version, invocation_id: str, event: Any,
                 submitted: float) -> InvocationResult | None:
        """Run an async invocation once, waiting for a free slot; None if the platform closes."""
        while not self.closed:
            try:
                # 'running' once it has a sandbox: until then a restart simply re-runs it.
                return self._run(version, invocation_id, event,
                                 lambda: self.registry.set_running(invocation_id), submitted)
            except ConcurrencyLimit:
                time.sleep(ASYNC_RETRY_S)  # an accepted invocation waits its turn
            except Exception as e:  # noqa: BLE001 - an async invocation records every failure
                log.exception("async invocation %s", invocation_id)
                return InvocationResult.failed(PLATFORM_ERROR, str(e))
        return None

    def _recover(self) -> dict:
        queued, interrupted = self.registry.recover()
        now = time.time()
        for invocation_id, tenant_id, retry_at in queued:
            if retry_at is None or retry_at <= now:
                self._submit_async(tenant_id, invocation_id)
            else:  # a retry's back-off is kept across the restart: what is left of it
                self.timers.call_in(retry_at - now, self._submit_async, tenant_id,
                                    invocation_id)
        for invocation_id, tenant_id, _ in self.registry.pending_callbacks():
            self.callbacks.deliver(invocation_id, tenant_id)  # its attempt waits until due
        if queued or interrupted:
            log.warning("after restart: %d queued invocations re-submitted, %d interrupted",
                        len(queued), len(interrupted))
        return {"requeued": len(queued), "interrupted": len(interrupted)}

    def invocation(self, tenant: Tenant, invocation_id: str) -> dict:
        record = self.registry.invocation(tenant.id, invocation_id)
        if record is None:
            raise ServiceError(404, "invocation_not_found",
                               f"no invocation {invocation_id!r}")
        return record

    def logs(self, tenant: Tenant, name: str, limit: int, before: float | None = None,
             after: float | None = None) -> list[dict]:
        if self.registry.version(tenant.id, name) is None:
            raise _no_function(name)
        return self.registry.logs(tenant.id, name, limit, before, after)

    def failed_invocations(self, tenant: Tenant, function: str | None = None,
                           limit: int = 100) -> list[dict]:
        """The dead letters: async invocations that failed for good."""
        return self.registry.failed_async(tenant.id, function, limit)

    # schedules

    def add_schedule(self, tenant: Tenant, name: str, cron: str, event: Any) -> Schedule:
        """Invoke the function on every tick of `cron` (see platform/schedule.py)."""
        try:
            first = next_tick(cron, self.scheduler.clock())
        except CronError as e:
            raise ServiceError(400, "invalid_cron", str(e)) from e
        size = len(json.dumps(event))
        if size > self.limits.max_payload_bytes:
            raise ServiceError(413, "payload_too_large",
                               f"the event is {size} bytes, over the limit of "
                               f"{self.limits.max_payload_bytes}")
        try:
            schedule = self.registry.add_schedule(tenant.id, name, cron, event, first)
        except RegistryError as e:
            raise _no_function(name) from e
        self.scheduler.wake()
        return schedule

    def schedules(self, tenant: Tenant) -> list[Schedule]:
        return self.registry.schedules(tenant.id)

    def delete_schedule(self, tenant: Tenant, schedule_id: str) -> None:
        if not self.registry.delete_schedule(tenant.id, schedule_id):
            raise ServiceError(404, "schedule_not_found", f"no schedule {schedule_id!r}")

    # secrets

    def set_secret(self, tenant: Tenant, name: str, value: str) -> bool:
        """Store (or replace) a secret, sealed; True if it is new."""
        _check_secret_name(name)
        try:
            size = len(value.encode()) if isinstance(value, str) and value else 0
        except UnicodeEncodeError:  # a lone surrogate from a JSON escape
            size = 0
        if not size:
            raise ServiceError(400, "invalid_secret",
                               "a secret's value is a non-empty string of Unicode characters")
        if size > MAX_VALUE_BYTES:
            raise ServiceError(413, "payload_too_large",
                               f"a secret's value is at most {MAX_VALUE_BYTES} bytes")
        try:
            sealed = self.secret_box.seal(tenant.id, name, value)
        except SecretError as e:
            raise ServiceError(500, "secret_key", str(e)) from e
        return self.registry.set_secret(tenant.id, name, sealed)

    def secrets(self, tenant: Tenant) -> list[dict]:
        """Names and times only: a value is never answered."""
        return self.registry.secret_names(tenant.id)

    def delete_secret(self, tenant: Tenant, name: str) -> None:
        if not self.registry.delete_secret(tenant.id, name):
            raise ServiceError(404, "secret_not_found", f"no secret {name!r}")

    def recent_invocations(self, tenant: Tenant, limit: int) -> list[dict]:
        """The tenant's latest finished invocations of all its functions, the latest first."""
        return self.registry.recent(tenant.id, limit)

    def activity(self, tenant: Tenant, window_s: int, now: float | None = None) -> dict:
        """The tenant's invocations that finished in the last `window_s` seconds: a count per
        second (the rate) and a latency histogram (the Prometheus histogram's buckets, not
        cumulative: each bucket counts those above the previous bound)."""
        now = time.time() if now is None else now
        start = float(int(now) - window_s + 1)
        per_second = [0] * window_s
        buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        failed = 0
        for finished, duration_ms, status in self.registry.finished_since(tenant.id, start):
            per_second[min(int(finished - start), window_s - 1)] += 1
            seconds = duration_ms / 1e3
            buckets[next((i for i, b in enumerate(LATENCY_BUCKETS) if seconds <= b),
                         len(LATENCY_BUCKETS))] += 1
            failed += status == "failed"
        return {"start": start, "window_s": window_s, "per_second": per_second,
                "invocations": sum(per_second), "failed": failed,
                "latency": {"bounds_s": list(LATENCY_BUCKETS), "counts": buckets}}

    def usage(self, tenant: Tenant, since: float) -> list[dict]:
        return self.registry.usage(tenant.id, since)

    def pool_report(self, tenant: Tenant) -> dict:
        """What GET /v1/pool answers: memory and the tenant's functions' pools."""
        return {
            "backend": self.backend.name,
            "memory_bytes": self.pool.memory_bytes(),
            "memory_budget_bytes": self.pool.config.memory_budget_bytes,
            "functions": self.pool_status(tenant),
        }

    def pool_status(self, tenant: Tenant) -> list[dict]:
        prefix = f"{tenant.id}/"
        return [s for s in self.pool.status() if tenant.admin or s["function"].startswith(prefix)]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.scheduler.close()
        self.timers.close()
        self.async_runner.shutdown()
        self.pool.close()
        self.backend.close()
        self.callbacks.close()
        self.registry.close()


def _context(version: Version, invocation_id: str, secrets: dict[str, str]) -> dict:
    """The handler's context; the secrets are given to this invocation alone (a template:
    the module, a warm-up, never sees them)."""
    return invocation_context(version.memory_mib, version.timeout_s, invocation_id,
                              function=version.name, version=version.version,
                              tenant=version.tenant_id,
                              **({"secrets": secrets} if version.secrets else {}))


async def _shielded(invocation: Coroutine) -> Any:
    return await asyncio.shield(invocation)


def _capped(text: str, limit: int) -> str:
    """At most `limit` bytes of an output stream, saying where it was cut."""
    data = text.encode(errors="replace")
    if len(data) <= limit:
        return text
    cut = data[:limit].decode(errors="ignore")
    return f"{cut}\n[usetl: output cut at {limit} bytes of {len(data)}]\n"


def _check_name(name: str, what: str) -> None:
    if not NAME.match(name):
        raise ServiceError(400, "invalid_name",
                           f"{what} name {name!r} must be 1-63 of a-z, 0-9, '-' and '_'")


def _check_secret_name(name: str) -> None:
    if not isinstance(name, str) or not SECRET_NAME.match(name):
        raise ServiceError(400, "invalid_name", f"secret name {name!r} must be 1-128 of "
                           "A-Z, a-z, 0-9 and '_', not starting with a digit")


def _no_function(name: str) -> ServiceError:
    return ServiceError(404, "function_not_found", f"no function {name!r}")


def _write_files(code_dir: Path, files: dict[str, bytes], executables: set[str]) -> None:
    code_dir.mkdir(parents=True)
    for path, data in files.items():
        target = code_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        if path in executables:
            target.chmod(0o755)
    _seal_code(code_dir)


def _seal_code(code_dir: Path) -> None:
    """The code read-only, and readable by the sandboxes' unprivileged user; programs the
    function runs (executable files) stay executable."""
    for directory, dirs, names in os.walk(code_dir):
        for name in names:
            path = os.path.join(directory, name)
            os.chmod(path, 0o555 if os.lstat(path).st_mode & 0o111 else 0o444)
        for name in dirs:
            os.chmod(os.path.join(directory, name), 0o755)
    for directory in [code_dir, *code_dir.parents]:
        # The sandboxes bind-mount it; their unprivileged user must be able to read it.
        if directory.name == "code":
            break
        directory.chmod(0o755)
