"""Start-up, syscall round trip and compute speed of a USF against a host process."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from usetl.bench.floors import exit_round_trip_us
from usetl.image import ImageArchive
from usetl.usf import start_usf

COMPUTE_LOOP = """
import time
def work(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total
work(10000)
t0 = time.perf_counter()
work(2_000_000)
print(time.perf_counter() - t0)
"""

# On the host, where one call is too short to time alone: the mean of many.
SYSCALL_LOOP = """
import os, time
n = 2000
t0 = time.perf_counter()
for _ in range(n):
    os.getppid()
print((time.perf_counter() - t0) / n)
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "p95": round(percentile(values, 0.95), 3),
        "min": round(min(values), 3),
        "runs": len(values),
    }


def host_python(code: str) -> str:
    exe = sys._base_executable  # the interpreter the image carries, not a venv shim
    return subprocess.run(
        [exe, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
    ).stdout


def run(image: ImageArchive, runs: int = 20,
        progress: Callable[[str], None] | None = None) -> dict:
    say = progress or (lambda msg: None)
    startup_ms, syscalls, syscall_ms = [], [], []
    for i in range(runs):
        say(f"USF start-up {i + 1}/{runs}")
        with start_usf(image) as usf:
            startup_ms.append(usf.startup.ms)
            syscalls.append(usf.startup.syscalls)
            syscall_ms.append(usf.startup.syscall_ms)

    host_ms = []
    exe = sys._base_executable
    for i in range(runs):
        say(f"host process {i + 1}/{runs}")
        t0 = time.perf_counter()
        subprocess.run([exe, "-I", "-c", "pass"], check=True)
        host_ms.append((time.perf_counter() - t0) * 1e3)

    say("compute loop and syscall round trip")
    with start_usf(image) as usf:
        guest_compute = float(usf.run_code(COMPUTE_LOOP).stdout)
        guest_syscall_us = exit_round_trip_us(usf)
    host_compute = float(host_python(COMPUTE_LOOP))
    host_syscall = float(host_python(SYSCALL_LOOP))

    return {
        "usf_startup_ms": summary(startup_ms),
        "usf_startup_syscalls": round(statistics.median(syscalls)),
        "usf_startup_syscall_handler_ms": round(statistics.median(syscall_ms), 3),
        "host_process_ms": summary(host_ms),
        "startup_ratio_usf_to_host": round(
            statistics.median(startup_ms) / statistics.median(host_ms), 2
        ),
        "syscall_round_trip_us": {
            "usf": round(guest_syscall_us, 2),
            "host": round(host_syscall * 1e6, 3),
        },
        "compute_speed_ratio_guest_to_host": round(host_compute / guest_compute, 3),
        "compute_seconds": {"usf": round(guest_compute, 4), "host": round(host_compute, 4)},
    }


def format_report(r: dict) -> str:
    s, h = r["usf_startup_ms"], r["host_process_ms"]
    return "\n".join([
        f"USF start-up to agent ready: median {s['median']:.1f} ms, p95 {s['p95']:.1f} ms "
        f"({r['usf_startup_syscalls']} syscalls, {r['usf_startup_syscall_handler_ms']:.1f} ms "
        f"in their Python handlers)",
        f"host `python3 -I -c pass`:   median {h['median']:.1f} ms, p95 {h['p95']:.1f} ms",
        f"start-up ratio USF/host:     {r['startup_ratio_usf_to_host']:.1f}x",
        f"syscall round trip (getppid): USF {r['syscall_round_trip_us']['usf']:.1f} us, "
        f"host {r['syscall_round_trip_us']['host']:.2f} us",
        f"pure-Python compute speed, guest/host: {r['compute_speed_ratio_guest_to_host']:.3f}",
    ])

