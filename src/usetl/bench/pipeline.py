"""`usetl bench pipeline`: a 3-stage pipeline's zero-copy hand-off against an HTTP store.

The same three functions (extract: make `mib` MiB; check: CRC-32 them and pass
them on; load: CRC-32 and size) run two ways, alternately, in one Platform with
the KVM backend: as a pipeline, where each stage's output file reaches the
next stage's host region by mapping (usetl.libos.handoff), and as three plain
invocations in a row that pass the bytes through a local HTTP server
(etl.post, then etl.get in the next function), as one would without
pipelines. Each run is timed from the first request to the last result; the
result is checked against the CRC the host computes.
"""

from __future__ import annotations

import base64
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from usetl.bench.download import Server
from usetl.bench.errors import BenchError
from usetl.image.modstore import ModuleStore
from usetl.platform.backends import choose_backend
from usetl.platform.pipeline import Pipelines
from usetl.platform.service import DeployRequest, Platform

FUNCTIONS = {
    "extract": """
from usetl import etl
def handler(event, context):
    data = bytes(range(256)) * (event["mib"] << 12)
    if event.get("store"):
        etl.post(event["store"] + "/extracted", data)
    else:
        etl.put("data.bin", data)
    return event
""",
    "check": """
import zlib
from usetl import etl
def handler(event, context):
    store = event.get("store")
    source = etl.get(store + "/extracted") if store else etl.stat("data.bin")
    event["crc32"] = zlib.crc32(source.view())
    if store:
        etl.post(store + "/checked", source)  # sent from the host region as it is
    else:
        etl.put("data.bin", source.view())
    return event
""",
    "load": """
import zlib
from usetl import etl
def handler(event, context):
    store = event.get("store")
    source = etl.get(store + "/checked") if store else etl.stat("data.bin")
    return {"crc32": zlib.crc32(source.view()), "checked": event["crc32"], "size": source.size}
""",
}
STAGES = ["extract", "check", "load"]
MEMORY_MIB = 512  # a stage holds the data and the file being written


def expected(mib: int) -> dict:
    crc = zlib.crc32(bytes(range(256)) * (mib << 12))
    return {"crc32": crc, "checked": crc, "size": mib << 20}


def _checked(result: Any, want: dict, how: str) -> None:
    if result != want:
        raise BenchError(f"the {how} run gave {result!r:.200}, expected {want}")


def run(mib: int = 64, runs: int = 5, say: Callable[[str], None] = lambda m: None) -> dict:
    server = Server()
    root = Path(tempfile.mkdtemp(prefix="usetl-bench-pipeline-"))
    platform = Platform(choose_backend("kvm", hide=[root]), root / "state",
                        ModuleStore(root / "modules"))
    try:
        tenant, _ = platform.registry.add_tenant("bench")
        for name, source in FUNCTIONS.items():
            say(f"pipeline: deploying {name}")
            platform.deploy(tenant, name, DeployRequest(
                handler="fn.py:handler", requirements=[], memory_mib=MEMORY_MIB,
                allow=[server.base + "/"],
                files={"fn.py": base64.b64encode(source.encode()).decode()}))
        pipelines = Pipelines(platform)
        pipelines.deploy(tenant, "bench", STAGES)
        want = expected(mib)
        store = f"{server.base}/store"

        def by_pipeline() -> dict:
            record = pipelines.run(tenant, "bench", {"mib": mib})
            if record["status"] != "succeeded":
                raise BenchError(f"the pipeline failed: {record['error']}")
            _checked(record["result"], want, "pipeline")
            return record

        def by_http() -> None:
            event: Any = {"mib": mib, "store": store}
            for name in STAGES:
                record = platform.invoke(tenant, name, event)
                if record["error"] is not None:
                    raise BenchError(f"{name} failed: {record['error']['message']}")
                event = record["result"]
            _checked(event, want, "HTTP")

        return _measure(by_pipeline, by_http, mib, runs, say)
    finally:
        platform.close()
        server.close()


def _measure(by_pipeline: Callable[[], dict], by_http: Callable[[], None], mib: int,
             runs: int, say: Callable[[str], None]) -> dict:
    """One untimed run each, then `runs` of each, alternating."""
    by_pipeline()
    by_http()
    pipeline_ms, http_ms, copied = [], [], []
    for i in range(runs):
        say(f"pipeline: run {i + 1} of {runs}")
        t0 = time.perf_counter()
        record = by_pipeline()
        pipeline_ms.append((time.perf_counter() - t0) * 1e3)
        copied.append(sum(s["copied_bytes"] for s in record["stages"]))
        t0 = time.perf_counter()
        by_http()
        http_ms.append((time.perf_counter() - t0) * 1e3)
    p, h = statistics.median(pipeline_ms), statistics.median(http_ms)
    return {"mib": mib, "runs": runs, "stages": len(STAGES), "backend": "kvm",
            "pipeline_ms": p, "http_ms": h, "speedup": h / p, "copied_bytes": max(copied),
            "pipeline_all_ms": pipeline_ms, "http_all_ms": http_ms}


def format_report(r: dict) -> str:
    return (f"{r['stages']}-stage pipeline handing {r['mib']} MiB from stage to stage "
            f"(KVM backend, median of {r['runs']} runs):\n"
            f"  pipeline (zero-copy hand-off)       {r['pipeline_ms']:8.1f} ms "
            f"({r['copied_bytes']} B copied by the host)\n"
            f"  same functions via a local HTTP store {r['http_ms']:6.1f} ms\n"
            f"  speed-up                            {r['speedup']:8.2f}x")


def run_experiment(cfg, ctx) -> dict:
    """The `pipeline` experiment of `usetl bench all`."""
    return run(64, cfg.pipeline_runs, ctx.say)
