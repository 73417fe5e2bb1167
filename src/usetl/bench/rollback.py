"""Rollback time against the number of guest pages an invocation dirtied.

A clone of a base template runs code that writes one byte in each of N
fresh pages; then `clone.rollback()` is timed in the benchmark process
(from the call to the clone being byte-identical to its template again).
The monitor's own count of restored pages and its own time are recorded
beside it. WARM_RUNS untimed rounds go first at each N: a clone process's
first rollbacks pay its first runs of the path (copy-on-write faults in the
monitor's own heap, code run for the first time), up to 1.6 ms more from
the caller than the monitor's own time, which is not what a rollback costs.
"""

from __future__ import annotations

import time

from usetl.bench import hyperfork_envs
from usetl.bench.config import BenchConfig
from usetl.bench.stats import summary
from usetl.vm.layout import PAGE_SIZE

WARM_RUNS = 3


def dirty_code(pages: int) -> str:
    """Guest code that writes one byte in each of `pages` fresh pages."""
    return (f"buf = bytearray({pages} * {PAGE_SIZE})\n"
            f"for i in range(0, len(buf), {PAGE_SIZE}):\n    buf[i] = 1")


def run(cfg: BenchConfig, ctx) -> dict:
    base = hyperfork_envs.hyperfork().Template.start(image=ctx.image, mem_mib=cfg.usf_mem_mib)
    points = []
    try:
        clone = base.fork()
        try:
            for pages in cfg.rollback_pages:
                samples, monitor_ms, restored = [], [], []
                for i in range(-WARM_RUNS, cfg.rollback_runs):
                    ctx.say(f"{pages} pages, " + (f"run {i + 1}/{cfg.rollback_runs}" if i >= 0
                                                  else "untimed"))
                    hyperfork_envs.run(clone, dirty_code(pages))
                    t0 = time.perf_counter()
                    info = clone.rollback()
                    if i >= 0:
                        samples.append((time.perf_counter() - t0) * 1e3)
                        monitor_ms.append(info.ms)
                        restored.append(info.pages)
                points.append({"pages": pages, "mib": round(pages * PAGE_SIZE / (1 << 20), 3),
                               "ms": summary(samples), "monitor_ms": summary(monitor_ms),
                               "restored_pages": summary([float(p) for p in restored], 0)})
        finally:
            clone.close()
    finally:
        base.close()
    return {"points": points}
