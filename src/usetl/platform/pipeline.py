"""Pipelines: ordered stages, each a deployed function, run as one record.

A stage's return value is the next stage's event, and the files it wrote in
its guest region become the next stage's host-region files. On one host that
hand-off copies nothing (usetl.libos.handoff): the memory file behind stage
N's guest region is sealed and mapped read-only into stage N+1's host region;
`copied_bytes` in each stage's record says what the host did copy (0 on the
KVM backend; the process backend's sandbox maps its regions itself, so there
the files are copied, and counted). Across hosts (usetl.cluster.handoffs) a gateway runs
`_run_stages` too, carrying only a reference to the memory file the stage's
worker holds: a next stage on the same host maps it, one on another host
fetches it through the object store and copies it (counted).

A stage may fan out: its event must be a list, each item is one invocation
(run side by side, each seeing the previous stage's files), and the next
stage gets the list of their results. Files written by a fan-out stage's
invocations are not handed on: they would need a merge, that is a copy.

Each stage retries a failed invocation up to its `retries`; a stage that
still fails fails the run, naming the stage. Every invocation is also an
ordinary invocation record of its function (logs, usage).
"""

from __future__ import annotations

import json
import logging
import threading
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from usetl.libos.handoff import HandOff

from .registry import Tenant
from .service import NAME, Platform, ServiceError

log = logging.getLogger(__name__)
MAX_STAGES = 32
MAX_RETRIES = 10
MAX_FAN_OUT = 1000
FAN_OUT_WORKERS = 8  # a fan-out stage's invocations at once (the function's limit still holds)
STAGE_FAILED = "StageFailed"
MAX_LISTED_RUNS = 1000
RUN_STATES = ("queued", "running", "succeeded", "failed", "interrupted")


@dataclass(frozen=True)
class Stage:
    function: str
    retries: int = 0  # failed invocations re-run this many times at most
    fan_out: bool = False  # the event is a list: one invocation per item


def parse_stages(raw: object) -> list[Stage]:
    """Stages from their JSON form: a function name, or {"function", "retries", "fan_out"}."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_STAGES:
        raise ServiceError(400, "invalid_pipeline",
                           f"a pipeline is a list of 1-{MAX_STAGES} stages")
    stages = []
    for i, item in enumerate(raw, 1):
        fields = {"function": item} if isinstance(item, str) else item
        if not isinstance(fields, dict) or set(fields) - {"function", "retries", "fan_out"}:
            raise ServiceError(400, "invalid_pipeline", f"stage {i}: {item!r} is not a function "
                               "name or {function, retries, fan_out}")
        stage = Stage(fields.get("function"), fields.get("retries", 0),
                      fields.get("fan_out", False))
        if not isinstance(stage.function, str):
            raise ServiceError(400, "invalid_pipeline", f"stage {i} names no function")
        retries = stage.retries
        if (not isinstance(retries, int) or isinstance(retries, bool)
                or not 0 <= retries <= MAX_RETRIES):
            raise ServiceError(400, "invalid_pipeline",
                               f"stage {i}: retries must be 0..{MAX_RETRIES}")
        if not isinstance(stage.fan_out, bool):
            raise ServiceError(400, "invalid_pipeline", f"stage {i}: fan_out must be a boolean")
        stages.append(stage)
    return stages


def read_spec(text: str) -> list[dict]:
    """A spec file's stages: TOML (`[[stage]]` tables) or JSON ({"stages": [...]})."""
    try:
        spec = json.loads(text)
    except ValueError:
        try:
            spec = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ServiceError(400, "invalid_pipeline",
                               f"the spec is neither JSON nor TOML: {e}") from e
        return spec.get("stage", [])
    if not isinstance(spec, dict) or "stages" not in spec:
        raise ServiceError(400, "invalid_pipeline", 'a JSON spec is {"stages": [...]}')
    return spec["stages"]


@dataclass
class StageRun:
    """What one stage did: its invocations' records (ids), attempts and hand-off."""

    stage: int
    function: str
    status: str = "running"
    attempts: int = 0
    invocations: list[str] | None = None
    duration_ms: float = 0.0
    files_in: int = 0  # files handed in from the previous stage, and their bytes
    bytes_in: int = 0
    copied_bytes: int = 0  # what the host copied to hand files in and on (0: mapped)
    error: dict | None = None


class StageFailed(Exception):  # noqa: N818 - ends a run, carries the stage's error
    def __init__(self, error: dict):
        super().__init__(error["message"])
        self.error = error


class Pipelines:
    """Deploy, list, delete and run pipelines of a Platform's functions."""

    def __init__(self, platform: Platform):
        self.platform = platform
        self.registry = platform.registry
        self.lock = threading.Lock()  # a fan-out stage's invocations update one StageRun
        queued, interrupted = self.registry.recover_pipeline_runs()
        for run_id, tenant_id in queued:
            platform.async_runner.submit(tenant_id, self._run_queued, run_id)
        if queued or interrupted:
            log.warning("after restart: %d queued pipeline runs re-submitted, %d interrupted",
                        len(queued), interrupted)

    def deploy(self, tenant: Tenant, name: str, raw_stages: object) -> dict:
        """Create or replace a pipeline; every stage must name a deployed function."""
        if not NAME.match(name):
            raise ServiceError(400, "invalid_name",
                               f"pipeline name {name!r} must be 1-63 of a-z, 0-9, '-' and '_'")
        stages = parse_stages(raw_stages)
        for i, stage in enumerate(stages, 1):
            if self.registry.version(tenant.id, stage.function) is None:
                raise ServiceError(400, "unknown_stage",
                                   f"stage {i}: no function {stage.function!r} is deployed")
        return self.registry.put_pipeline(tenant.id, name, [asdict(s) for s in stages])

    def list(self, tenant: Tenant) -> list[dict]:
        return self.registry.pipelines(tenant.id)

    def get(self, tenant: Tenant, name: str) -> dict:
        pipeline = self.registry.pipeline(tenant.id, name)
        if pipeline is None:
            raise ServiceError(404, "pipeline_not_found", f"no pipeline {name!r}")
        return pipeline

    def delete(self, tenant: Tenant, name: str) -> None:
        if not self.registry.delete_pipeline(tenant.id, name):
            raise ServiceError(404, "pipeline_not_found", f"no pipeline {name!r}")

    def run_record(self, tenant: Tenant, run_id: str) -> dict:
        record = self.registry.pipeline_run(tenant.id, run_id)
        if record is None:
            raise ServiceError(404, "run_not_found", f"no pipeline run {run_id!r}")
        return record

    def runs(self, tenant: Tenant, name: str, limit: int = 20,
             status: str | None = None) -> list[dict]:
        """The pipeline's runs, the latest first, each with its stages' records."""
        self.get(tenant, name)
        if not 1 <= limit <= MAX_LISTED_RUNS:
            raise ServiceError(400, "invalid_limit", f"limit must be 1..{MAX_LISTED_RUNS}")
        if status is not None and status not in RUN_STATES:
            raise ServiceError(400, "invalid_status",
                               f"status must be one of {', '.join(RUN_STATES)}")
        return self.registry.pipeline_runs(tenant.id, name, limit, status)

    def run(self, tenant: Tenant, name: str, event: Any) -> dict:
        """Run it now; answers the run's record once it is over."""
        stages = parse_stages(self.get(tenant, name)["stages"])
        run_id = self.registry.add_pipeline_run(tenant.id, name, "sync", "running", event)
        self._run_stages(tenant, run_id, stages, event)
        return self.run_record(tenant, run_id)

    def run_async(self, tenant: Tenant, name: str, event: Any) -> str:
        """Persist the run, then acknowledge it; a worker runs it."""
        self.get(tenant, name)
        run_id = self.registry.add_pipeline_run(tenant.id, name, "async", "queued", event)
        self.platform.async_runner.submit(tenant.id, self._run_queued, run_id)
        return run_id

    def _run_queued(self, run_id: str) -> None:
        queued = self.registry.queued_pipeline_run(run_id)
        if queued is None:
            return
        tenant_id, name, event = queued
        pipeline = self.registry.pipeline(tenant_id, name)
        if pipeline is None:
            self.registry.update_pipeline_run(run_id, "failed", [], error={
                "type": "PipelineDeleted", "stage": None,
                "message": "the pipeline was deleted before this run started"})
            return
        tenant = Tenant(tenant_id, "", False)  # only its id reaches the functions
        self.registry.update_pipeline_run(run_id, "running", [])
        self._run_stages(tenant, run_id, parse_stages(pipeline["stages"]), event)

    def _run_stages(self, tenant: Tenant, run_id: str, stages: list[Stage], event: Any) -> None:
        """Each stage in turn, handing on its result and files; the run's record at the end."""
        records: list[dict] = []
        files: HandOff | None = None
        try:
            for i, stage in enumerate(stages, 1):
                keep = i < len(stages) and not stage.fan_out
                run = StageRun(i, stage.function)
                try:
                    event, kept = self._stage(tenant, stage, run, event, files, keep)
                finally:
                    records.append(asdict(run))
                    self.registry.update_pipeline_run(run_id, "running", records)
                if files is not None:
                    files.close()
                files = kept
        except StageFailed as e:
            self.registry.update_pipeline_run(run_id, "failed", records, error=e.error)
            return
        except Exception as e:  # noqa: BLE001 - a run records every failure
            log.exception("pipeline run %s", run_id)
            self.registry.update_pipeline_run(run_id, "failed", records, error={
                "type": "PlatformError", "stage": len(records) or None, "message": str(e)})
            return
        finally:
            if files is not None:
                files.close()
        self.registry.update_pipeline_run(run_id, "succeeded", records, result=event)

    def _stage(self, tenant: Tenant, stage: Stage, run: StageRun, event: Any,
               files: HandOff | None, keep: bool) -> tuple[Any, HandOff | None]:
        """One stage: its invocation (or one per item), each retried; its result and files."""
        if files is not None:
            run.files_in, run.bytes_in = len(files.files.files), files.files.total_bytes
        run.invocations = []
        if not stage.fan_out:
            record, kept = self._attempts(tenant, stage, run, event, files, keep)
            run.status = "succeeded"
            return record["result"], kept
        if not isinstance(event, list) or len(event) > MAX_FAN_OUT:
            run.status = "failed"
            raise StageFailed(_stage_error(run, "InvalidFanOut", f"a fan-out stage's event "
                                           f"must be a list of at most {MAX_FAN_OUT} items, "
                                           f"not {type(event).__name__}"))
        workers = max(1, min(FAN_OUT_WORKERS, len(event)))
        with ThreadPoolExecutor(workers, thread_name_prefix="usetl-fan-out") as pool:
            records = list(pool.map(
                lambda item: self._attempts(tenant, stage, run, item, files, False)[0], event))
        run.status = "succeeded"
        return [r["result"] for r in records], None

    def _attempts(self, tenant: Tenant, stage: Stage, run: StageRun, event: Any,
                  files: HandOff | None, keep: bool) -> tuple[dict, HandOff | None]:
        """One invocation of the stage's function, retried up to stage.retries times."""
        assert run.invocations is not None
        for attempt in range(stage.retries + 1):
            try:
                record, outcome, kept = self.platform.invoke_stage(
                    tenant, stage.function, event, files, keep)
            except ServiceError as e:  # the function was deleted since the deploy
                run.status = "failed"
                raise StageFailed(_stage_error(run, e.code, str(e))) from e
            with self.lock:
                run.attempts += 1
                run.invocations.append(record["id"])
                run.duration_ms += outcome.total_ms
                run.copied_bytes += outcome.io.copied_bytes
            if record["error"] is None:
                return record, kept
            log.info("pipeline stage %d (%s) attempt %d failed: %s", run.stage, stage.function,
                     attempt + 1, record["error"]["message"])
        run.status = "failed"
        error = record["error"]
        raise StageFailed(_stage_error(
            run, STAGE_FAILED, f"stage {run.stage} ({stage.function}) failed after "
                               f"{stage.retries + 1} attempt(s): {error['type']}: "
                               f"{error['message']}", error))


def _stage_error(run: StageRun, type_: str, message: str, cause: dict | None = None) -> dict:
    return {"type": type_, "stage": run.stage, "function": run.function, "message": message,
            "cause": cause}
