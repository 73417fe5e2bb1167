"""HyperFork (issue 4) as the experiments drive it: clones per call, restore, recycle.

Everything that touches `usetl.hyperfork` is here. A function template has
loaded the workload's module (the agent's load request, from a read-only
host mount) and run its module-level code; each request is the agent's
invoke request, handler(event, context), whose JSON value is checked.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from usetl import abi
from usetl.bench.envs import CallEnv, Instance, Population
from usetl.bench.errors import BenchError, FeatureMissing
from usetl.bench.stats import summary
from usetl.bench.workload import HANDLER_RESULT, HANDLER_SOURCE
from usetl.image import ImageArchive, cache_root

INVOKE_TIMEOUT = 30.0
LOAD = {"kind": abi.LOAD, "path": "/fn/fn.py", "handler": "handler"}


def hyperfork() -> Any:
    try:
        from usetl import hyperfork as module
    except ImportError as e:
        raise FeatureMissing(f"HyperFork (issue 4) has not landed: {e}") from e
    return module


class FunctionTemplate:
    """A base template, and a function template over the workload's module."""

    def __init__(self, image: ImageArchive, mem_mib: int, source: str = HANDLER_SOURCE):
        self.dir = Path(tempfile.mkdtemp(prefix="fn-", dir=_scratch()))
        (self.dir / "fn.py").write_text(source)
        self.base = hyperfork().Template.start(image=image, mem_mib=mem_mib)
        try:
            self.fn = self.base.load_function(LOAD, mounts={"fn": str(self.dir)})
        except Exception:
            self.base.close()
            raise

    def close(self) -> None:
        self.fn.close()
        self.base.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _scratch() -> Path:
    path = cache_root() / "bench" / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run(clone: Any, code: str) -> str:
    """Run code in a clone (exec request); its stdout."""
    result = clone.run_code(code, timeout=INVOKE_TIMEOUT)
    if result.error:
        raise BenchError(f"clone: {result.error.type}: {result.error.message}")
    return result.stdout


def call(clone: Any) -> None:
    """One invocation of the loaded handler, its value checked."""
    result = clone.invoke({}, None, INVOKE_TIMEOUT)
    if result.error:
        raise BenchError(f"clone: {result.error.type}: {result.error.message}")
    if result.value != HANDLER_RESULT:
        raise BenchError(f"clone: wrong result {result.value!r}, expected {HANDLER_RESULT!r}")


class ForkPerCall(CallEnv):
    """Fork a clone of the function template per call (not warmed), call it, discard it."""

    name, label = "hf_fork", "HyperFork: fork per call"

    def __init__(self, image: ImageArchive, mem_mib: int):
        self.t = FunctionTemplate(image, mem_mib)
        self.fork_ms: list[float] = []
        # The clone's own account of its making (CloneReady.timings), and the page faults
        # its process took up to its first result (the guest's first touches among them).
        self.steps: dict[str, list[float]] = {}

    def begin_timed(self) -> None:
        self.fork_ms.clear()
        self.steps.clear()

    def call(self) -> None:
        clone = self.t.fn.fork(warm=False)
        self.fork_ms.append(clone.fork_ms)
        try:
            call(clone)
            steps = {**clone.timings, "page_faults": minor_faults(clone.pid)}
            steps["made_ahead"] = clone.timings.get("made_ahead", 0.0)  # by an idle template
            for key, value in steps.items():
                self.steps.setdefault(key, []).append(value)
        finally:
            clone.close()

    def extra(self) -> dict:
        """Clone creation alone: from fork() to the clone ready for its first request; the
        medians of its steps."""
        steps = {key: statistics.median(v) for key, v in self.steps.items()}
        if "made_ahead" in self.steps:  # the share of the clones made ahead
            steps["made_ahead"] = statistics.mean(self.steps["made_ahead"])
        return {"fork_ms": summary(self.fork_ms), "steps": steps}

    def close(self) -> None:
        self.t.close()


def minor_faults(pid: int) -> int:
    """The minor page faults a process has taken (/proc/PID/stat's minflt)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


class ReadyClones(CallEnv):
    """Clones forked and warmed ahead of demand; the request pays for its call only."""

    name, label = "hf_ready", "HyperFork: ready clone"

    def __init__(self, image: ImageArchive, mem_mib: int):
        self.t = FunctionTemplate(image, mem_mib)
        self.clone: Any = None

    def before_call(self) -> None:
        self.clone = self.t.fn.fork(warm=True)

    def call(self) -> None:
        call(self.clone)

    def after_call(self) -> None:
        if self.clone is not None:
            self.clone.close()
            self.clone = None

    def close(self) -> None:
        self.after_call()
        self.t.close()


class RestorePerCall(CallEnv):
    """Load the function template from its disk snapshot per call, fork, call."""

    name, label = "hf_restore", "HyperFork: restore from snapshot per call"

    def __init__(self, image: ImageArchive, mem_mib: int):
        t = FunctionTemplate(image, mem_mib)
        self.snapshot = Path(tempfile.mkdtemp(prefix="snap-", dir=_scratch()))
        try:
            t.fn.save(self.snapshot)
        finally:
            t.base.close()
        # The snapshot's mounts point at the function's directory: it must outlive the template.
        t.fn.close()
        self.fn_dir = t.dir

    def call(self) -> None:
        template = hyperfork().Template.load(self.snapshot)
        try:
            clone = template.fork(warm=False)
            try:
                call(clone)
            finally:
                clone.close()
        finally:
            template.close()

    def close(self) -> None:
        shutil.rmtree(self.snapshot, ignore_errors=True)
        shutil.rmtree(self.fn_dir, ignore_errors=True)


class RecycleClone(CallEnv):
    """One clone reused: each call is its first request after a rollback (done untimed)."""

    name, label = "hf_recycle", "HyperFork: recycle (roll back and reuse)"

    def __init__(self, image: ImageArchive, mem_mib: int):
        self.t = FunctionTemplate(image, mem_mib)
        self.clone = self.t.fn.fork(warm=True)

    def call(self) -> None:
        call(self.clone)

    def after_call(self) -> None:
        self.clone.rollback()

    def close(self) -> None:
        self.clone.close()
        self.t.close()


class Clones(Population):
    """Idle clones of one function template, each after one call."""

    name, label = "hf_clone", "HyperFork clone"

    def __init__(self, image: ImageArchive, mem_mib: int):
        self.t = FunctionTemplate(image, mem_mib)

    def spawn(self) -> Instance:
        clone = self.t.fn.fork()
        try:
            call(clone)
        except BenchError:
            clone.close()
            raise
        return Instance([clone.pid], clone.close)

    def shared_pids(self) -> list[int]:
        return [self.t.fn.pid]

    def close(self) -> None:
        self.t.close()
