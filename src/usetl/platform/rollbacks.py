"""Rollback times into invocation records.

An instance is rolled back after its invocation was answered (off the request's path), so
the pool reports the rollback's time later, and a sync record is itself written after the
answer, in a batch. Whichever of the two comes second puts the time into the record.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from usetl.invocation import InvocationResult

from .registry import Registry


class RollbackTimes:
    def __init__(self, registry: Registry):
        self.registry = registry
        self.lock = threading.Lock()
        self.early: dict[str, float | None] = {}  # reported before the record was written
        self.recorded: set[str] = set()  # written, its report still to come

    def report(self, invocation_id: str, ms: float | None) -> None:
        """From the pool, once per invocation it gave an instance (None: not rolled back)."""
        with self.lock:
            late = invocation_id in self.recorded
            if late:
                self.recorded.discard(invocation_id)
            else:
                self.early[invocation_id] = ms
        if late and ms is not None:
            self.registry.set_rollback_ms(invocation_id, ms)

    def record(self, invocation_id: str, outcome: InvocationResult,
               write: Callable[[], None]) -> None:
        """Write a record with `write`, with the rollback's time in it if it is known."""
        if not outcome.phases:  # the pool never ran it: no report will come
            write()
            return
        with self.lock:  # held while writing, so that a report cannot slip in between
            if invocation_id in self.early:
                ms = self.early.pop(invocation_id)
                if ms is not None:
                    outcome.phases["rollback_ms"] = ms
            else:
                self.recorded.add(invocation_id)
            write()
