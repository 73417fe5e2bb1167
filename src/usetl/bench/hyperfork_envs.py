"""HyperFork (issue 4) as the experiments drive it: clones per call, restore, recycle.

Everything that touches `usetl.hyperfork` is here, so the experiments gain
the HyperFork series the moment it lands and fail those series, with the
reason, until then.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from usetl.bench.envs import CallEnv, Instance, Population
from usetl.bench.errors import BenchError, FeatureMissing
from usetl.bench.workload import HANDLER_RESULT, HANDLER_SOURCE
from usetl.image import ImageArchive

INVOKE_TIMEOUT = 30.0


def hyperfork() -> Any:
    try:
        from usetl import hyperfork as module
    except ImportError as e:
        raise FeatureMissing(f"HyperFork (issue 4) has not landed: {e}") from e
    return module


def function_template(image: ImageArchive, mem_mib: int, source: str = HANDLER_SOURCE) -> Any:
    """A template that has imported the handler's module and run its module-level code."""
    base = hyperfork().Template.start(image=image, mem_mib=mem_mib)
    return base.load_function(source, "handler")


def invoke(clone: Any, event: dict | None = None) -> Any:
    result = clone.invoke(event or {}, {}, INVOKE_TIMEOUT)
    if getattr(result, "error", None):
        raise BenchError(f"clone: {result.error}")
    return result.value


def invoke_checked(clone: Any) -> None:
    value = invoke(clone)
    if value != HANDLER_RESULT:
        raise BenchError(f"clone: wrong result {value!r}, expected {HANDLER_RESULT!r}")


class ForkPerCall(CallEnv):
    """Fork a clone of the function template per call, invoke it, discard it."""

    name, label = "hf_fork", "HyperFork: fork per call"

    def __init__(self, image: ImageArchive, mem_mib: int):
        self.template = function_template(image, mem_mib)

    def call(self) -> None:
        clone = self.template.fork()
        try:
            invoke_checked(clone)
        finally:
            clone.close()

    def close(self) -> None:
        self.template.close()


class ReadyClones(CallEnv):
    """Clones forked ahead of demand; the request pays only for its invocation."""

    name, label = "hf_ready", "HyperFork: ready clone"

    def __init__(self, image: ImageArchive, mem_mib: int):
        self.template = function_template(image, mem_mib)
        self.clone: Any = None

    def before_call(self) -> None:
        self.clone = self.template.fork()

    def call(self) -> None:
        invoke_checked(self.clone)

    def after_call(self) -> None:
        if self.clone is not None:
            self.clone.close()
            self.clone = None

    def close(self) -> None:
        self.after_call()
        self.template.close()


class RestorePerCall(CallEnv):
    """Load the function template from its disk snapshot per call, fork, invoke."""

    name, label = "hf_restore", "HyperFork: restore from snapshot per call"

    def __init__(self, image: ImageArchive, mem_mib: int):
        template = function_template(image, mem_mib)
        self.dir = Path(tempfile.mkdtemp(prefix="usetl-bench-snap-"))
        template.save(self.dir)
        template.close()

    def call(self) -> None:
        template = hyperfork().Template.load(self.dir)
        try:
            clone = template.fork()
            try:
                invoke_checked(clone)
            finally:
                clone.close()
        finally:
            template.close()

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class RecycleClone(CallEnv):
    """One clone reused: each call invokes it, then it is rolled back (untimed)."""

    name, label = "hf_recycle", "HyperFork: recycle (roll back and reuse)"

    def __init__(self, image: ImageArchive, mem_mib: int):
        self.template = function_template(image, mem_mib)
        self.clone = self.template.fork()

    def call(self) -> None:
        invoke_checked(self.clone)

    def after_call(self) -> None:
        self.clone.rollback()

    def close(self) -> None:
        self.clone.close()
        self.template.close()


class Clones(Population):
    """Idle clones of one function template, each after one invocation."""

    name, label = "hf_clone", "HyperFork clone"

    def __init__(self, image: ImageArchive, mem_mib: int):
        self.template = function_template(image, mem_mib)

    def spawn(self) -> Instance:
        clone = self.template.fork()
        invoke_checked(clone)
        return Instance([clone.pid], clone.close)

    def close(self) -> None:
        self.template.close()
