"""The sandbox interface every backend implements.

A backend turns a deployed function version (`FunctionSpec`) into a
`FunctionTemplate`: a started, function-loaded image from which `Instance`s
are made cheaply (a HyperFork clone, or a child of a zygote process). An
instance serves invocations one at a time; after one it is rolled back to
the template's state or closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from usetl.errors import UsetlError
from usetl.invocation import ErrorInfo, InvocationResult
from usetl.libos.children import ProcessSlots
from usetl.libos.handoff import HandOff


class BackendError(UsetlError):
    """A sandbox could not be created or is no longer usable."""


class FunctionLoadError(BackendError):
    """The function's code failed while it was being loaded (syntax error, import error...)."""

    def __init__(self, error: ErrorInfo):
        super().__init__(f"{error.type}: {error.message}")
        self.error = error


class RollbackImpossible(BackendError):
    """The instance cannot go back to its template's state; it has been closed."""


# How an instance is reused after an invocation: rolled back to its template (the default:
# nothing of one invocation reaches the next), or kept as it is ("warm": Lambda's semantics,
# globals and /tmp persist between calls of the same function version).
REUSE_ROLLBACK, REUSE_WARM = "rollback", "warm"
WARMUP_REQUEST_ID = "warmup"  # the warm-up invocation's context.request_id


@dataclass
class FunctionSpec:
    """What a backend needs to run one deployed function version."""

    key: str  # unique per (tenant, name, version)
    code_dir: Path  # the function's files, read-only
    handler: str  # "file.py:func" or "pkg/mod.py:func", relative to code_dir
    module_dirs: list[Path] = field(default_factory=list)  # installed requirements, on sys.path
    env: dict[str, str] = field(default_factory=dict)
    memory_mib: int = 256
    timeout_s: float = 30.0
    allow: list[str] = field(default_factory=list)  # URL prefixes for the ETL API
    # The deployer's warm-up event as JSON: the handler runs on it once and the template is
    # frozen after that run, lazy imports and caches included. None: frozen after the import.
    warmup: str | None = None
    reuse: str = REUSE_ROLLBACK
    etl_timeout_s: float = 30.0  # each network wait of an ETL request, at most
    # A learned template generation (platform/learning.py): the modules its invocations
    # imported lazily, imported in the template after the function's module.
    generation: int = 1
    learned: list[str] = field(default_factory=list)


class Instance(Protocol):
    """One sandbox that serves invocations one at a time."""

    closed: bool  # its sandbox is gone (closed, or its guest ended)
    instance_id: str  # unique on this host, for an operator (the dashboard, /v1/instances)

    def invoke(self, event: Any, context: dict, timeout: float, files: HandOff | None = None,
               keep_files: bool = False, slots: ProcessSlots | None = None,
               rollback: bool = False) -> InvocationResult:
        """handler(event, context) once; every failure is in the result's error, as data.

        As a pipeline stage: `files` are the previous stage's, shown as host-region files
        (the caller still owns them); with `keep_files`, take_files() then gives the files
        the function wrote in its guest region. `slots`: the function's concurrency (the
        caller took one for this invocation), which each child process takes one of while
        it runs, where the backend runs children itself (KVM's sibling VMs). With
        `rollback` (not as a stage), the rollback starts once it has answered, where the
        backend can: rollback() is then its end.
        """

    async def invoke_async(self, event: Any, context: dict, timeout: float,
                           slots: ProcessSlots | None = None,
                           rollback: bool = False) -> InvocationResult:
        """invoke() (not as a pipeline stage) awaited on an event loop, which it never
        blocks for long. With `rollback`, the rollback starts once it has answered:
        rolled_back_async() is then its end."""

    async def rolled_back_async(self) -> None:
        """The rollback invoke_async(rollback=True) started is done; raises
        RollbackImpossible (and is closed) if it could not be."""

    def take_files(self) -> HandOff | None:
        """The files the last invoke(keep_files=True) wrote (the caller owns them)."""

    def rollback(self) -> None:
        """Back to the template's state; raises RollbackImpossible (and is closed) if it cannot."""

    def own_bytes(self) -> int | None:
        """What the instance holds beyond what it shares with the template, measured now (its
        anonymous memory and memory files of its own): what the pool's budget counts. None
        once it is gone or has no process of its own."""

    def resident_bytes(self) -> int | None:
        """Its process's resident memory now, from a counter (cheap, unlike own_bytes): the
        pool measures an instance again when this moves. None once it is gone."""

    def memory(self) -> dict[str, int] | None:
        """Host memory of the instance's process in bytes, measured now; None once it is
        gone or has no process of its own: `own` (own_bytes()), and `uss`, `pss` and `rss`,
        usetl.procmem's."""

    def children_bytes(self) -> int:
        """Private host memory of the child processes its invocation runs now (KVM: the
        monitors of their VMs), measured now; 0 when none runs or it is gone. The pool's
        budget counts it while the invocation runs."""

    def close(self) -> None: ...


class FunctionTemplate(Protocol):
    memory_bytes: int
    warmup: InvocationResult | None  # the warm-up run's result (output, time), if there was one

    def fork(self) -> Instance: ...

    def save(self, directory: Path) -> None:
        """Write a snapshot; NotImplementedError where the backend has none."""

    def close(self) -> None: ...


class Backend(Protocol):
    name: str  # "kvm" or "process"
    isolation: str  # one line for `usetl serve` to print
    instance_bytes: int  # what a new instance is expected to take, until it is measured

    def template(self, spec: FunctionSpec) -> FunctionTemplate: ...

    def restore(self, spec: FunctionSpec, directory: Path) -> FunctionTemplate:
        """A template from a snapshot written by save(); NotImplementedError where none."""

    def prepare_restore(self) -> None:
        """Start what restore() needs ahead of a first restore, which would wait for it
        (KVM: the snapshot loader process); nothing where there are no snapshots."""

    def overhead_bytes(self) -> int:
        """Memory the backend holds besides templates and instances (KVM: base USFs)."""

    def close(self) -> None:
        """Release what the backend holds besides templates (base images)."""
