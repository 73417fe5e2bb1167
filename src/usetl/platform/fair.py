"""Asynchronous invocations run on a few threads, taking turns between tenants.

A plain pool of threads runs work in the order it arrived, so one tenant
that queues ten thousand invocations holds back every other tenant's next
one. Here each tenant (any hashable owner) has its own queue and the
threads serve the owners round-robin: a tenant waits for at most one
invocation of each other busy tenant.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

log = logging.getLogger(__name__)


class FairRunner:
    def __init__(self, workers: int, name: str):
        self.queues: dict[Hashable, deque[tuple[Callable[..., Any], tuple]]] = {}
        self.turns: deque[Hashable] = deque()  # owners with work, in the order they are served
        self.cond = threading.Condition()
        self.closed = False
        self.threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                        for i in range(workers)]
        for t in self.threads:
            t.start()

    def submit(self, owner: Hashable, fn: Callable[..., Any], *args: Any) -> None:
        """Queue fn(*args) behind `owner`'s earlier work."""
        with self.cond:
            if self.closed:
                raise RuntimeError("the runner is shut down")
            queue = self.queues.get(owner)
            if queue is None:
                queue = self.queues[owner] = deque()
                self.turns.append(owner)
            queue.append((fn, args))
            self.cond.notify()

    def _next(self) -> tuple[Callable[..., Any], tuple] | None:
        with self.cond:
            while not self.turns and not self.closed:
                self.cond.wait()
            if self.closed:
                return None
            owner = self.turns.popleft()
            queue = self.queues[owner]
            item = queue.popleft()
            if queue:
                self.turns.append(owner)  # its next item waits for the others' turns
            else:
                del self.queues[owner]
            return item

    def _work(self) -> None:
        while (item := self._next()) is not None:
            fn, args = item
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - one invocation's failure must not end a worker
                log.exception("asynchronous work failed")

    def shutdown(self) -> None:
        """Stop taking work; what is queued is dropped (the registry still has it queued)."""
        with self.cond:
            self.closed = True
            self.queues.clear()
            self.turns.clear()
            self.cond.notify_all()
