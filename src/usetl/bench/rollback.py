"""Rollback time against the number of guest pages a handler dirtied.

A clone of a function template runs a handler that writes one byte in each
of N fresh pages; then `clone.rollback()` is timed (from the call to the
clone being byte-identical to its template again). The next invocation
checks that the clone answers correctly after the rollback.
"""

from __future__ import annotations

import time

from usetl.bench import hyperfork_envs
from usetl.bench.config import BenchConfig
from usetl.bench.errors import BenchError
from usetl.bench.stats import summary

PAGE = 4096

DIRTY_HANDLER = '''def handler(event, context):
    buf = bytearray(event["pages"] * 4096)
    for i in range(0, len(buf), 4096):
        buf[i] = 1
    return len(buf)
'''


def run(cfg: BenchConfig, ctx) -> dict:
    template = hyperfork_envs.function_template(ctx.image, cfg.usf_mem_mib, DIRTY_HANDLER)
    points = []
    try:
        clone = template.fork()
        try:
            for pages in cfg.rollback_pages:
                samples = []
                for i in range(cfg.rollback_runs):
                    ctx.say(f"{pages} pages, run {i + 1}/{cfg.rollback_runs}")
                    value = hyperfork_envs.invoke(clone, {"pages": pages})
                    if value != pages * PAGE:
                        raise BenchError(f"handler returned {value!r}, expected {pages * PAGE}")
                    t0 = time.perf_counter()
                    clone.rollback()
                    samples.append((time.perf_counter() - t0) * 1e3)
                points.append({"pages": pages, "mib": round(pages * PAGE / (1 << 20), 3),
                               "ms": summary(samples)})
        finally:
            clone.close()
    finally:
        template.close()
    return {"points": points}
