"""Memory: USS and PSS per idle instance, host memory per instance as N grows, density.

USS (unique set size) is the memory only that instance holds: the private
pages of its host processes, which would be freed if it ended. PSS adds
each shared page divided by the number of processes sharing it, so
copy-on-write sharing shows up as a PSS far below RSS. Both are read from
/proc/PID/smaps_rollup of every host process that exists for an instance
(for a USF: its monitor process, which maps the guest's RAM).
The whole-host view is the drop of MemAvailable, which also counts what the
kernel holds for an instance (page tables, KVM's shadow pages).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from usetl.bench import envs, hyperfork_envs
from usetl.bench.config import BenchConfig
from usetl.bench.envs import Instance, Population
from usetl.bench.errors import reason
from usetl.procmem import mem_available, process_memory

MIB = 1 << 20


def populations(cfg: BenchConfig, ctx) -> list[tuple[str, str, Callable[[], Population], bool]]:
    """(name, label, factory, heavy): heavy environments hold at most cfg.heavy_cap."""
    image, mem = ctx.image, cfg.usf_mem_mib
    return [
        ("hf_clone", hyperfork_envs.Clones.label,
         lambda: hyperfork_envs.Clones(image, mem), False),
        ("usf", envs.UsfProcesses.label, lambda: envs.UsfProcesses(mem), True),
        ("usf_monitor", "USF monitor alone (no VM)",
         lambda: envs.UsfProcesses(mem, "monitor"), True),
        ("host_process", envs.HostProcesses.label, envs.HostProcesses, False),
        ("container", envs.Containers.label, lambda: envs.Containers(image), True),
        ("zygote", envs.ZygoteChildren.label, envs.ZygoteChildren, False),
    ]


class Held:
    """Instances of one population held at once, released together."""

    def __init__(self, population: Population):
        self.population = population
        self.instances: list[Instance] = []
        self.baseline = mem_available()

    def grow_to(self, n: int) -> None:
        while len(self.instances) < n:
            self.instances.append(self.population.spawn())

    def measure(self) -> dict:
        per = [process_memory(i.pids) for i in self.instances]
        n = len(per)
        pss = statistics.fmean(p["pss"] for p in per)
        shared = process_memory(self.population.shared_pids())["pss"]
        return {
            "n": n,
            "uss_mib": round(statistics.fmean(p["uss"] for p in per) / MIB, 2),
            "pss_mib": round(pss / MIB, 2),
            "rss_mib": round(statistics.fmean(p["rss"] for p in per) / MIB, 2),
            # The parent every instance shares (zygote, template), its PSS spread over them.
            "shared_mib": round(shared / MIB, 2),
            "per_instance_mib": round((pss + shared / n) / MIB, 2),
            "host_mib": round((self.baseline - mem_available()) / n / MIB, 2),
        }

    def close(self) -> None:
        for instance in self.instances:
            instance.release()
        self.instances.clear()
        self.population.close()


def run_idle(cfg: BenchConfig, ctx) -> dict:
    def one(make: Callable[[], Population]) -> dict:
        held = Held(make())
        try:
            held.grow_to(cfg.idle_instances)
            return held.measure()
        finally:
            held.close()

    return {"series": {
        name: ctx.attempt(label, lambda make=make: one(make))
        for name, label, make, _ in populations(cfg, ctx)
    }}


def run_scaling(cfg: BenchConfig, ctx) -> dict:
    def one(make: Callable[[], Population], heavy: bool) -> dict:
        counts = [n for n in cfg.scaling_counts if not heavy or n <= cfg.heavy_cap]
        held = Held(make())
        points: list[dict] = []
        stopped = ""
        try:
            for n in counts:
                ctx.say(f"{held.population.label}: {n} instances")
                try:
                    held.grow_to(n)
                except Exception as e:  # keep the counts reached; say why it stopped
                    if not held.instances:
                        raise
                    stopped = f"stopped at {len(held.instances)} instances: {reason(e)}"
                    points.append(held.measure())
                    break
                points.append(held.measure())
        finally:
            held.close()
        return {"points": points, "stopped": stopped}

    return {"series": {
        name: ctx.attempt(label, lambda make=make, heavy=heavy: one(make, heavy))
        for name, label, make, heavy in populations(cfg, ctx) if name != "usf_monitor"
    }}


def run_density(cfg: BenchConfig, ctx) -> dict:
    budget = cfg.density_budget_mib * MIB

    def one(make: Callable[[], Population], heavy: bool) -> dict:
        cap = min(cfg.density_cap, cfg.heavy_cap) if heavy else cfg.density_cap
        held = Held(make())
        deadline = time.monotonic() + cfg.density_seconds
        stopped = ""
        try:
            while (len(held.instances) < cap and time.monotonic() < deadline
                   and held.baseline - mem_available() < budget):
                try:
                    held.grow_to(len(held.instances) + 1)
                except Exception as e:  # the instances held so far still count
                    if not held.instances:
                        raise
                    stopped = f"stopped at {len(held.instances)} instances: {reason(e)}"
                    break
                if len(held.instances) % 10 == 0:
                    ctx.say(f"{held.population.label}: {len(held.instances)} held")
            m = held.measure()
        finally:
            held.close()
        # The larger of the two views, so neither the kernel's share nor sharing is hidden.
        per_instance = max(m["host_mib"], m["per_instance_mib"])
        reached = m["host_mib"] * m["n"] >= cfg.density_budget_mib
        return {
            "held": m["n"],
            "per_instance_mib": per_instance,
            "reached_budget": reached,
            "fits_in_budget": m["n"] if reached else int(cfg.density_budget_mib / per_instance),
            "extrapolated": not reached,
            "stopped": stopped,
            **{k: m[k] for k in ("uss_mib", "pss_mib", "shared_mib", "host_mib")},
        }

    return {"budget_mib": cfg.density_budget_mib, "series": {
        name: ctx.attempt(label, lambda make=make, heavy=heavy: one(make, heavy))
        for name, label, make, heavy in populations(cfg, ctx) if name != "usf_monitor"
    }}
