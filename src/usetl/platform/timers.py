"""Calls made later, on one thread: a retry's back-off and a callback's next attempt wait here.

A worker that slept through a back-off would hold a thread that other invocations could
use; here a wait costs an entry in a heap. The calls themselves must be quick (they hand
the work to a runner): one that blocked would delay every later one.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Timers:
    def __init__(self, name: str):
        self.heap: list[tuple[float, int, Callable[..., Any], tuple]] = []
        self.order = itertools.count()  # equal times keep the order they were asked in
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def call_in(self, delay_s: float, fn: Callable[..., Any], *args: Any) -> None:
        """fn(*args) on the timer thread once delay_s seconds have passed."""
        with self.cond:
            if self.closed:
                return  # shutting down: what waits is in the registry, resumed at the next start
            heapq.heappush(self.heap, (time.monotonic() + delay_s, next(self.order), fn, args))
            self.cond.notify()

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.closed and (not self.heap
                                           or self.heap[0][0] > time.monotonic()):
                    timeout = self.heap[0][0] - time.monotonic() if self.heap else None
                    self.cond.wait(timeout)
                if self.closed:
                    return
                _, _, fn, args = heapq.heappop(self.heap)
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - one failed call must not stop the others
                log.exception("a timed call failed")

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.heap.clear()
            self.cond.notify_all()
        self.thread.join()
