"""Every tunable of the evaluation, in one place, with a quick and a full preset.

The report lists every field of the config it ran with, so a reader sees
exactly what was measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class BenchConfig:
    mode: str
    # Cold start: timed calls per environment, after untimed warm-up calls.
    coldstart_runs: int
    coldstart_slow_runs: int  # environments that start a whole interpreter or VM per call
    warmups: int
    # Download (Figure 5): object sizes and downloads per size and path.
    download_sizes_mib: tuple[int, ...]
    download_runs: int
    # Memory: idle instances held at once per environment, and clone counts.
    idle_instances: int
    scaling_counts: tuple[int, ...]
    # Density: memory budget and the most instances to hold before extrapolating.
    density_budget_mib: int
    density_cap: int
    # Environments that cost a whole interpreter or VM each hold at most this many.
    heavy_cap: int
    # Seconds one environment may spend spawning instances for density.
    density_seconds: int
    # Rollback: pages a handler dirties before the rollback is timed.
    rollback_pages: tuple[int, ...]
    rollback_runs: int
    # Platform under load: concurrent clients, untimed and timed seconds per series.
    load_concurrency: int
    load_warmup_s: float
    load_seconds: float
    platform_backends: tuple[str, ...] = ("kvm", "process")
    # I/O overlap: runs of 8 etl.get one after another and then on 8 threads.
    threads_runs: int = 3
    # Pipeline hand-off: runs of the 3-stage pipeline and of its HTTP-store baseline.
    pipeline_runs: int = 5
    # Real ETL handlers: timed warm calls per side, new clones, new host processes.
    handlers_runs: int = 5
    handlers_clones: int = 2
    handlers_colds: int = 2
    # Child processes: runs of each series (a static program, a Python child, fork).
    children_runs: int = 10
    # Imports: fresh USFs (and host processes) per package and way.
    imports_runs: int = 3
    # Guest memory per USF.
    usf_mem_mib: int = 512
    compat_modules: tuple[str, ...] = field(default=(
        "json", "csv", "sqlite3", "re", "decimal", "zlib", "hashlib", "datetime",
        "statistics", "collections", "itertools", "random", "uuid", "struct", "base64",
        "gzip", "urllib.parse", "xml.etree.ElementTree", "numpy",
    ))

    def as_dict(self) -> dict:
        return asdict(self)


QUICK = BenchConfig(
    mode="quick",
    coldstart_runs=100,
    coldstart_slow_runs=20,
    warmups=3,
    download_sizes_mib=(2, 8, 64, 256),
    download_runs=3,
    idle_instances=5,
    scaling_counts=(1, 10, 50),
    density_budget_mib=2048,
    density_cap=100,
    heavy_cap=10,
    density_seconds=20,
    rollback_pages=(1, 64, 1024),
    rollback_runs=5,
    load_concurrency=4,
    load_warmup_s=1.0,
    load_seconds=3.0,
)

FULL = BenchConfig(
    mode="full",
    coldstart_runs=1000,
    coldstart_slow_runs=100,
    warmups=5,
    download_sizes_mib=(2, 8, 64, 256),
    download_runs=10,
    idle_instances=10,
    scaling_counts=(1, 10, 100, 500),
    density_budget_mib=8192,
    density_cap=2000,
    heavy_cap=50,
    density_seconds=300,
    rollback_pages=(1, 16, 256, 1024, 4096, 16384),
    rollback_runs=20,
    load_concurrency=8,
    load_warmup_s=5.0,
    load_seconds=20.0,
    handlers_runs=30,
    handlers_clones=10,
    handlers_colds=10,
)


def preset(quick: bool) -> BenchConfig:
    return QUICK if quick else FULL
