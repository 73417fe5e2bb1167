"""The front of the report: the header with its summary, the goals and the set-up."""

from __future__ import annotations

from usetl.bench.report import coldstart, compat, density, download, floors, memory, platform
from usetl.bench.report.document import Document, fmt

CONFIG_HELP = {
    "mode": "quick (fewer repetitions, indicative) or full",
    "coldstart_runs": "timed calls per environment that starts nothing per call",
    "coldstart_slow_runs": "timed calls per environment that starts an interpreter or a VM "
                           "per call; also start-ups timed for the syscall and compute numbers",
    "warmups": "untimed calls before the timed ones, per environment",
    "download_sizes_mib": "object sizes downloaded (MiB)",
    "download_runs": "timed downloads per size and path (after one untimed)",
    "idle_instances": "idle instances held at once per environment for USS and PSS",
    "scaling_counts": "instance counts at which host memory is measured",
    "density_budget_mib": "memory budget for the density experiment (MiB)",
    "density_cap": "most instances held per environment before extrapolating",
    "heavy_cap": "most instances held of an environment that starts an interpreter or VM each",
    "density_seconds": "most seconds spent spawning instances per environment",
    "rollback_pages": "guest pages the handler dirties before a rollback",
    "rollback_runs": "timed rollbacks per page count",
    "threads_runs": "runs of 8 etl.get one after another and then on 8 threads (median shown)",
    "pipeline_runs": "runs of the 3-stage pipeline and of the same functions through an HTTP "
                     "store (median shown)",
    "handlers_runs": "timed warm calls per real ETL handler, in a USF and in a host process",
    "handlers_clones": "new clones timed per real ETL handler (fork and first call)",
    "handlers_colds": "new host processes timed per real ETL handler (start to exit)",
    "children_runs": "runs of each child-process series: a static program, the same "
                     "through /bin/sh, a Python child, fork (median shown)",
    "imports_runs": "fresh USFs and host processes per package and way that import it",
    "load_concurrency": "concurrent clients under load",
    "load_warmup_s": "untimed seconds of load before the timed ones, per series",
    "load_seconds": "timed seconds of load per series",
    "platform_backends": "platform backends measured under load",
    "usf_mem_mib": "guest RAM per USF (MiB)",
    "compat_modules": "modules checked for compatibility",
}

SETTINGS_HELP = {
    "UsfConfig": "every USF, template and clone in the experiments; guest RAM from the run's "
                 "configuration, the rest defaults",
    "PoolConfig": "the platform's pools in the platform experiment, defaults",
    "Limits": "the platform's limits in the platform experiment, defaults",
}

# The summary's sentences, in the order it gives them: the floors first.
SUMMARIES = (floors.statement, coldstart.summary, memory.summary, density.summary, download.summary,
             platform.summary, compat.summary)

IMPLEMENTATION = (
    "The monitor "
    "is Python on the host; a USF is a KVM VM with no guest kernel into which the monitor "
    "loads the host's CPython and serves its syscalls, one VM exit each. A HyperFork "
    "clone is such a VM in a process of its own, forked from a template that has "
    "started CPython and imported the function, its guest RAM a private copy-on-write "
    "mapping of the template's; rollback copies back the pages the clone wrote (found with "
    "the PAGEMAP_SCAN ioctl, which sees the monitor's writes as well as the guest's) "
    "and the next request gives the guest a fresh identity before the handler. "
    "The platform runs functions as clones (KVM backend) or as processes forked from a "
    "namespaced zygote (process backend), behind an HTTP API. The baselines "
    "are built here from the same interpreter: a host process, a runc container whose "
    "read-only root filesystem is the USF image's own files (user, pid, network, ipc, "
    "uts, mount and cgroup namespaces, no capabilities), and a SOCK-style zygote."
)
WORKLOADS = (
    "**Workloads.** The cold-start and memory experiments run one tiny function in "
    "every environment: import json, sum a range and hand back the JSON result. It runs "
    "as `python3 -I -S -c` on the host and in the container and in a zygote child "
    "(printing the JSON line), and as a handler loaded into a USF or a HyperFork "
    "function template and called through the agent (returning the JSON value). The "
    "download experiment fetches objects of random bytes from an HTTP server on the "
    "loopback interface in a process of its own. The rollback experiment's code writes "
    "one byte per page into a fresh buffer. The platform experiment deploys a no-op "
    "and the demo ETL function. The compatibility experiment imports each module and "
    "runs a smoke test of it."
)
METRICS = (
    "**Metrics.** Latency from the request to the result at the median, p95 and p99; "
    "download time as mean and standard deviation; USS (the private pages of every host "
    "process an instance has), PSS (shared pages divided among their sharers) and the "
    "drop of the host's MemAvailable per instance; instances that fit in a memory budget."
)
METHODOLOGY = (
    "**Methodology.** All environments run on this machine in the same run, one after "
    "another, so they see the same hardware and similar load. Each cold-start series "
    "begins with untimed warm-up calls; a call is timed in the benchmark process with "
    "`time.perf_counter` from issuing the request to holding the result, and includes "
    "the teardown of a per-call instance; pre-started instances are prepared untimed "
    "before each call and used once. Downloads are timed inside the downloading program "
    "(in the guest for the USF paths) from the request to the last byte in place, after "
    "one untimed download per size. Memory is read from `/proc/PID/smaps_rollup` of "
    "every process of an instance while all instances of a series are held at once. A "
    "failed experiment or series is kept in the results with its reason and listed at "
    "the end of this report."
)


def header(doc: Document) -> None:
    m = doc.r["machine"]
    doc.out("# Evaluation")
    if doc.r["mode"] == "quick":
        doc.out(
            "> **Quick mode.** Every experiment ran with fewer repetitions and smaller "
            "instance counts than the full evaluation (see Configuration); the numbers are "
            "indicative, and tail percentiles rest on few samples. Run `make report` for "
            "the full evaluation."
        )
    doc.out(
        f"> Measured on {m['cpu_model']} ({m['cores']} cores), kernel {m['kernel']}, "
        f"`/dev/kvm`: {m['kvm_backend']}; load average {fmt(m['load_average'][0])} when "
        f"the run started, so other work on the machine may have disturbed the timings. "
        f"The whole run took {fmt(doc.r.get('seconds', 0.0))} s."
    )
    parts = [sentence for summary in SUMMARIES for sentence in summary(doc)]
    doc.out(" ".join(parts) if parts else
            "No experiment produced numbers in this run; the failures are listed below.")


def goals(doc: Document) -> None:
    rows = ["| goal | target | measured | met |", "| --- | --- | --- | --- |"]
    for g in doc.goal_results:
        bound = "≤" if g["at_most"] else "≥"
        measured = "not measured" if g["measured"] is None else f"{fmt(g['measured'])}"
        met = "" if g["met"] is None else ("yes" if g["met"] else "**no**")
        rows.append(f"| {g['text']} ({g['source']}) | {bound} {g['target']:g} {g['unit']} "
                    f"| {measured} | {met} |")
    met = doc.count("goals.met", sum(1 for g in doc.goal_results if g["met"]))
    measured = doc.count("goals.measured",
                         sum(1 for g in doc.goal_results if g["met"] is not None))
    doc.out(f"Against the goals the issues set for this machine, {met} of {measured} "
            "measured goals are met in this run:", "\n".join(rows))


def setup(doc: Document) -> None:
    m = doc.r["machine"]
    doc.out("## Experimental setup")
    doc.out(
        "**Platform.** "
        f"CPU: {m['cpu_model']}, {m['cores']} cores; memory: {m['memory_mib']} MiB "
        f"({m['memory_available_mib']} MiB available at the start); OS: {m['os']}, "
        f"kernel {m['kernel']}; KVM backend: {m['kvm_backend']} (read from the loaded "
        "kernel modules and the CPU flags); host Python "
        f"{m['python']} (`{m['python_executable']}`), the interpreter every environment runs."
    )
    doc.out(
        "**Implementation.** "
        f"usetl at commit `{m['git_commit']}`, image `{doc.r['image_digest']}`. "
        + IMPLEMENTATION
    )
    _configuration(doc)
    doc.out(WORKLOADS)
    doc.out(METRICS)
    doc.out(METHODOLOGY)


def _shown(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _configuration(doc: Document) -> None:
    """Every tunable of the run, then the settings of usetl's own objects."""
    rows = ["| setting | value | meaning |", "| --- | --- | --- |"]
    for key, value in doc.config.items():
        rows.append(f"| `{key}` | {_shown(value)} | {CONFIG_HELP[key]} |")
    doc.out("**Configuration.** Every tunable of this run:", "\n".join(rows))
    for owner, values in doc.r.get("settings", {}).items():
        rows = ["| setting | value |", "| --- | --- |"]
        for key, value in values.items():
            rows.append(f"| `{key}` | {_shown(value) or '(none)'} |")
        doc.out(f"usetl's `{owner}` ({SETTINGS_HELP.get(owner, 'defaults')}):",
                "\n".join(rows))
