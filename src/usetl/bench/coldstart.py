"""Cold start (the paper's Figure 6, extended): request to result, per environment.

Every environment runs the same workload (workload.WORK, or the same code as
a handler). A call is timed from the moment the request is issued to the
moment its result is back in the benchmark process; per-call environments
include the instance's teardown, pre-started ones do not include their
preparation (done untimed before each call).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from usetl.bench import envs, hyperfork_envs
from usetl.bench.config import BenchConfig
from usetl.bench.envs import CallEnv, check
from usetl.bench.stats import summary


def time_calls(env: CallEnv, runs: int, warmups: int, say: Callable[[str], None]) -> dict:
    """Median and samples of `runs` timed calls of one environment, after `warmups`."""
    return time_in_turns({env.label: env}, runs, warmups, say)[env.label]


def time_in_turns(envs_by_name: dict[str, CallEnv], runs: int, warmups: int,
                  say: Callable[[str], None]) -> dict[str, dict]:
    """Median and samples of `runs` timed calls of each environment, after `warmups`, one
    call of each in turn, so that the machine's load (a shared host's) falls on all of them
    alike: their ratios are fair."""
    samples: dict[str, list[float]] = {name: [] for name in envs_by_name}
    try:
        for i in range(warmups + runs):
            for name, env in envs_by_name.items():
                if i == warmups:
                    env.begin_timed()
                env.before_call()
                t0 = time.perf_counter()
                output = env.call()
                elapsed = (time.perf_counter() - t0) * 1e3
                env.after_call()
                if output is not None:
                    check(output, env.label)
                if i >= warmups:
                    samples[name].append(elapsed)
            if i >= warmups and (i - warmups + 1) % 5 == 0:
                say(f"{', '.join(envs_by_name)}: {i - warmups + 1}/{runs}")
        extras = {name: env.extra() for name, env in envs_by_name.items()}
    finally:
        for env in envs_by_name.values():
            env.close()
    return {name: {"ms": summary(samples[name]),
                   "samples_ms": [round(s, 3) for s in samples[name]], **extras[name]}
            for name in envs_by_name}


def cold_paths_in_turns(image, mem_mib: int, runs: int, warmups: int,
                        say: Callable[[str], None]) -> dict:
    """The issue-15 cold paths beside their baselines, one call of each in turn: a new clone
    (not warmed) against a SOCK-style zygote's child, a template restored from its snapshot
    against a fork. In turns, not in the series above, because back to back a fork follows
    a fork at once: the template is never idle long enough to make shells ahead, which is
    not how a cold call meets it."""
    timed = time_in_turns({"hf_fork": hyperfork_envs.ForkPerCall(image, mem_mib),
                           "zygote": envs.ZygotePerCall(),
                           "hf_restore": hyperfork_envs.RestorePerCall(image, mem_mib)},
                          runs, warmups, say)
    fork, zygote, restore = (timed[k]["ms"]["median"] for k in ("hf_fork", "zygote",
                                                                "hf_restore"))
    return {**timed, "fork_vs_zygote": fork / zygote, "restore_vs_fork": restore / fork}


def run(cfg: BenchConfig, ctx) -> dict:
    image, mem = ctx.image, cfg.usf_mem_mib
    fast, slow = cfg.coldstart_runs, cfg.coldstart_slow_runs
    # (name, label, environment factory, timed calls)
    plan: list[tuple[str, str, Callable[[], CallEnv], int]] = [
        ("usf_create", envs.UsfCreatePerCall.label,
         lambda: envs.UsfCreatePerCall(image, mem), slow),
        ("usf_pool", envs.UsfPool.label, lambda: envs.UsfPool(image, mem), slow),
        ("hf_fork", hyperfork_envs.ForkPerCall.label,
         lambda: hyperfork_envs.ForkPerCall(image, mem), fast),
        ("hf_ready", hyperfork_envs.ReadyClones.label,
         lambda: hyperfork_envs.ReadyClones(image, mem), fast),
        ("hf_restore", hyperfork_envs.RestorePerCall.label,
         lambda: hyperfork_envs.RestorePerCall(image, mem), slow),
        ("hf_recycle", hyperfork_envs.RecycleClone.label,
         lambda: hyperfork_envs.RecycleClone(image, mem), fast),
        ("host_process", envs.HostProcessPerCall.label, envs.HostProcessPerCall, slow),
        ("container", envs.ContainerPerCall.label,
         lambda: envs.ContainerPerCall(image), slow),
        ("container_pool", envs.ContainerPool.label, lambda: envs.ContainerPool(image), slow),
        ("zygote", envs.ZygotePerCall.label, envs.ZygotePerCall, fast),
    ]
    series = {}
    for name, label, make, runs in plan:
        series[name] = ctx.attempt(
            label, lambda make=make, runs=runs: time_calls(make(), runs, cfg.warmups, ctx.say)
        )
    in_turns = ctx.attempt("cold paths in turns (new clone, zygote, restore)",
                           lambda: cold_paths_in_turns(image, mem, slow, cfg.warmups, ctx.say))
    return {"series": series, "in_turns": in_turns}
