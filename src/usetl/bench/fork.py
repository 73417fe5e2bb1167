"""HyperFork numbers: fork, first request, rollback, recycle, memory per clone, and the
cold paths beside their baselines (a new clone against a SOCK-style forked zygote, a
template restored from disk against a fork), timed in turns in one run.

With merge=True the template lets the host's KSM merge identical pages (UsfConfig.merge_pages):
if KSM runs (/sys/kernel/mm/ksm/run is 1, which this never sets), the held clones are measured
after ksmd has scanned them all KSM_SCANS times, or KSM_WAIT_S passed (a page is merged once it
kept its bytes from one scan to the next and met its twin); each row says how many full scans
ksmd made meanwhile.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from usetl.bench.coldstart import cold_paths_in_turns
from usetl.hyperfork import Template
from usetl.image import ImageArchive
from usetl.procmem import mem_available, meminfo, page_table_bytes, private_by_kind, process_memory
from usetl.usf import UsfConfig

from .floors import exit_round_trip_us, first_touch_us
from .rollback import dirty_code
from .startup import percentile

REQUEST = "x = 1"
KSM = Path("/sys/kernel/mm/ksm")
KSM_SCANS = 4
KSM_WAIT_S = 600  # at most this long for them
MEM_MIB = 256
WARMUPS = 2


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "p95": percentile(values, 0.95),
            "p99": percentile(values, 0.99), "n": len(values)}


def run(image: ImageArchive, runs: int = 30, held: tuple[int, ...] = (1, 10, 50),
        progress: Callable[[str], None] = lambda s: None, jail: bool = True,
        merge: bool = False, huge_heap: bool = False) -> dict:
    t0 = time.perf_counter()
    template = Template.start(image, jail=jail,
                              config=UsfConfig(merge_pages=merge, huge_heap=huge_heap))
    out: dict = {"template_start_ms": (time.perf_counter() - t0) * 1e3, "merge_pages": merge,
                 "huge_heap": huge_heap}
    try:
        fork_ms, first_ms, fork_to_result, rollback_ms, recycled_ms = [], [], [], [], []
        for i in range(runs):
            progress(f"fork {i + 1}/{runs}")
            t = time.perf_counter()
            with template.fork() as clone:
                fork_ms.append(clone.fork_ms)
                r = clone.run_code(REQUEST)
                first_ms.append(r.total_ms)
                fork_to_result.append((time.perf_counter() - t) * 1e3)
                rollback_ms.append(clone.rollback().ms)
                t = time.perf_counter()
                clone.run_code(REQUEST)  # with the fresh identity
                recycled_ms.append((time.perf_counter() - t) * 1e3)
        out["fork_ms"] = _summary(fork_ms)
        out["first_request_ms"] = _summary(first_ms)
        out["fork_to_result_ms"] = _summary(fork_to_result)
        out["rollback_ms"] = _summary(rollback_ms)
        out["recycled_request_ms"] = _summary(recycled_ms)
        out["rollback_by_pages"] = []
        with template.fork() as clone:
            for pages in (16, 256, 4096, 16384):
                progress(f"rollback of {pages} dirtied pages")
                clone.run_code(dirty_code(pages))
                info = clone.rollback()
                out["rollback_by_pages"].append({"dirtied": pages, "pages": info.pages,
                                                 "restore_ms": info.restore_ms, "ms": info.ms})
        out["memory"] = [_held_memory(template, n, progress, merge) for n in held]
        out["floors"] = _floors(template, progress)
        out["template_memory_mib"] = template.memory_bytes() / 2**20
    finally:
        template.close()
    out["side_by_side"] = side_by_side(image, runs, progress)
    return out


def _floors(template: Template, progress: Callable[[str], None]) -> dict:
    """The exits of a request after a rollback and of the rollback, and the floors (a VM
    exit, a first touch of a template page: bench/floors.py)."""
    progress("exits and floors")
    with template.fork() as clone:
        clone.run_code(REQUEST)
        rolled = clone.rollback()
        request = clone.run_code(REQUEST)
        exit_us = exit_round_trip_us(clone)
    return {"request_exits": request.exits, "rollback_exits": rolled.exits,
            "exit_us": exit_us, "first_touch": first_touch_us(template)}


def _held_memory(template: Template, n: int, progress: Callable[[str], None],
                 merge: bool) -> dict:
    """n idle clones held at once, each after one request and its rollback (as a pool holds
    them): USS, PSS and USS by what holds it, per clone; and the host memory each costs: PSS
    plus its page tables and its share of KVM's, and the drop of the host's MemAvailable
    (which counts everything, other work on the host included)."""
    progress(f"memory with {n} clones held")
    before, kvm_tables = mem_available(), meminfo("SecPageTables")
    clones = []
    try:
        for i in range(n):
            if i % 100 == 99:
                progress(f"memory: {i + 1}/{n} clones held")
            clones.append(template.fork())
            clones[-1].run_code(REQUEST)
            clones[-1].rollback()
        scans = _ksm_scans(progress) if merge else None
        host = (before - mem_available()) / n
        kvm_tables = (meminfo("SecPageTables") - kvm_tables) / n
        tables = statistics.mean(page_table_bytes(c.pid) for c in clones)
        usage = [process_memory([c.pid]) for c in clones]
        kinds = [private_by_kind(c.pid) for c in clones]
        next_ms = []
        for c in clones[:5]:  # what being idle (and merged) costs the next request
            t = time.perf_counter()
            c.run_code(REQUEST)
            next_ms.append((time.perf_counter() - t) * 1e3)
    finally:
        for c in clones:
            c.close()
    return {
        "clones": n,
        "ksm_full_scans": scans,
        "next_request_ms": statistics.median(next_ms),
        "uss_mib": statistics.mean(u["uss"] for u in usage) / 2**20,
        "pss_mib": statistics.mean(u["pss"] for u in usage) / 2**20,
        "host_mib": host / 2**20,
        "page_tables_mib": (tables + kvm_tables) / 2**20,
        "cost_mib": (statistics.mean(u["pss"] for u in usage) + tables + kvm_tables) / 2**20,
        "uss_by_kind_mib": {kind: statistics.mean(k[kind] for k in kinds) / 2**20
                            for kind in kinds[0]},
    }


def _ksm_scans(progress: Callable[[str], None]) -> int:
    """Wait for KSM_SCANS full scans of ksmd (at most KSM_WAIT_S), if it runs; the scans made."""
    if (KSM / "run").read_text().strip() != "1":
        return 0
    first = int((KSM / "full_scans").read_text())
    deadline = time.monotonic() + KSM_WAIT_S
    while (done := int((KSM / "full_scans").read_text()) - first) < KSM_SCANS \
            and time.monotonic() < deadline:
        progress(f"ksmd: {done} full scans of the held clones")
        time.sleep(1)  # ksmd's progress is only visible in this counter: poll it
    return done


def side_by_side(image: ImageArchive, runs: int, progress: Callable[[str], None]) -> dict:
    """The cold paths beside their baselines, timed in turns (coldstart.cold_paths_in_turns)."""
    return cold_paths_in_turns(image, MEM_MIB, runs, WARMUPS, progress)


def format_report(r: dict) -> str:
    lines = [f"template start        {r['template_start_ms']:8.1f} ms (once per template)"]
    for key, label in (("fork_ms", "fork (ready, warmed)"),
                       ("first_request_ms", "first request"),
                       ("fork_to_result_ms", "fork to result"),
                       ("rollback_ms", "rollback"),
                       ("recycled_request_ms", "request after rollback")):
        s = r[key]
        lines.append(f"{label:22}{s['median']:8.2f} ms median, p95 {s['p95']:.2f}, "
                     f"p99 {s['p99']:.2f} (n={s['n']})")
    for row in r["rollback_by_pages"]:
        lines.append(f"rollback, {row['dirtied']:6} pages dirtied: {row['pages']:6} restored "
                     f"in {row['restore_ms']:.2f} ms")
    for row in r["memory"]:
        kinds = ", ".join(f"{kind} {mib:.2f}" for kind, mib in row["uss_by_kind_mib"].items())
        scans = row["ksm_full_scans"]
        merged = "" if scans is None else (f" (KSM: {scans} full scans)" if scans
                                           else " (KSM does not run: nothing merged)")
        lines.append(f"{row['clones']:4} clones held{merged}: USS {row['uss_mib']:.2f} MiB "
                     f"({kinds}), PSS {row['pss_mib']:.2f} MiB, page tables (host and KVM) "
                     f"{row['page_tables_mib']:.2f} MiB: {row['cost_mib']:.2f} MiB per clone, "
                     f"{8192 / row['cost_mib']:.0f} such clones in 8 GiB (host MemAvailable "
                     f"dropped {row['host_mib']:.2f} MiB per clone); their next request "
                     f"{row['next_request_ms']:.2f} ms median")
    f = r["floors"]
    lines.append(f"VM exits: a request after a rollback {f['request_exits']}, the rollback "
                 f"{f['rollback_exits']}; floors: a VM exit {f['exit_us']:.1f} us, a first "
                 f"touch of a template page {f['first_touch']['write_us']:.1f} us to write, "
                 f"{f['first_touch']['read_us']:.1f} us to read (medians)")
    lines.append(f"template guest memory {r['template_memory_mib']:.1f} MiB resident")
    return "\n".join(lines + _side_by_side_lines(r["side_by_side"]))


def _side_by_side_lines(s: dict) -> list[str]:
    lines = ["in turns, one call of each (fork to the handler's result):"]
    for key, label in (("hf_fork", "new clone"), ("zygote", "SOCK zygote child"),
                       ("hf_restore", "restore from disk")):
        ms = s[key]["ms"]
        lines.append(f"  {label:20}{ms['median']:8.2f} ms median, p95 {ms['p95']:.2f} "
                     f"(n={ms['runs']})")
    steps = s["hf_fork"]["steps"]
    lines.append("  new clone's steps (medians): " + ", ".join(
        f"{key} {value:.2f}" for key, value in steps.items()))
    lines.append(f"  new clone / zygote {s['fork_vs_zygote']:.2f}x (goal <= 1), "
                 f"restore / new clone {s['restore_vs_fork']:.2f}x (goal <= 2)")
    return lines
