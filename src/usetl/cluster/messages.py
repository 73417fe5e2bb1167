"""The typed messages between gateways and workers (JSON on NATS, checked on receipt)."""

from __future__ import annotations

import msgspec

from usetl.libos.handoff import HandedFiles


class HandOffRef(msgspec.Struct, frozen=True):
    """Files a pipeline stage kept, held by the worker that ran it (handoffs.py)."""

    host: str
    id: str
    files: HandedFiles


class Invocation(msgspec.Struct, frozen=True):
    """One invocation on the work queue: what a worker needs besides the registry."""

    id: str
    tenant_id: int
    function: str
    version_id: int
    mode: str  # "sync": the caller waits on `reply`; "async": the record is the answer
    event: str  # JSON
    created: float
    deadline: float | None = None  # sync: epoch seconds after which no one waits
    stage: bool = False  # a pipeline stage: the answer has its outcome and kept files
    files: HandOffRef | None = None  # a stage's files from the previous stage
    keep_files: bool = False  # a stage whose written files go on to the next


class CallbackDue(msgspec.Struct, frozen=True):
    """An async invocation's record is final and has a callback to deliver (its record
    says to where, and how far delivery got)."""

    id: str
    tenant_id: int


class Build(msgspec.Struct, frozen=True):
    """A gateway asks a worker to build a new version's template before it goes live."""

    key: str
    handler: str
    env: dict[str, str]
    memory_mib: int
    timeout_s: float
    allow: list[str]
    concurrency: int
    queue: int
    warmup: str | None
    reuse: str


class Built(msgspec.Struct, frozen=True):
    """A worker's answer to Build: the template's warm-up run, or why it failed to load."""

    host: str
    warmup: dict | None = None  # the warm-up InvocationResult, as msgspec encodes it
    load_error: dict | None = None  # ErrorInfo.as_dict() of a load failure
    error: str | None = None  # any other failure (the sandbox, the bundle)


def encode(message: msgspec.Struct) -> bytes:
    return msgspec.json.encode(message)


def decode(data: bytes, kind: type[msgspec.Struct]):
    """The message, or msgspec.ValidationError / DecodeError for anything malformed."""
    return msgspec.json.decode(data, type=kind)
