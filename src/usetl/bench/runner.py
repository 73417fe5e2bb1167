"""`usetl bench all`: run every experiment in one go and write DIR/results.json.

Each experiment is a function `run(cfg, ctx) -> dict`. An experiment that
raises is recorded as failed with its reason; inside an experiment, each
series (one environment or one path) is attempted on its own through
`ctx.attempt`, so one missing baseline (no runc, a feature not landed yet)
fails that series only. Nothing is dropped: the report shows failures.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from usetl.bench import (
    children,
    cluster,
    coldstart,
    compat,
    download,
    floors,
    handlers,
    imports,
    machine,
    memory,
    pipeline,
    platform_load,
    rollback,
    startup,
    threads,
)
from usetl.bench.config import BenchConfig
from usetl.bench.errors import reason
from usetl.image import ImageArchive, default_image

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    run: Callable[[BenchConfig, Context], dict]


# In the report's order: the most important first.
EXPERIMENTS = [
    Experiment("floors", "Floors and exits", floors.run),
    Experiment("coldstart", "Cold start", coldstart.run),
    Experiment("memory", "Memory per idle instance", memory.run_idle),
    Experiment("scaling", "Host memory as instances grow", memory.run_scaling),
    Experiment("density", "Density", memory.run_density),
    Experiment("download", "Download", download.run),
    Experiment("threads", "I/O overlap with threads", threads.run),
    Experiment("pipeline", "Pipeline hand-off", pipeline.run_experiment),
    Experiment("handlers", "Real ETL handlers", handlers.run_experiment),
    Experiment("children", "Child processes", children.run_experiment),
    Experiment("rollback", "Rollback", rollback.run),
    Experiment("platform", "Platform under load", platform_load.run),
    Experiment("cluster", "Several hosts",
               lambda cfg, ctx: cluster.run(cfg.load_concurrency, cfg.load_seconds,
                                            cfg.load_warmup_s, ctx.say)),
    Experiment("startup", "Syscalls and compute",
               lambda cfg, ctx: startup.run(ctx.image, cfg.coldstart_slow_runs, ctx.say)),
    Experiment("imports", "Imports from memory",
               lambda cfg, ctx: imports.run(ctx.image, cfg.imports_runs, say=ctx.say)),
    Experiment("compat", "Compatibility", compat.run),
]


class Progress:
    """One line on stderr: redrawn in place on a terminal, plain lines otherwise."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.prefix = ""

    def experiment(self, index: int, total: int, title: str) -> None:
        self.prefix = f"[{index}/{total}] {title}"
        self._line(self.prefix, plain=True)

    def step(self, message: str) -> None:
        self._line(f"{self.prefix}: {message}", plain=False)

    def done(self, message: str) -> None:
        self._line(f"{self.prefix}: {message}", plain=True)
        if self.tty:
            print(file=self.stream, flush=True)

    def _line(self, text: str, plain: bool) -> None:
        if self.tty:
            print(f"\r\033[K{text[:160]}", end="", file=self.stream, flush=True)
        elif plain:
            print(f"bench: {text}", file=self.stream, flush=True)


@dataclass
class Context:
    """What every experiment gets besides its config."""

    image: ImageArchive
    progress: Progress
    workdir: Path

    def say(self, message: str) -> None:
        self.progress.step(message)

    def attempt(self, label: str, fn: Callable[[], dict]) -> dict:
        """One series: its numbers with status "ok", or status "failed" and the reason."""
        self.say(label)
        try:
            return {"status": "ok", "label": label, **fn()}
        except Exception as e:  # a failed series is a result, reported with its reason
            log.debug("series %s failed", label, exc_info=True)
            return {"status": "failed", "label": label, "reason": reason(e)}


def settings(cfg: BenchConfig) -> dict[str, dict]:
    """usetl's own tunables as the experiments use them (defaults unless the config sets them)."""
    from dataclasses import asdict

    from usetl.usf import UsfConfig

    found = {"UsfConfig": asdict(UsfConfig(mem_mib=cfg.usf_mem_mib))}
    try:
        from usetl.platform.pool import PoolConfig
        from usetl.platform.service import Limits
    except ImportError:
        return found
    found["PoolConfig"] = asdict(PoolConfig())
    found["Limits"] = asdict(Limits())
    return found


def run_all(cfg: BenchConfig, outdir: Path, only: list[str] | None = None,
            progress: Progress | None = None, image: ImageArchive | None = None,
            experiments: list[Experiment] | None = None) -> dict:
    """Run the experiments and write outdir/results.json; returns what it wrote."""
    outdir.mkdir(parents=True, exist_ok=True)
    # Every clone held is a socket in this process: thousands in the full density run.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    progress = progress or Progress()
    image = image or ImageArchive.open(default_image())
    chosen = [e for e in (experiments or EXPERIMENTS) if only is None or e.name in only]
    ctx = Context(image, progress, outdir)
    started = time.perf_counter()
    results: dict = {
        "mode": cfg.mode,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine.describe(),
        "config": cfg.as_dict(),
        "settings": settings(cfg),
        "image_digest": image.meta["digest"][:12],
        "experiments": {},
    }
    for i, exp in enumerate(chosen, 1):
        progress.experiment(i, len(chosen), exp.title)
        t0 = time.perf_counter()
        try:
            record = {"status": "ok", **exp.run(cfg, ctx)}
        except Exception as e:  # a failed experiment is a result, reported with its reason
            log.debug("experiment %s failed", exp.name, exc_info=True)
            record = {"status": "failed", "reason": reason(e),
                      "traceback": traceback.format_exc()[-2000:]}
        record["title"] = exp.title
        record["seconds"] = round(time.perf_counter() - t0, 1)
        results["experiments"][exp.name] = record
        failed = [k for k, s in record.get("series", {}).items() if s.get("status") != "ok"]
        status = record["status"] if not failed else f"ok, {len(failed)} series failed"
        progress.done(f"{status} in {record['seconds']} s")
        (outdir / RESULTS_FILE).write_text(json.dumps(results, indent=1))
    results["seconds"] = round(time.perf_counter() - started, 1)
    (outdir / RESULTS_FILE).write_text(json.dumps(results, indent=1))
    return results
