"""Metrics in the Prometheus text format (version 0.0.4), without a client library.

Counters and histograms are updated by the pool and the API; gauges are read
when /metrics is scraped (pool sizes, memory).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

Labels = tuple[tuple[str, str], ...]


def _labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Counter:
    def __init__(self, name: str, help: str):
        self.name, self.help = name, help
        self.values: dict[Labels, float] = {}
        self.lock = threading.Lock()

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self.lock:
            self.values[key] = self.values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self.values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        with self.lock:
            for key, v in sorted(self.values.items()):
                lines.append(f"{self.name}{_labels(key)} {v:g}")
        return lines


class Histogram:
    def __init__(self, name: str, help: str, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.name, self.help, self.buckets = name, help, buckets
        self.counts: dict[Labels, list[int]] = {}
        self.sums: dict[Labels, float] = {}
        self.lock = threading.Lock()

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self.lock:
            counts = self.counts.setdefault(key, [0] * (len(self.buckets) + 1))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[i] += 1
            counts[-1] += 1
            self.sums[key] = self.sums.get(key, 0.0) + value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self.lock:
            for key, counts in sorted(self.counts.items()):
                bounds = [f"{b:g}" for b in self.buckets] + ["+Inf"]
                for bound, count in zip(bounds, counts, strict=True):
                    le = 'le="' + bound + '"'
                    lines.append(f"{self.name}_bucket{_labels(key, le)} {count}")
                lines.append(f"{self.name}_sum{_labels(key)} {self.sums[key]:g}")
                lines.append(f"{self.name}_count{_labels(key)} {counts[-1]}")
        return lines


class Gauge:
    """A gauge whose samples are read from a callback at scrape time."""

    def __init__(self, name: str, help: str, read: Callable[[], dict[Labels, float]]):
        self.name, self.help, self.read = name, help, read

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge"]
        for key, v in sorted(self.read().items()):
            lines.append(f"{self.name}{_labels(key)} {v:g}")
        return lines


class Metrics:
    def __init__(self):
        self.invocations = Counter(
            "usetl_invocations_total", "Invocations finished, by function and status."
        )
        self.errors = Counter("usetl_invocation_errors_total", "Failed invocations, by error type.")
        self.rejected = Counter(
            "usetl_invocations_rejected_total", "Invocations refused by a concurrency limit."
        )
        self.latency = Histogram(
            "usetl_invocation_seconds", "Invocation latency from acquire to result, seconds."
        )
        self.templates_started = Counter(
            "usetl_templates_started_total", "Function templates started (boots or restores)."
        )
        self.templates_restored = Counter(
            "usetl_templates_restored_total", "Templates restored from a snapshot on disk."
        )
        self.instances_created = Counter(
            "usetl_instances_created_total", "Instances made from templates (clones, forks)."
        )
        self.rollbacks = Counter("usetl_rollbacks_total", "Instances rolled back for reuse.")
        self.evictions = Counter("usetl_template_evictions_total", "Templates evicted (LRU).")
        self.ticks = Counter("usetl_schedule_ticks_total", "Schedule ticks fired, by function.")
        self.ticks_refused = Counter(
            "usetl_schedule_ticks_refused_total",
            "Schedule ticks that queued no invocation (its queue was full), by function.")
        self.retries = Counter("usetl_async_retries_total",
                               "Failed async invocations queued again, by function.")
        self.dead_letters = Counter("usetl_dead_letters_total",
                                    "Async invocations that failed for good, by function.")
        self.callbacks = Counter("usetl_callback_attempts_total",
                                 "Callback delivery attempts, by outcome (the state after it).")
        self.gauges: list[Gauge] = []

    def gauge(self, name: str, help: str, read: Callable[[], dict[Labels, float]]) -> None:
        self.gauges.append(Gauge(name, help, read))

    def render(self) -> str:
        lines: list[str] = []
        for metric in (
            self.invocations, self.errors, self.rejected, self.latency, self.templates_started,
            self.templates_restored, self.instances_created, self.rollbacks, self.evictions,
            self.ticks, self.ticks_refused, self.retries, self.dead_letters, self.callbacks,
            *self.gauges,
        ):
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
