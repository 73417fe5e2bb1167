"""The platform under load: invocations per second and latency, HTTP and Python API.

Clients issue invocations back to back, `load_concurrency` at once, for a
no-op function and for an ETL function; each invocation is timed from the
request to its result, and throughput is completed invocations over the
wall time of the whole run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from usetl.bench.config import BenchConfig
from usetl.bench.errors import FeatureMissing
from usetl.bench.stats import summary


def platform_module():
    try:
        from usetl import platform
    except ImportError as e:
        raise FeatureMissing(f"the platform (issue 5) has not landed: {e}") from e
    return platform


def load(call: Callable[[], None], requests: int, concurrency: int) -> dict:
    """Run `requests` calls from `concurrency` threads; latency and throughput."""
    latencies: list[float] = []
    errors: list[str] = []
    remaining = iter(range(requests))
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                if next(remaining, None) is None:
                    return
            t0 = time.perf_counter()
            try:
                call()
            except Exception as e:  # counted and reported, the load goes on
                with lock:
                    errors.append(str(e)[:200])
                continue
            with lock:
                latencies.append((time.perf_counter() - t0) * 1e3)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if not latencies:
        raise RuntimeError(f"every invocation failed: {errors[:1]}")
    return {"ms": summary(latencies), "per_second": round(len(latencies) / wall, 1),
            "errors": len(errors), "first_error": errors[0] if errors else ""}


def run(cfg: BenchConfig, ctx) -> dict:
    platform_module()
    raise FeatureMissing("the platform (issue 5) has landed but is not wired in yet")
