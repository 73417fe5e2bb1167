"""An invocation's result: one type from the guest agent's reply to the stored record.

The monitor (usf/running.py) builds an `InvocationResult` from the agent's reply, a
clone process sends it to the server as a typed message (hyperfork/protocol.py),
the platform stores it and answers with it. Errors are `ErrorInfo`: a type
(the exception's class name for an error in the function's code, or one of the
platform's kinds below), a message and the guest traceback, always as data.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

import msgspec

# The error types the monitor and the platform produce are the contract's (the function's
# own errors carry their exception's class name).
from usetl.abi import (
    AGENT_ERROR,
    ERROR_KINDS,
    ERROR_TYPES,
    FUNCTION_DELETED,
    GUEST_CRASH,
    GUEST_ENDED,
    GUEST_EXIT,
    GUEST_FAULT,
    IMPORTED_MAX,
    INSTANCE_DIED,
    MODULE_NAME,
    MODULE_NAME_MAX,
    MONITOR_ERROR,
    PLATFORM,
    PLATFORM_ERROR,
    RESULT_TOO_LARGE,
    SANDBOX_ERROR,
    TIMEOUT,
)

__all__ = [
    "AGENT_ERROR", "FUNCTION_DELETED", "GUEST_CRASH", "GUEST_ENDED", "GUEST_EXIT", "GUEST_FAULT",
    "INSTANCE_DIED", "MONITOR_ERROR", "PLATFORM_ERROR", "RESULT_TOO_LARGE", "SANDBOX_ERROR",
    "TIMEOUT",
    "ErrorInfo", "InvocationResult", "IoUsage", "ModuleNames", "invocation_context",
]

# Module names a guest reports it imported (usetl.abi's "imported"): checked on receipt, as
# every message from a guest or a clone is.
ModuleNames = Annotated[
    list[Annotated[str, msgspec.Meta(pattern=MODULE_NAME, max_length=MODULE_NAME_MAX)]],
    msgspec.Meta(max_length=IMPORTED_MAX),
]


def invocation_context(memory_mib: int, timeout: float | None, request_id: str | None = None,
                       **fields: Any) -> dict[str, Any]:
    """The context a handler is called with; the one place it is made.

    request_id (new if not given), deadline (epoch seconds, None without a timeout),
    memory_mib, and what the platform adds (function, version, tenant).
    """
    deadline = time.time() + timeout if timeout is not None else None
    return {"request_id": request_id or uuid.uuid4().hex, "deadline": deadline,
            "memory_mib": memory_mib, **fields}


class ErrorInfo(msgspec.Struct, frozen=True):
    """Why an invocation (or a load) failed: usetl.abi.error's form as a type.

    kind (usetl.abi.ERROR_KINDS) is "handler" for an exception the function's code
    raised, which the agent always says. Left empty (an error the host made), it is the
    one usetl.abi.ERROR_TYPES gives the type, else "platform".
    """

    type: str
    message: str
    traceback: str = ""
    kind: str = ""

    def __post_init__(self) -> None:
        if not self.kind:
            msgspec.structs.force_setattr(self, "kind", ERROR_TYPES.get(self.type, PLATFORM))
        elif self.kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {self.kind!r}")

    def as_dict(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback,
                "kind": self.kind}

    def text(self) -> str:
        """The traceback if there is one, else "type: message" (for a terminal)."""
        return self.traceback or f"{self.type}: {self.message}\n"


class IoUsage(msgspec.Struct):
    """The invocation's I/O as the host measured it (ETL requests and the socket path)."""

    requests: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    host_cpu_s: float = 0.0
    wall_s: float = 0.0
    copied_bytes: int = 0  # bytes the host copied into or out of the ETL regions


class InvocationResult(msgspec.Struct):
    """What one request to a guest (exec, load, invoke) produced."""

    value: Any = None  # what the handler returned (JSON)
    error: ErrorInfo | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    total_ms: float = 0.0  # monitor-side, request to reply
    guest_ms: float = 0.0  # the agent's own measure of the request
    guest_cpu_ms: float = 0.0
    syscalls: int = 0
    syscall_ms: float = 0.0
    exits: int = 0  # returns from KVM_RUN the request took (a USF's; 0 elsewhere)
    # Guest page faults KVM fixed itself while it ran (a USF's first touches of pages; 0
    # elsewhere): they never reach the monitor, yet under shadow paging each costs an exit.
    first_touches: int = 0
    io: IoUsage = msgspec.field(default_factory=IoUsage)
    peak_memory_bytes: int | None = None  # None where the backend cannot tell
    unimplemented: dict[str, int] = msgspec.field(default_factory=dict)  # ENOSYS by name
    extra: dict[str, Any] = msgspec.field(default_factory=dict)  # load: import_ms, modules
    # invoke: the modules the handler's call imported (the guest's word: a hint for learning)
    imported: ModuleNames = msgspec.field(default_factory=list)
    # Where an invocation's time went, in ms, as the host measured it: the pool fills it in
    # (platform/pool.py: PHASES), replacing anything a sandbox sent.
    phases: dict[str, float] = msgspec.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failed(cls, type_: str, message: str, total_ms: float = 0.0) -> InvocationResult:
        """A result that carries only an error the host side produced."""
        return cls(error=ErrorInfo(type_, message), total_ms=total_ms)
