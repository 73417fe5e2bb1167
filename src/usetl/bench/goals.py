"""The goals the issues set, checked against a run's results.

Each goal names the number it constrains, a target, and whether the
measured value must be at most or at least that; the report writes the
goals with their measured values into results.json and shows them as a
table, "not measured" where the run has no such number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Goal:
    text: str
    unit: str
    target: float
    at_most: bool  # met when measured <= target; else when measured >= target
    source: str  # which issue set it
    measure: Callable[[dict], float | None]


def _ok(results: dict, exp: str) -> dict | None:
    e = results["experiments"].get(exp)
    return e if e is not None and e.get("status") == "ok" else None


def _series(results: dict, exp: str, name: str) -> dict | None:
    e = _ok(results, exp)
    s = e.get("series", {}).get(name) if e else None
    return s if s is not None and s.get("status") == "ok" else None


def _get(value: Any, *path: str) -> float | None:
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value)


def _download_ratio(results: dict, num: str, den: str) -> float | None:
    a, b = _series(results, "download", num), _series(results, "download", den)
    if not a or not b:
        return None
    return a["points"][-1]["ms"]["mean"] / b["points"][-1]["ms"]["mean"]


def _clones_in(results: dict, budget_mib: int) -> float | None:
    per_clone = _get(_series(results, "density", "hf_clone"), "per_instance_mib")
    return None if not per_clone else budget_mib // per_clone


def _in_turns_ratio(results: dict, key: str) -> float | None:
    """A ratio of the cold paths timed one call of each in turn (coldstart.cold_paths_in_turns)."""
    e = _ok(results, "coldstart")
    in_turns = e.get("in_turns") if e else None
    if not in_turns or in_turns.get("status") != "ok":
        return None
    return in_turns[key]


def _rollback_under_one_mib(results: dict) -> float | None:
    e = _ok(results, "rollback")
    small = [p for p in e["points"] if p["mib"] < 1] if e else []
    return max(p["ms"]["median"] for p in small) if small else None


def _recycled_over_floors(results: dict) -> float | None:
    """A recycled no-op's request to result against 4 exits and one message round trip."""
    e = _ok(results, "floors")
    if not e:
        return None
    floor_us = 4 * e["exit_us"] + e["message_us"]["median"]
    return e["recycled"]["request_ms"]["median"] * 1e3 / floor_us


def _rollback_over_floors(results: dict) -> float | None:
    """A rollback after under 1 MiB dirtied against 2 exits and the copy of its pages."""
    e = _ok(results, "floors")
    if not e:
        return None
    rollback = e["rollback"]
    return rollback["ms"]["median"] / (2 * e["exit_us"] / 1e3 + rollback["copy_ms"]["median"])


def _platform_ratio(num: str, num_key: tuple[str, ...], den: str,
                    den_key: tuple[str, ...]) -> Callable[[dict], float | None]:
    def ratio(results: dict) -> float | None:
        a = _get(_series(results, "platform", num), *num_key)
        b = _get(_series(results, "platform", den), *den_key)
        return a / b if a is not None and b else None
    return ratio


GOALS = [
    Goal("USF start-up to agent ready, median", "ms", 150, True, "issue 2",
         lambda r: _get(_ok(r, "startup"), "usf_startup_ms", "median")),
    Goal("syscall round trip in a USF", "µs", 60, True, "issue 2",
         lambda r: _get(_ok(r, "startup"), "syscall_round_trip_us", "usf")),
    Goal("pure-Python speed in a USF, relative to the host", "×", 0.9, False, "issue 2",
         lambda r: _get(_ok(r, "startup"), "compute_speed_ratio_guest_to_host")),
    Goal("clone creation alone, median", "ms", 0.8, True, "issue 4",
         lambda r: _get(_series(r, "coldstart", "hf_fork"), "fork_ms", "median")),
    Goal("fork to handler return, median", "ms", 1.5, True, "issue 4",
         lambda r: _get(_series(r, "coldstart", "hf_fork"), "ms", "median")),
    Goal("a new clone's fork to handler result against a SOCK-style zygote's fork to "
         "result, median, in turns", "×", 1, True, "issue 15",
         lambda r: _in_turns_ratio(r, "fork_vs_zygote")),
    Goal("a template restored from its snapshot on disk per call against a fork per call, "
         "median, in turns", "×", 2, True, "issue 15",
         lambda r: _in_turns_ratio(r, "restore_vs_fork")),
    Goal("USS per idle clone", "MiB", 1, True, "issue 4",
         lambda r: _get(_series(r, "memory", "hf_clone"), "uss_mib")),
    Goal("rollback after dirtying under 1 MiB, median (worst size measured)", "ms", 1, True,
         "issue 4", _rollback_under_one_mib),
    Goal("etl.get time relative to host to /dev/shm, largest size", "×", 1.5, True, "issue 3",
         lambda r: _download_ratio(r, "usf_etl", "host_shm")),
    Goal("socket path time relative to etl.get, largest size", "×", 5, False, "issue 3",
         lambda r: _download_ratio(r, "usf_socket", "usf_etl")),
    Goal("warm no-op invocation through HTTP (KVM backend, one client), median", "ms", 5, True,
         "issue 5", lambda r: _get(_series(r, "platform", "http_kvm_noop"), "serial_ms",
                                   "median")),
    Goal("no-op invocations per second through HTTP (KVM backend)", "/s", 300, False,
         "issue 5", lambda r: _get(_series(r, "platform", "http_kvm_noop"), "per_second")),
    Goal("8 etl.get on 8 guest threads against one after another (50 ms server delay)", "×",
         3, False, "issue 11", lambda r: _get(_ok(r, "threads"), "speedup")),
    Goal("3-stage pipeline handing 64 MiB on, against the same functions through a local "
         "HTTP store", "×", 5, False, "issue 16",
         lambda r: _get(_ok(r, "pipeline"), "speedup")),
    Goal("real ETL handlers: USF warm median against a host process's warm calls (worst "
         "handler)", "×", 1.5, True, "issue 12",
         lambda r: _get(_ok(r, "handlers"), "worst_warm_ratio")),
    Goal("real ETL handlers: a new USF clone against a new host process (worst handler)", "×",
         1, True, "issue 12", lambda r: _get(_ok(r, "handlers"), "worst_clone_ratio")),
]


GOALS += [
    Goal("private memory (USS) per idle clone", "MiB", 1, True, "issue 15",
         lambda r: _get(_series(r, "memory", "hf_clone"), "uss_mib")),
    Goal("idle clones held at once within 8 GiB (8 GiB over the memory each held clone "
         "took)", "clones", 4000, False, "issue 15", lambda r: _clones_in(r, 8192)),
    Goal("etl.get time relative to host to /dev/shm, 256 MiB", "×", 1.2, True, "issue 15",
         lambda r: _download_ratio(r, "usf_etl", "host_shm")),
    Goal("VM exits per recycled no-op request (request to result)", "exits", 4, True,
         "issue 15", lambda r: _get(_ok(r, "floors"), "recycled", "request_exits")),
    Goal("recycled no-op request to result, against 4 exits plus one message round trip "
         "(same run)", "×", 1, True, "issue 15", _recycled_over_floors),
    Goal("VM exits per rollback", "exits", 2, True, "issue 15",
         lambda r: _get(_ok(r, "floors"), "rollback", "exits")),
    Goal("rollback after 256 KiB dirtied (monitor's time), against 2 exits plus the copy of "
         "the dirtied pages (same run)", "×", 1, True, "issue 15", _rollback_over_floors),
]


GOALS += [
    Goal("warm no-op through HTTP (KVM backend, one client), against the recycled request "
         "to result (same run)", "×", 1.5, True, "issue 15",
         _platform_ratio("http_kvm_noop", ("serial_ms", "median"), "recycled_kvm_noop",
                         ("ms", "median"))),
    Goal("no-op invocations per second through HTTP (KVM backend), against a bare ASGI "
         "endpoint on the same server stack (same run)", "×", 0.5, False, "issue 15",
         _platform_ratio("http_kvm_noop", ("per_second",), "http_ceiling", ("per_second",))),
    Goal("no-op invocations per second through the Python API against HTTP (KVM backend)",
         "×", 2, False, "issue 15",
         _platform_ratio("python_kvm_noop", ("per_second",), "http_kvm_noop",
                         ("per_second",))),
]


GOALS += [
    Goal("sync dispatch overhead against the single host, in NATS request/reply round trips "
         "(same run)", "round trips", 2, True, "issue 14",
         lambda r: _get(_ok(r, "cluster"), "dispatch_overhead_round_trips")),
]


def _import_ratio(module: str) -> Callable[[dict], float | None]:
    return lambda r: _get(_ok(r, "imports"), "packages", module, "ratio")


GOALS += [
    Goal(f"import {module} in a fresh USF, relative to a fresh host process", "×", 1.5, True,
         "issue 12", _import_ratio(module))
    for module in ("pandas", "boto3", "numpy", "sklearn", "PIL.Image")
]


def check(results: dict) -> list[dict]:
    """Every goal with its measured value (None if not measured) and whether it is met."""
    out = []
    for g in GOALS:
        value = g.measure(results)
        met = None if value is None else (value <= g.target if g.at_most else value >= g.target)
        out.append({"text": g.text, "unit": g.unit, "target": g.target,
                    "at_most": g.at_most, "source": g.source,
                    "measured": None if value is None else round(value, 3), "met": met})
    return out
