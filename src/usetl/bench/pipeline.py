"""`usetl bench pipeline`: a 3-stage pipeline's zero-copy hand-off against an HTTP store.

The same three functions (extract: make `mib` MiB; check: CRC-32 them and pass
them on; load: CRC-32 and size) run two ways, alternately, in one Platform with
the KVM backend: as a pipeline, where each stage's output file reaches the
next stage's host region by mapping (usetl.libos.handoff), and as three plain
invocations in a row that pass the bytes through a local HTTP server
(etl.post, then etl.get in the next function), as one would without
pipelines. Each run is timed from the first request to the last result; the
result is checked against the CRC the host computes.

Each way has its own deployment of the same code (the HTTP way's names end in
`-via-http`), so each has its own warm instances, as a pipeline run over and over
has: sharing them, every run would first undo the other way's mappings and
first touches (a handed-in file mapped over the host region, 64 MiB fetched into
it), which is what alternating measures, not either way. A pool keeps two
instances of a function serving in turn (one rolls back while the other
serves), so two untimed runs of each way come first.
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
        etl.put("data.bin", source)  # handed on as it is (no copy)
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
HTTP_SUFFIX = "-via-http"
WARM_RUNS = 2  # untimed, of each way: each of a function's two serving instances once
SETTLE_S = 120.0
WHERE = ("dispatch_ms", "guest_ms", "etl_ms")  # of each stage's invocation (pool.PHASES)
COUNTS = ("first_touches", "exits")  # of each stage's invocation (its record's metrics)


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
            for deployed in (name, name + HTTP_SUFFIX):
                say(f"pipeline: deploying {deployed}")
                platform.deploy(tenant, deployed, DeployRequest(
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

        def by_http() -> list[dict]:
            event: Any = {"mib": mib, "store": store}
            records = []
            for name in STAGES:
                record = platform.invoke(tenant, name + HTTP_SUFFIX, event)
                if record["error"] is not None:
                    raise BenchError(f"{name} failed: {record['error']['message']}")
                event = record["result"]
                records.append(record)
            _checked(event, want, "HTTP")
            return records

        def settled() -> None:
            if not platform.pool.wait_settled(SETTLE_S):
                raise BenchError(f"the instances were still rolling back after {SETTLE_S} s")

        def stage_records(run: dict) -> list[dict]:
            """Each stage's invocation record, with what the host copied to hand files on."""
            return [{**platform.invocation(tenant, s["invocations"][0]),
                     "copied_bytes": s["copied_bytes"]} for s in run["stages"]]

        ways = {"pipeline": (by_pipeline, stage_records), "http": (by_http, lambda rs: rs)}
        return _measure(ways, settled, mib, runs, say)
    finally:
        platform.close()
        server.close()


Way = tuple[Callable[[], Any], Callable[[Any], list[dict]]]  # a run; its stages' records


def _measure(ways: dict[str, Way], settled: Callable[[], None], mib: int, runs: int,
             say: Callable[[str], None]) -> dict:
    """WARM_RUNS untimed runs of each way, then `runs` of each, alternating, each from a
    settled host: the rollbacks of one way's instances (64 MiB restored or zeroed each)
    would otherwise take CPU from the other way's next run. A way is a run and what gives
    its stages' invocation records (their phases and counts say where the time went) from
    what the run answered, called once the clock has stopped: reading records from the
    registry is not the run's work."""
    for _ in range(WARM_RUNS):
        for run_once, _ in ways.values():
            run_once()
    times: dict[str, list[float]] = {way: [] for way in ways}
    stages: dict[str, list[list[dict]]] = {way: [] for way in ways}
    for i in range(runs):
        say(f"pipeline: run {i + 1} of {runs}")
        for way, (run_once, records_of) in ways.items():
            settled()
            t0 = time.perf_counter()
            done = run_once()
            times[way].append((time.perf_counter() - t0) * 1e3)
            stages[way].append(records_of(done))
    copied = max(sum(r["copied_bytes"] for r in run) for run in stages["pipeline"])
    p, h = statistics.median(times["pipeline"]), statistics.median(times["http"])
    where = {way: _where(stages[way]) for way in stages}
    # The functions' own work: each stage's guest time, the lesser of the two ways'. A
    # pipeline that cost nothing beyond it would be `ceiling` times faster than the HTTP way.
    work = sum(min(a["guest_ms"], b["guest_ms"])
               for a, b in zip(where["pipeline"], where["http"], strict=True))
    return {"mib": mib, "runs": runs, "stages": len(STAGES), "backend": "kvm",
            "pipeline_ms": p, "http_ms": h, "speedup": h / p,
            "work_ms": work, "ceiling": h / work if work else None,
            "paired_speedup": statistics.median(
                http / pipe for pipe, http in zip(times["pipeline"], times["http"], strict=True)),
            "copied_bytes": copied, "pipeline_all_ms": times["pipeline"],
            "http_all_ms": times["http"], "where": where}


def _where(runs: list[list[dict]]) -> list[dict]:
    """Per stage, the median of each phase (ms) and each count over the runs."""
    return [{"function": records[0]["function"],
             **{phase: statistics.median(r["phases"].get(phase, 0.0) for r in records)
                for phase in WHERE},
             **{count: statistics.median(r["metrics"][count] or 0 for r in records)
                for count in COUNTS}}
            for records in zip(*runs, strict=True)]


def format_report(r: dict) -> str:
    lines = [f"{r['stages']}-stage pipeline handing {r['mib']} MiB from stage to stage "
             f"(KVM backend, median of {r['runs']} runs):",
             f"  pipeline (zero-copy hand-off)       {r['pipeline_ms']:8.1f} ms "
             f"({r['copied_bytes']} B copied by the host)",
             f"  same functions via a local HTTP store {r['http_ms']:6.1f} ms",
             f"  speed-up                            {r['speedup']:8.2f}x "
             f"(median of each run's pair: {r['paired_speedup']:.2f}x)",
             f"  the functions' own work (each stage's least guest ms) {r['work_ms']:6.1f} ms: "
             f"a pipeline costing nothing more would be {r['ceiling']:.2f}x",
             "  where each stage's time went, median ms (" + ", ".join(WHERE) + ") and counts ("
             + ", ".join(COUNTS) + "):"]
    for way, stages in r["where"].items():
        for stage in stages:
            lines.append(f"    {way:8} {stage['function']:17} "
                         + " ".join(f"{stage[phase]:8.1f}" for phase in WHERE)
                         + " ".join(f"{stage[count]:8.0f}" for count in COUNTS))
    return "\n".join(lines)


def run_experiment(cfg, ctx) -> dict:
    """The `pipeline` experiment of `usetl bench all`."""
    return run(64, cfg.pipeline_runs, ctx.say)
