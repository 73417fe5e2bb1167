"""What the egress broker costs etl.get: a jailed clone (the broker fetches into its region
file) against an unjailed one (its monitor fetches itself, as every monitor did before the
broker) and against the host's own download to /dev/shm (urllib into a buffer, written to a
file), side by side in one run, downloads taking turns (each path first in turn).

Also the clone's map time, which now includes giving each ETL region a file of its own.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from usetl.hyperfork import Template
from usetl.image import ImageArchive
from usetl.usf import UsfConfig

from .download import GUEST_ETL, Server, host_download

KIB = 1 << 10
MIB = 1 << 20
SIZES = (KIB, 256 * MIB)
PATHS = {True: "broker (jailed clone)", False: "in the monitor (unjailed clone)"}
HOST = "host to /dev/shm"
SHM_FILE = Path("/dev/shm/usetl-bench-egress")


def _fetch(clone, url: str, size: int) -> tuple[float, float]:
    """Milliseconds the guest waited, and host CPU milliseconds the transfer took (what the
    broker or the monitor measured: less noisy on a shared machine)."""
    result = clone.run_code(GUEST_ETL.format(url=url), timeout=600)
    if result.error is not None:
        raise RuntimeError(f"{result.error.type}: {result.error.message}")
    elapsed, got = result.stdout.split()
    if int(got) != size:
        raise RuntimeError(f"etl.get got {got} bytes, expected {size}")
    clone.rollback()
    return float(elapsed) * 1e3, result.io.host_cpu_s * 1e3


def _host_fetch(url: str, size: int) -> tuple[float, float]:
    """The host's download: milliseconds, and this thread's CPU milliseconds."""
    cpu0 = time.thread_time()
    ms = host_download(url, SHM_FILE, size, False) * 1e3
    return ms, (time.thread_time() - cpu0) * 1e3


def run(image: ImageArchive, runs: int = 10, sizes: tuple[int, ...] = SIZES,
        progress: Callable[[str], None] = lambda s: None) -> dict:
    server = Server()
    region_mib = (max(sizes) // MIB + 64 + 1) & ~1
    config = UsfConfig(allow=[server.base + "/"], allow_private=True,
                       host_region_mib=region_mib)
    samples: dict[tuple[str, int], list[tuple[float, float]]] = {}
    try:
        bases = {jail: Template.start(image, config=config, jail=jail) for jail in PATHS}
        try:
            clones = {jail: t.fork() for jail, t in bases.items()}
            fetches: dict[str, Callable[[str, int], tuple[float, float]]] = {
                PATHS[jail]: lambda url, size, clone=clone: _fetch(clone, url, size)
                for jail, clone in clones.items()}
            fetches[HOST] = _host_fetch
            try:
                for size in sizes:
                    for fetch in fetches.values():
                        fetch(server.url(size), size)  # connection, first touches
                    for i in range(runs):
                        progress(f"{size} B: run {i + 1}/{runs}")
                        order = list(fetches.items())
                        order = order[i % len(order):] + order[: i % len(order)]
                        for name, fetch in order:
                            samples.setdefault((name, size), []).append(
                                fetch(server.url(size), size))
                map_ms = {jail: clone.timings["map_ms"] for jail, clone in clones.items()}
            finally:
                for clone in clones.values():
                    clone.close()
        finally:
            for t in bases.values():
                t.close()
    finally:
        server.close()

    def medians(points: list[tuple[float, float]]) -> dict:
        return {"ms": statistics.median(p[0] for p in points),
                "cpu_ms": statistics.median(p[1] for p in points)}

    return {"runs": runs, "map_ms": {PATHS[j]: ms for j, ms in map_ms.items()},
            "sizes": {str(size): {name: medians(samples[(name, size)])
                                  for name in [*PATHS.values(), HOST]} for size in sizes}}


def format_report(r: dict) -> str:
    broker, local = PATHS[True], PATHS[False]
    lines = []
    for size, paths in r["sizes"].items():
        n = int(size)
        label = f"{n // MIB} MiB" if n >= MIB else f"{n // KIB} KiB"
        b, m, h = paths[broker], paths[local], paths[HOST]
        rate = "" if n < MIB else (f"; {n / MIB / (b['ms'] / 1e3):.0f} vs "
                                   f"{n / MIB / (m['ms'] / 1e3):.0f} MiB/s")
        lines.append(f"etl.get {label:>8}: {b['ms']:8.2f} ms by the broker, {m['ms']:8.2f} ms "
                     f"in the monitor ({b['ms'] / m['ms']:.2f}x){rate}; host CPU "
                     f"{b['cpu_ms']:.2f} vs {m['cpu_ms']:.2f} ms (medians, n={r['runs']})")
        lines.append(f"{'':16}host to /dev/shm {h['ms']:8.2f} ms: the broker's etl.get "
                     f"{b['ms'] / h['ms']:.2f}x, the monitor's {m['ms'] / h['ms']:.2f}x")
    lines.append(f"clone map (with the regions' own files): "
                 f"{r['map_ms'][broker]:.2f} ms jailed, {r['map_ms'][local]:.2f} ms not")
    return "\n".join(lines)
