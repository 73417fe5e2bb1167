"""The evaluation report: DIR/evaluation.md and one PNG per figure, from DIR/results.json.

Every number in the text is computed from the results: the numbers the
experiments measured, and those the report derives from them (ratios,
differences), which it stores under "derived" in results.json before
writing, so every number a reader sees can be found in the JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from usetl.bench import goals
from usetl.bench.runner import RESULTS_FILE

REPORT_FILE = "evaluation.md"

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

# Environments in the order the figures and tables list them.
COLDSTART_ORDER = ["hf_ready", "hf_fork", "hf_recycle", "hf_restore", "usf_pool", "usf_create",
                   "zygote", "host_process", "container_pool", "container"]
# How the prose names each cold-start environment.
PROSE = {
    "hf_ready": "a ready clone (forked and warmed ahead)",
    "hf_fork": "a clone forked per call",
    "hf_recycle": "a recycled clone (rolled back and reused)",
    "hf_restore": "a template restored from its snapshot per call",
    "usf_pool": "a pre-started USF",
    "usf_create": "a USF created per call",
}
USF_SERIES = {"hf_ready", "hf_fork", "hf_recycle", "hf_restore", "usf_pool", "usf_create",
              "usf", "usf_monitor", "hf_clone", "usf_etl", "usf_socket"}


def fmt(x: float | int) -> str:
    """A number as the text shows it: about three significant digits."""
    if isinstance(x, bool):
        raise TypeError("a boolean is not a number to show")
    if isinstance(x, int):
        return str(x)
    a = abs(x)
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


class Figures:
    """Numbers figures as they are made; each is one PNG in the report directory."""

    def __init__(self, outdir: Path):
        self.outdir = outdir
        self.count = 0
        self.files: list[str] = []

    def save(self, name: str, draw: Callable[[object], None]) -> tuple[int, str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 4.8), dpi=100)
        draw(ax)
        fig.tight_layout()
        filename = f"{name}.png"
        fig.savefig(self.outdir / filename)
        plt.close(fig)
        self.count += 1
        self.files.append(filename)
        return self.count, filename


def ok_series(exp: dict) -> dict[str, dict]:
    return {k: v for k, v in exp.get("series", {}).items() if v.get("status") == "ok"}


def failed_series(exp: dict) -> dict[str, dict]:
    return {k: v for k, v in exp.get("series", {}).items() if v.get("status") != "ok"}


def failure_lines(exp: dict) -> list[str]:
    """What failed in an experiment, one bullet per series, with the reason."""
    if exp.get("status") != "ok":
        return [f"- **The experiment failed**: {exp.get('reason', 'no reason recorded')}"]
    return [f"- **{s['label']}**: failed: {s['reason']}" for s in failed_series(exp).values()]


class Report:
    def __init__(self, results: dict, outdir: Path):
        self.r = results
        self.outdir = outdir
        self.exps: dict[str, dict] = results["experiments"]
        self.derived: dict[str, float | int] = {}
        self.figures = Figures(outdir)
        self.lines: list[str] = []
        self.goal_results = goals.check(results)

    # Every derived number goes through here, so it lands in results.json.
    def d(self, key: str, value: float) -> str:
        value = round(float(value), 3)
        self.derived[key] = value
        return fmt(value)

    def count(self, key: str, value: int) -> str:
        """A derived count: stored as an integer, shown as one."""
        self.derived[key] = value
        return str(value)

    def exp(self, name: str) -> dict | None:
        e = self.exps.get(name)
        return e if e is not None and e.get("status") == "ok" else None

    def out(self, *paras: str) -> None:
        for p in paras:
            self.lines.append(p)
            self.lines.append("")

    # ---- the document -------------------------------------------------------------

    def build(self) -> str:
        sections = [
            ("coldstart", self.coldstart),
            ("memory", self.memory),
            ("scaling", self.scaling),
            ("density", self.density),
            ("download", self.download),
            ("rollback", self.rollback),
            ("platform", self.platform),
            ("startup", self.startup),
            ("compat", self.compat),
        ]
        body_start = len(self.lines)
        for name, section in sections:
            if name in self.exps:
                section(self.exps[name])
        body = self.lines[body_start:]
        self.lines = []
        self.header()
        self.goals()
        self.setup()
        self.lines.extend(body)
        self.failures()
        return "\n".join(self.lines).rstrip() + "\n"

    def header(self) -> None:
        m = self.r["machine"]
        self.out("# Evaluation")
        if self.r["mode"] == "quick":
            self.out(
                "> **Quick mode.** Every experiment ran with fewer repetitions and smaller "
                "instance counts than the full evaluation (see Configuration); the numbers are "
                "indicative, and tail percentiles rest on few samples. Run `make report` for "
                "the full evaluation."
            )
        self.out(
            f"> Measured on {m['cpu_model']} ({m['cores']} cores), kernel {m['kernel']}, "
            f"`/dev/kvm`: {m['kvm_backend']}; load average {fmt(m['load_average'][0])} when "
            f"the run started, so other work on the machine may have disturbed the timings. "
            f"The whole run took {fmt(self.r.get('seconds', 0.0))} s."
        )
        self.out(self.summary_paragraph())

    def goals(self) -> None:
        rows = ["| goal | target | measured | met |", "| --- | --- | --- | --- |"]
        for g in self.goal_results:
            bound = "≤" if g["at_most"] else "≥"
            measured = "not measured" if g["measured"] is None else f"{fmt(g['measured'])}"
            met = "" if g["met"] is None else ("yes" if g["met"] else "**no**")
            rows.append(f"| {g['text']} ({g['source']}) | {bound} {g['target']:g} {g['unit']} "
                        f"| {measured} | {met} |")
        met = self.count("goals.met", sum(1 for g in self.goal_results if g["met"]))
        measured = self.count("goals.measured",
                              sum(1 for g in self.goal_results if g["met"] is not None))
        self.out(f"Against the goals the issues set for this machine, {met} of {measured} "
                 "measured goals are met in this run:", "\n".join(rows))

    def compare(self, key: str, ours: float, theirs: float, what: str) -> str:
        """'N× faster than what' or 'N× the time of what', from two medians."""
        if ours <= theirs:
            return f"{self.d(key, theirs / ours)}× faster than {what}"
        return f"{self.d(key, ours / theirs)}× the time of {what}"

    def summary_paragraph(self) -> str:
        parts = []
        cs = self.exp("coldstart")
        if cs:
            s = ok_series(cs)
            med = {k: v["ms"]["median"] for k, v in s.items()}
            best_usf = self.fastest(s, [k for k in COLDSTART_ORDER if k in USF_SERIES])
            if best_usf:
                name, ms = best_usf
                text = (f"The fastest way usetl answers a request, {PROSE[name]}, takes "
                        f"{fmt(ms)} ms from request to result at the median")
                cmp = [self.compare(f"summary.best_usf_vs_{k}", ms, med[k], what)
                       for k, what in (("host_process", "a host process per call"),
                                       ("container", "a container per call"))
                       if k in med]
                parts.append(text + (": " + " and ".join(cmp) if cmp else "") + ".")
                if "zygote" in med and med["zygote"] < ms:
                    parts.append(
                        f"Only the SOCK zygote ({fmt(med['zygote'])} ms), which forks a process "
                        "with no VM boundary and no monitor in between, is faster."
                    )
            if "hf_fork" in med and "usf_create" in med:
                parts.append(
                    f"Forking a function template per call takes {fmt(med['hf_fork'])} ms, "
                    + self.compare("summary.fork_vs_create", med["hf_fork"], med["usf_create"],
                                   f"creating a USF ({fmt(med['usf_create'])} ms)")
                    + ", because CPython's start-up and the imports ran once, in the template."
                )
            elif "usf_create" in med:
                parts.append(
                    f"Creating a USF per call costs {fmt(med['usf_create'])} ms, because CPython "
                    "starts inside the new VM with every start-up syscall served by the monitor."
                )
            missing = [v["label"] for k, v in failed_series(cs).items() if k.startswith("hf_")]
            if missing:
                parts.append(
                    "The HyperFork series (" + ", ".join(missing) + ") failed in this run, so "
                    "the cloning claims are not yet supported by these numbers."
                )
        mem = self.exp("memory")
        ms_ = ok_series(mem) if mem else {}
        if "hf_clone" in ms_ and "usf" in ms_:
            parts.append(
                f"An idle clone holds {fmt(ms_['hf_clone']['uss_mib'])} MiB of private memory "
                f"against {fmt(ms_['usf']['uss_mib'])} MiB for a USF started on its own."
            )
        elif "usf" in ms_:
            parts.append(f"An idle USF holds {fmt(ms_['usf']['uss_mib'])} MiB of private memory.")
        den = self.exp("density")
        if den and "hf_clone" in ok_series(den):
            c = ok_series(den)["hf_clone"]
            parts.append(
                f"{c['fits_in_budget']} clones fit in {den['budget_mib']} MiB"
                + (" (extrapolated from the clones held)." if c["extrapolated"] else ".")
            )
        dl = self.exp("download")
        if dl:
            s = ok_series(dl)
            if "usf_etl" in s and "host_shm" in s:
                e, h = s["usf_etl"]["points"][-1], s["host_shm"]["points"][-1]
                text = (f"At {e['mib']} MiB, etl.get takes "
                        f"{self.d('summary.etl_vs_shm', e['ms']['mean'] / h['ms']['mean'])}× "
                        "the time of a host download to /dev/shm")
                if "usf_socket" in s:
                    k = s["usf_socket"]["points"][-1]
                    text += (", and the socket path "
                             f"{self.d('summary.socket_vs_etl', k['ms']['mean'] / e['ms']['mean'])}"
                             "× the time of etl.get")
                parts.append(text + ".")
            elif failed_series(dl):
                parts.append("The in-USF download paths failed in this run.")
        pl = self.exp("platform")
        h = ok_series(pl).get("http_kvm_noop") if pl else None
        if h:
            parts.append(
                f"Through its HTTP API on the KVM backend the platform sustains "
                f"{fmt(h['per_second'])} no-op invocations per second at "
                f"{fmt(h['ms']['median'])} ms median latency on this machine."
            )
        cp = self.exp("compat")
        if cp:
            parts.append(
                f"Of {cp['total']} stdlib modules and packages checked, {cp['usf_passed']} import "
                f"and pass their smoke test in a USF ({cp['host_passed']} on the host)."
            )
        if not parts:
            return "No experiment produced numbers in this run; the failures are listed below."
        return " ".join(parts)

    @staticmethod
    def fastest(series: dict, names: list[str]) -> tuple[str, float] | None:
        present = [(n, series[n]["ms"]["median"]) for n in names if n in series]
        return min(present, key=lambda p: p[1]) if present else None

    def setup(self) -> None:
        m, cfg = self.r["machine"], self.r["config"]
        self.out("## Experimental setup")
        self.out(
            "**Platform.** "
            f"CPU: {m['cpu_model']}, {m['cores']} cores; memory: {m['memory_mib']} MiB "
            f"({m['memory_available_mib']} MiB available at the start); OS: {m['os']}, "
            f"kernel {m['kernel']}; KVM backend: {m['kvm_backend']} (read from the loaded "
            "kernel modules and the CPU flags); host Python "
            f"{m['python']} (`{m['python_executable']}`), the interpreter every environment runs."
        )
        self.out(
            "**Implementation.** "
            f"usetl at commit `{m['git_commit']}`, image `{self.r['image_digest']}`. The monitor "
            "is Python on the host; a USF is a KVM VM with no guest kernel into which the monitor "
            "loads the host's CPython and serves its syscalls, one VM exit each. A HyperFork "
            "clone is such a VM in a process of its own, forked from a template that has "
            "started CPython and imported the function, its guest RAM a private copy-on-write "
            "mapping of the template's; rollback copies back the pages the clone wrote (found with "
            "the PAGEMAP_SCAN ioctl, which sees the monitor's writes as well as the guest's) "
            "and gives the guest a fresh identity. "
            "The platform runs functions as clones (KVM backend) or as processes forked from a "
            "namespaced zygote (process backend), behind an HTTP API. The baselines "
            "are built here from the same interpreter: a host process, a runc container whose "
            "read-only root filesystem is the USF image's own files (user, pid, network, ipc, "
            "uts, mount and cgroup namespaces, no capabilities), and a SOCK-style zygote."
        )
        rows = ["| setting | value | meaning |", "| --- | --- | --- |"]
        for key, value in cfg.items():
            shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            rows.append(f"| `{key}` | {shown} | {CONFIG_HELP[key]} |")
        self.out("**Configuration.** Every tunable of this run:", "\n".join(rows))
        for owner, values in self.r.get("settings", {}).items():
            rows = ["| setting | value |", "| --- | --- |"]
            for key, value in values.items():
                shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
                rows.append(f"| `{key}` | {shown or '(none)'} |")
            self.out(f"usetl's `{owner}` ({SETTINGS_HELP.get(owner, 'defaults')}):",
                     "\n".join(rows))
        self.out(
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
        self.out(
            "**Metrics.** Latency from the request to the result at the median, p95 and p99; "
            "download time as mean and standard deviation; USS (the private pages of every host "
            "process an instance has), PSS (shared pages divided among their sharers) and the "
            "drop of the host's MemAvailable per instance; instances that fit in a memory budget."
        )
        self.out(
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

    # ---- sections -----------------------------------------------------------------

    def section(self, exp: dict, title: str, setup: str) -> bool:
        """The heading and set-up paragraph; False if the experiment failed."""
        self.out(f"## {title}", setup)
        if exp.get("status") != "ok":
            self.out(f"**This experiment failed**: {exp.get('reason', 'no reason recorded')}.")
            return False
        return True

    def figure(self, name: str, caption: str, draw: Callable[[object], None]) -> int:
        number, filename = self.figures.save(name, draw)
        self.out(f"![Figure {number}: {caption}]({filename})", f"*Figure {number}: {caption}*")
        return number

    def failed_note(self, exp: dict) -> None:
        lines = failure_lines(exp)
        if lines:
            self.out("Series that failed in this run, shown as failed in the figure:",
                     "\n".join(lines))

    def coldstart(self, exp: dict) -> None:
        if not self.section(exp, "Cold start", (
            "In this experiment we show how long a request waits for its result when the "
            "function's instance is created for it, or taken ready-made, in each environment "
            "(the paper's Figure 6, extended with the baselines). We set up this experiment as "
            "follows: each environment runs the tiny workload; a USF is created per call, or "
            "taken from a pool of USFs started ahead of demand; HyperFork clones a function "
            "template per call (fork), hands the request to a clone forked ahead (ready), "
            "restores the template from its disk snapshot per call (restore), or reuses one "
            "clone rolled back after each call (recycle). The baselines are a host process per "
            "call, a runc container per call, a pool of pre-started containers, and a zygote "
            "that forks a child per call."
        )):
            return
        s = ok_series(exp)
        order = [k for k in COLDSTART_ORDER if k in exp["series"]]

        def draw(ax) -> None:
            names = list(reversed(order))
            labels = [exp["series"][n]["label"] for n in names]
            med = [s[n]["ms"]["median"] if n in s else 0 for n in names]
            colors = ["tab:blue" if n in USF_SERIES else "tab:gray" for n in names]
            ax.barh(labels, med, color=colors)
            for i, n in enumerate(names):
                if n in s:
                    ax.plot([s[n]["ms"]["p95"]], [i], "kv", markersize=6)
                    ax.plot([s[n]["ms"]["p99"]], [i], "r^", markersize=6)
                else:
                    ax.text(0.01, i, " failed", va="center", color="red",
                            transform=ax.get_yaxis_transform())
            ax.set_xscale("log")
            ax.set_xlabel("request to result, ms (log): bar = median, ▼ = p95, ▲ = p99")

        self.figure("coldstart", "request-to-result latency per environment (usetl in blue)", draw)
        rows = ["| environment | median ms | p95 ms | p99 ms | calls |",
                "| --- | --- | --- | --- | --- |"]
        for n in order:
            v = exp["series"][n]
            if n in s:
                ms = v["ms"]
                rows.append(f"| {v['label']} | {fmt(ms['median'])} | {fmt(ms['p95'])} | "
                            f"{fmt(ms['p99'])} | {ms['runs']} |")
            else:
                rows.append(f"| {v['label']} | failed | | | |")
        self.out("\n".join(rows))

        def cdf(ax) -> None:
            for n in order:
                if n not in s:
                    continue
                xs = sorted(s[n]["samples_ms"])
                ys = [(i + 1) / len(xs) for i in range(len(xs))]
                ax.step(xs, ys, where="post", label=exp["series"][n]["label"],
                        linestyle="-" if n in USF_SERIES else "--")
            ax.set_xscale("log")
            ax.set_xlabel("request to result, ms (log)")
            ax.set_ylabel("fraction of calls")
            ax.legend(fontsize="x-small", loc="lower right")

        self.figure("coldstart_cdf", "distribution of request-to-result latency (usetl solid, "
                    "baselines dashed)", cdf)
        self.out(self.coldstart_results(s))
        self.failed_note(exp)

    def coldstart_results(self, s: dict) -> str:
        med = {k: v["ms"]["median"] for k, v in s.items()}
        text = []
        if "usf_create" in s:
            u = s["usf_create"]
            line = f"A USF created per call answers in {fmt(med['usf_create'])} ms at the median"
            if "startup_ms" in u:
                line += (f", of which {fmt(u['startup_ms']['median'])} ms is CPython's start-up "
                         f"inside the new VM: {u['startup_syscalls']} syscalls, each a VM exit "
                         "served by the monitor in Python, and the first-touch faults of fresh "
                         "guest memory")
            text.append(line + ".")
            if "host_process" in med:
                ratio = self.d("coldstart.create_vs_host", med["usf_create"] / med["host_process"])
                text.append(
                    f"That is {ratio}× "
                    f"a host process per call ({fmt(med['host_process'])} ms), which makes the "
                    "same syscalls natively."
                )
        if "usf_pool" in s:
            line = (f"A pre-started USF answers in {fmt(med['usf_pool'])} ms: only the request's "
                    "own work remains")
            if "usf_create" in med:
                ratio = self.d("coldstart.create_vs_pool", med["usf_create"] / med["usf_pool"])
                line += (f", {ratio}× "
                         "faster than creating one, which is why the paper keeps a pool")
            text.append(line + ".")
        why = {
            "hf_ready": "the clone was forked and warmed before the request, which pays one "
                        "round trip to the clone's process and the handler",
            "hf_recycle": "the request is the clone's first after a rollback and pays the "
                          "fresh identity and the handler",
            "hf_fork": "the request pays for forking the template's process, a new VM, "
                       "restoring its state and the first-touch faults of fresh guest memory",
            "hf_restore": "the request pays for a new template process mapping the snapshot "
                          "from disk, then a fork",
        }
        for k in ("hf_ready", "hf_recycle", "hf_fork", "hf_restore"):
            if k in s:
                text.append(f"With HyperFork, {PROSE[k]} answers in "
                            f"{fmt(med[k])} ms (p99 {fmt(s[k]['ms']['p99'])} ms): {why[k]}.")
        if "fork_ms" in s.get("hf_fork", {}):
            f = s["hf_fork"]["fork_ms"]
            text.append(f"Of a clone forked per call, clone creation alone (from `fork()` to a "
                        f"clone ready for its first request) takes {fmt(f['median'])} ms at the "
                        f"median (p99 {fmt(f['p99'])} ms); the rest is the first request in a "
                        "fresh VM.")
        if "hf_fork" in med and "usf_create" in med:
            ratio = self.d("coldstart.create_vs_fork", med["usf_create"] / med["hf_fork"])
            text.append(f"Forking a started template is {ratio}× faster than creating a USF, "
                        "because CPython's start-up and the function's imports ran once, in "
                        "the template.")
        if "container" in med and "host_process" in med and med["container"] > med["host_process"]:
            text.append(
                "Among the baselines, a container per call costs "
                + self.d("coldstart.container_minus_host", med["container"] - med["host_process"])
                + " ms "
                "more than a host process: runc creates the namespaces, mounts the read-only "
                "root and /proc, and execs the interpreter."
            )
        if "container_pool" in med:
            text.append(f"A pre-started container answers in {fmt(med['container_pool'])} ms, "
                        "the cost of piping the request in and running the work.")
        if "zygote" in med:
            text.append(f"The zygote answers in {fmt(med['zygote'])} ms: fork copies no memory "
                        "and json is already imported, which is the idea HyperFork applies "
                        "to whole VMs.")
        best = self.fastest(s, [k for k in COLDSTART_ORDER if k in USF_SERIES])
        if best:
            name, ms = best
            text.append(
                f"In short: the fastest usetl path here, {PROSE[name]}, answers in "
                f"{fmt(ms)} ms; a cold start is cheap only when the interpreter was started "
                "before the request arrived."
            )
        return " ".join(text)

    def memory(self, exp: dict) -> None:
        if not self.section(exp, "Memory per idle instance", (
            "In this experiment we show how much host memory one idle instance of each "
            "environment holds, and how much of it is shared. We set up this experiment as "
            "follows: for each environment we start instances that each run the tiny workload "
            f"once and then wait, hold {self.r['config']['idle_instances']} of them at once, "
            "and read USS and PSS of every host process of each instance. A USF is measured "
            "in a monitor process of its own; beside it, the same monitor with no VM shows "
            "what the monitor alone costs."
        )):
            return
        s = ok_series(exp)
        names = [n for n in ("hf_clone", "usf", "usf_monitor", "zygote", "host_process",
                             "container") if n in exp["series"]]

        def draw(ax) -> None:
            import numpy as np

            y = np.arange(len(names))
            uss = [s[n]["uss_mib"] if n in s else 0 for n in names]
            pss = [s[n]["pss_mib"] if n in s else 0 for n in names]
            ax.barh(y - 0.2, uss, 0.4, label="USS (private)")
            ax.barh(y + 0.2, pss, 0.4, label="PSS (proportional)")
            ax.set_yticks(y, [exp["series"][n]["label"] for n in names])
            for i, n in enumerate(names):
                if n not in s:
                    ax.text(0.01, i, " failed", va="center", color="red",
                            transform=ax.get_yaxis_transform())
            ax.invert_yaxis()
            ax.set_xlabel("MiB per idle instance")
            ax.legend()

        self.figure("memory", "USS and PSS per idle instance", draw)
        rows = ["| environment | USS MiB | PSS MiB | RSS MiB | shared parent PSS MiB |",
                "| --- | --- | --- | --- | --- |"]
        for n in names:
            v = exp["series"][n]
            rows.append(f"| {v['label']} | {fmt(v['uss_mib'])} | {fmt(v['pss_mib'])} | "
                        f"{fmt(v['rss_mib'])} | {fmt(v.get('shared_mib', 0.0))} |"
                        if n in s else f"| {v['label']} | failed | | | |")
        self.out("\n".join(rows))
        text = []
        if "usf" in s:
            u = s["usf"]
            text.append(f"An idle USF holds {fmt(u['uss_mib'])} MiB of private memory "
                        f"(PSS {fmt(u['pss_mib'])} MiB).")
            if "usf_monitor" in s:
                mon = s["usf_monitor"]["uss_mib"]
                guest = self.d("memory.usf_guest_uss_mib", u["uss_mib"] - mon)
                text.append(
                    f"Of it, {fmt(mon)} MiB is the Python monitor with its imports, which every "
                    f"USF process carries, and {guest} MiB is what the VM adds: the guest pages "
                    "CPython touched while starting, which a created USF owns privately."
                )
        for n, why in (("zygote", "it shares the zygote's interpreter and imports copy-on-write "
                                  "and owns only the pages it wrote"),
                       ("host_process", "it shares only the interpreter's file-backed pages "
                                        "through the page cache"),
                       ("container", "the container's interpreter plus the `runc run` process "
                                     "that stays for its lifetime")):
            if n in s:
                text.append(f"A {s[n]['label']} holds {fmt(s[n]['uss_mib'])} MiB privately: {why}.")
        if "hf_clone" in s:
            c = s["hf_clone"]
            text.append(
                f"A HyperFork clone holds {fmt(c['uss_mib'])} MiB privately (PSS "
                f"{fmt(c['pss_mib'])} MiB, RSS {fmt(c['rss_mib'])} MiB): its guest memory is a "
                "copy-on-write view of the function template's, so it owns only the pages it "
                "wrote, plus its forked monitor's own writes; the template process "
                f"({fmt(c['shared_mib'])} MiB PSS) is paid once for all clones."
            )
            if "usf" in s:
                ratio = self.d("memory.usf_vs_clone_uss", s["usf"]["uss_mib"] / c["uss_mib"])
                text.append(
                    f"That is {ratio}× "
                    "less private memory than a USF started on its own.")
        elif "usf" in s:
            text.append("Until HyperFork clones are measured, a USF's private memory is the "
                        "price of starting CPython in each VM rather than sharing one started "
                        "copy.")
        self.out(" ".join(text))
        self.failed_note(exp)

    def scaling(self, exp: dict) -> None:
        if not self.section(exp, "Host memory as instances grow", (
            "In this experiment we show how the memory per instance changes as more instances "
            "run at once, which is where copy-on-write sharing pays. We set up this experiment "
            "as follows: for each environment we hold more and more idle instances, measuring at "
            + ", ".join(map(str, self.r["config"]["scaling_counts"]))
            + f" instances (at most {self.r['config']['heavy_cap']} for environments that start an "
            "interpreter or a VM per instance), and at each count read each instance's USS and "
            "PSS, the PSS of the parent they share, and the drop of MemAvailable divided by the "
            "count."
        )):
            return
        s = ok_series(exp)

        def draw(ax) -> None:
            for v in s.values():
                xs = [p["n"] for p in v["points"]]
                line, = ax.plot(xs, [p["per_instance_mib"] for p in v["points"]], "o-",
                                label=v["label"])
                ax.plot(xs, [p["uss_mib"] for p in v["points"]], "x--", color=line.get_color())
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("instances held at once")
            ax.set_ylabel("MiB per instance: host (o, solid), USS (x, dashed)")
            ax.legend(fontsize="small")

        if s:
            self.figure("scaling", "memory per instance as the number of instances grows", draw)
        rows = ["| environment | instances | host MiB each | PSS MiB each | USS MiB each "
                "| MemAvailable drop MiB each |",
                "| --- | --- | --- | --- | --- | --- |"]
        for v in s.values():
            for p in v["points"]:
                rows.append(f"| {v['label']} | {p['n']} | {fmt(p['per_instance_mib'])} | "
                            f"{fmt(p['pss_mib'])} | {fmt(p['uss_mib'])} | {fmt(p['host_mib'])} |")
        self.out("\n".join(rows))
        text = []
        for v in s.values():
            if v.get("stopped"):
                text.append(f"The {v['label']} series {v['stopped']}.")
        for v in s.values():
            first, last = v["points"][0], v["points"][-1]
            if last["n"] > first["n"]:
                text.append(
                    f"{v['label'][0].upper() + v['label'][1:]}: host memory per instance goes "
                    f"from {fmt(first['per_instance_mib'])} MiB alone to "
                    f"{fmt(last['per_instance_mib'])} MiB with {last['n']} held, while USS "
                    f"stays near {fmt(last['uss_mib'])} MiB."
                )
        text.append(
            "Host memory per instance is its PSS plus its share of the parent every instance "
            "shares (the zygote, the function template). It falls towards USS as the shared "
            "pages (the interpreter's files, and for forked instances the parent's memory) are "
            "divided among more sharers; what remains is each instance's private memory, the "
            "number that decides density. The MemAvailable drop also counts kernel memory but "
            "is noisy on a shared machine, where other processes allocate and free memory "
            "during the run."
        )
        self.out(" ".join(text))
        self.failed_note(exp)

    def density(self, exp: dict) -> None:
        if not self.section(exp, "Density", (
            "In this experiment we show how many idle instances of each environment fit in a "
            f"memory budget of {exp.get('budget_mib', self.r['config']['density_budget_mib'])} "
            "MiB. We set up this experiment as follows: we start instances one at a time until "
            "the host's MemAvailable has dropped by the budget, or a cap on count or time is "
            "reached; in the latter case we extrapolate from the memory per instance measured "
            "with all of them held (the larger of the host memory per instance, PSS plus its share "
            "of a shared parent, and the MemAvailable drop, so that neither "
            "the kernel's share nor sharing is hidden), and say so."
        )):
            return
        s = ok_series(exp)
        names = list(s)

        def draw(ax) -> None:
            fits = [s[n]["fits_in_budget"] for n in names]
            bars = ax.barh([s[n]["label"] for n in names], fits,
                           color=["tab:blue" if n in USF_SERIES else "tab:gray" for n in names])
            for bar, n in zip(bars, names, strict=True):
                if s[n]["extrapolated"]:
                    bar.set_hatch("//")
            ax.set_xscale("log")
            ax.invert_yaxis()
            ax.set_xlabel(f"instances in {exp['budget_mib']} MiB (hatched: extrapolated)")
            ax.bar_label(bars, [str(f) for f in fits], padding=3)

        if s:
            self.figure("density", "idle instances that fit in the memory budget", draw)
        rows = ["| environment | held | MiB each | fit in budget | how |",
                "| --- | --- | --- | --- | --- |"]
        for v in s.values():
            how = "extrapolated" if v["extrapolated"] else "measured"
            rows.append(f"| {v['label']} | {v['held']} | {fmt(v['per_instance_mib'])} | "
                        f"{v['fits_in_budget']} | {how} |")
        self.out("\n".join(rows))
        for v in s.values():
            if v.get("stopped"):
                self.out(f"The {v['label']} series {v['stopped']}.")
        if s:
            best = max(s, key=lambda n: s[n]["fits_in_budget"])
            text = [f"The densest environment here is the {s[best]['label']}, at "
                    f"{s[best]['fits_in_budget']} instances, because each owns only "
                    f"{fmt(s[best]['per_instance_mib'])} MiB."]
            if "hf_clone" in s and "usf" in s:
                ratio = self.d("density.clones_vs_usfs",
                               s["hf_clone"]["fits_in_budget"] / s["usf"]["fits_in_budget"])
                text.append(f"HyperFork clones fit {s['hf_clone']['fits_in_budget']}, {ratio}× "
                            "as many as USFs started one by one, since a clone owns only the "
                            "pages it wrote.")
            if "usf" in s:
                text.append(f"USFs created one by one fit {s['usf']['fits_in_budget']} times: "
                            f"each carries its own monitor and started interpreter "
                            f"({fmt(s['usf']['per_instance_mib'])} MiB).")
            text.append("Density follows private memory per instance, so sharing a started "
                        "interpreter copy-on-write is what packs instances densely.")
            self.out(" ".join(text))
        self.failed_note(exp)

    def download(self, exp: dict) -> None:
        if not self.section(exp, "Download", (
            "In this experiment we show how fast a function gets its input from the network "
            "by each path (the paper's Figure 5). We set up this experiment as follows: an HTTP "
            "server on the loopback interface serves objects of "
            + ", ".join(map(str, self.r["config"]["download_sizes_mib"]))
            + " MiB; each is downloaded "
            f"{self.r['config']['download_runs']} times by etl.get in a USF, by urllib in a USF "
            "over the socket path, by a host client into /dev/shm, and by a host client to a "
            "file on disk with fsync."
        )):
            return
        s = ok_series(exp)
        order = [n for n in ("usf_etl", "usf_socket", "host_shm", "host_disk")
                 if n in exp["series"]]
        sizes = self.r["config"]["download_sizes_mib"]

        def draw(ax) -> None:
            import numpy as np

            x = np.arange(len(sizes))
            width = 0.8 / max(len(order), 1)
            for i, n in enumerate(order):
                if n not in s:
                    ax.bar([0], [0], width, label=exp["series"][n]["label"] + " (failed)")
                    continue
                pts = {p["mib"]: p["ms"] for p in s[n]["points"]}
                ax.bar(x + (i - (len(order) - 1) / 2) * width,
                       [pts[m]["mean"] for m in sizes], width,
                       yerr=[pts[m]["stdev"] for m in sizes], label=exp["series"][n]["label"],
                       capsize=2)
            ax.set_xticks(x, [f"{m} MiB" for m in sizes])
            ax.set_yscale("log")
            ax.set_ylabel("download time (ms, log): mean ± stdev")
            ax.legend(fontsize="small")

        self.figure("download", "download time by object size and path", draw)
        rows = ["| path | " + " | ".join(f"{m} MiB (ms)" for m in sizes) + " |",
                "| --- |" + " --- |" * len(sizes)]
        for n in order:
            v = exp["series"][n]
            if n in s:
                cells = [f"{fmt(p['ms']['mean'])} ± {fmt(p['ms']['stdev'])}" for p in v["points"]]
            else:
                cells = ["failed"] * len(sizes)
            rows.append(f"| {v['label']} | " + " | ".join(cells) + " |")
        self.out("\n".join(rows))
        text = []
        if "host_shm" in s:
            last = s["host_shm"]["points"][-1]
            text.append(f"A host client reaches {fmt(last['mib_per_s'])} MiB/s into /dev/shm at "
                        f"{last['mib']} MiB: the loopback and a memory copy bound it.")
        if "host_disk" in s:
            last = s["host_disk"]["points"][-1]
            shm = s.get("host_shm", {}).get("points", [{}])[-1].get("mib_per_s")
            if shm is not None and last["mib_per_s"] < shm:
                text.append(f"To disk with fsync it reaches {fmt(last['mib_per_s'])} MiB/s, the "
                            "difference being the flush to the device.")
            else:
                text.append(f"To disk with fsync it reaches {fmt(last['mib_per_s'])} MiB/s, no "
                            "slower than /dev/shm in this run: the device absorbs the flush "
                            "faster than the run-to-run spread.")
        if "usf_etl" in s and "host_shm" in s:
            e, h = s["usf_etl"]["points"][-1], s["host_shm"]["points"][-1]
            ratio = e["ms"]["mean"] / h["ms"]["mean"]
            shown = self.d("download.etl_vs_shm", ratio)
            if ratio <= 1.1:
                text.append(
                    f"etl.get matches the host's download to /dev/shm ({shown}× its time at "
                    f"{e['mib']} MiB): the host streams the body straight into the USF's host "
                    "region, and the guest pays one VM exit per request, not one per packet."
                )
            else:
                text.append(
                    f"etl.get takes {shown}× the host's time at {e['mib']} MiB. It costs the "
                    "guest one VM exit per request, whatever the size, so the gap is not exits: "
                    "it is the monitor's own HTTP client streaming the body into the USF's host "
                    "region, against the host baseline's plain socket reads into a file."
                )
        if "usf_socket" in s and "usf_etl" in s:
            e, k = s["usf_etl"]["points"][-1], s["usf_socket"]["points"][-1]
            text.append(
                f"urllib over the socket path takes "
                f"{self.d('download.socket_vs_etl', k['ms']['mean'] / e['ms']['mean'])}× "
                "the time of etl.get: every recv is an exit and a copy through the monitor."
            )
        if not ({"usf_etl", "usf_socket"} & set(s)):
            text.append("The USF paths failed in this run (see below), so only the host "
                        "baselines are measured; the comparison the paper makes awaits them.")
        self.out(" ".join(text))
        self.failed_note(exp)

    def rollback(self, exp: dict) -> None:
        if not self.section(exp, "Rollback", (
            "In this experiment we show how the cost of rolling a clone back to its template "
            "depends on the memory its invocation dirtied. We set up this experiment as "
            "follows: a clone of a base template runs code that writes one byte in each of N "
            "fresh pages, for N in "
            + ", ".join(map(str, self.r["config"]["rollback_pages"]))
            + "; we then time `clone.rollback(fresh_identity=False)` (the restore alone, "
            "without the identity request that rollback otherwise runs) from the benchmark "
            f"process, {self.r['config']['rollback_runs']} times per N, and record the pages "
            "the monitor restored (the clone's private pages, found with PAGEMAP_SCAN) and its "
            "own timing."
        )):
            return
        pts = exp["points"]

        def draw(ax) -> None:
            xs = [p["restored_pages"]["median"] for p in pts]
            ax.errorbar(xs, [p["ms"]["median"] for p in pts],
                        yerr=[[0] * len(pts), [p["ms"]["p95"] - p["ms"]["median"] for p in pts]],
                        fmt="o-", capsize=3, label="rollback, timed by the caller")
            ax.plot(xs, [p["monitor_ms"]["median"] for p in pts], "x--",
                    label="rollback, timed in the clone's monitor")
            ax.set_xscale("log")
            ax.set_xlabel("pages restored (the N written plus the runtime's own)")
            ax.set_ylabel("ms: median, bar to p95")
            ax.legend(fontsize="small")

        self.figure("rollback", "rollback time against pages restored", draw)
        rows = ["| pages written | pages restored | caller median ms | caller p95 ms "
                "| monitor median ms |", "| --- | --- | --- | --- | --- |"]
        rows += [f"| {p['pages']} | {fmt(p['restored_pages']['median'])} | "
                 f"{fmt(p['ms']['median'])} | {fmt(p['ms']['p95'])} | "
                 f"{fmt(p['monitor_ms']['median'])} |" for p in pts]
        self.out("\n".join(rows))
        a, b = pts[0], pts[-1]
        pa, pb = a["restored_pages"]["median"], b["restored_pages"]["median"]
        ma, mb = a["ms"]["median"], b["ms"]["median"]
        text = [
            f"After writing {a['pages']} page(s) the monitor restores {fmt(pa)} pages in "
            f"{fmt(ma)} ms; after writing {b['pages']}, {fmt(pb)} pages in {fmt(mb)} ms."
        ]
        if pa > a["pages"]:
            text.append(
                f"Even a one-line invocation dirties {fmt(pa)} pages: the interpreter's heap, "
                "its stack and the agent's buffers change on every request."
            )
        if mb > ma and pb > pa:
            per_page = self.d("rollback.us_per_page", (mb - ma) * 1e3 / (pb - pa))
            text.append(
                f"Each further page adds about {per_page} µs (a copy of the template's page "
                "back into the clone); the rest is fixed: finding the written pages and restoring "
                "the vCPU and the monitor's state."
            )
        else:
            text.append(
                "The time does not grow with the pages in this range: the fixed part (finding "
                "the written pages, restoring the vCPU and the monitor's state, the round trip to "
                "the clone process) dominates, and the spread between runs is larger than the "
                "cost of the extra pages."
            )
        fork = ok_series(self.exps.get("coldstart", {})).get("hf_fork")
        if fork and fork["ms"]["median"] > mb:
            ratio = self.d("rollback.fork_vs_rollback", fork["ms"]["median"] / mb)
            text.append(
                f"Even the largest rollback here is {ratio}× "
                f"cheaper than forking a fresh clone per call ({fmt(fork['ms']['median'])} ms), "
                "so recycling a clone beats replacing it while leaving nothing of the previous "
                "invocation behind."
            )
        elif fork:
            text.append(
                f"Forking a fresh clone per call ({fmt(fork['ms']['median'])} ms) is cheaper "
                "than this rollback, so recycling pays only when forks are scarce."
            )
        self.out(" ".join(text))

    def platform(self, exp: dict) -> None:
        if not self.section(exp, "Platform under load", (
            "In this experiment we show the invocations per second the platform sustains and "
            "the latency each sees under load, for a no-op function and the demo ETL function "
            "(etl.get a CSV from an HTTP server on the loopback interface, filter and "
            "aggregate it, post the JSON result back), through the HTTP API and the Python API, "
            "on each backend. We set up this experiment as follows (it is `usetl bench "
            "platform`): for each backend and API a fresh platform (a `usetl serve` process on "
            "the loopback interface, or a `Platform` object in the benchmark process) deploys "
            f"both functions; {self.r['config']['load_concurrency']} clients invoke back to "
            f"back for {fmt(self.r['config']['load_warmup_s'])} untimed seconds, so the pool "
            f"grows, then for {fmt(self.r['config']['load_seconds'])} timed seconds. "
            "Throughput is completed invocations over the timed window; a serial pass with one "
            "client gives the warm latency."
        )):
            return
        s = ok_series(exp)
        names = list(exp["series"])

        def draw(ax) -> None:
            ax.barh([exp["series"][n]["label"] for n in names],
                    [s[n]["per_second"] if n in s else 0 for n in names])
            ax.invert_yaxis()
            ax.set_xlabel("invocations per second")

        self.figure("platform", "sustained invocations per second", draw)
        rows = ["| API, backend, function | per second | median ms | p99 ms | errors "
                "| serial median ms |", "| --- | --- | --- | --- | --- | --- |"]
        for n in names:
            v = exp["series"][n]
            rows.append(f"| {v['label']} | {fmt(v['per_second'])} | {fmt(v['ms']['median'])} | "
                        f"{fmt(v['ms']['p99'])} | {v['errors']} | "
                        f"{fmt(v['serial_ms']['median'])} |" if n in s
                        else f"| {v['label']} | failed | | | | |")
        self.out("\n".join(rows))
        if s:
            best = max(s, key=lambda n: s[n]["per_second"])
            text = [f"The highest throughput, {fmt(s[best]['per_second'])} invocations per "
                    f"second at {fmt(s[best]['ms']['median'])} ms median latency, is the "
                    f"{s[best]['label']}."]
            for backend in ("kvm", "process"):
                p = s.get(f"python_{backend}_noop")
                if p:
                    text.append(f"A warm no-op through the Python API alone (one client) takes "
                                f"{fmt(p['serial_ms']['median'])} ms at the median on the "
                                f"{backend} backend.")
            for backend in ("kvm", "process"):
                h, p = s.get(f"http_{backend}_noop"), s.get(f"python_{backend}_noop")
                if h and p and h["ms"]["median"] <= p["ms"]["median"]:
                    text.append(
                        f"With the {backend} backend, HTTP shows no overhead over the Python "
                        f"API in this run ({fmt(h['ms']['median'])} against "
                        f"{fmt(p['ms']['median'])} ms at the median): the difference is within "
                        "the noise of the run."
                    )
                elif h and p:
                    extra = self.d(f"platform.http_minus_python_{backend}_ms",
                                   h["ms"]["median"] - p["ms"]["median"])
                    text.append(
                        f"With the {backend} backend, HTTP adds {extra} ms to a no-op's median "
                        f"({fmt(h['ms']['median'])} against {fmt(p['ms']['median'])} ms): "
                        "a loopback connection, request parsing and JSON encoding in the "
                        "server, which shares the machine's cores with the sandboxes."
                    )
                n, t = s.get(f"python_{backend}_noop"), s.get(f"python_{backend}_etl")
                if n and t and t["ms"]["median"] > n["ms"]["median"]:
                    extra = self.d(f"platform.etl_minus_noop_{backend}_ms",
                                   t["ms"]["median"] - n["ms"]["median"])
                    text.append(f"The ETL function costs {extra} ms more than the no-op "
                                f"through the Python API ({backend} backend): a GET and a POST "
                                "carried out by the host, and the CSV parsed and aggregated "
                                "inside the sandbox.")
            pairs = [(s[f"python_{b}_noop"], s[f"python_{b}_etl"]) for b in ("kvm", "process")
                     if f"python_{b}_noop" in s and f"python_{b}_etl" in s]
            if pairs and all(t["ms"]["median"] < 2 * n["ms"]["median"] for n, t in pairs):
                text.append("The function's own work is the smaller part of an invocation "
                            "here: the platform's path sets the throughput of small functions.")
            self.out(" ".join(text))
        self.failed_note(exp)

    def startup(self, exp: dict) -> None:
        if not self.section(exp, "Syscalls and compute", (
            "In this experiment we show where a USF is slower and where it is not: the cost "
            "of one syscall, and the speed of pure-Python code. We set up this experiment as "
            "follows: `usetl bench startup` times start-ups of a USF and of a host process, a "
            "loop of getppid calls, and a pure-Python loop, in a USF and on the host."
        )):
            return
        rt = exp["syscall_round_trip_us"]
        self.out(
            "| | USF | host |\n| --- | --- | --- |\n"
            f"| start-up, median ms | {fmt(exp['usf_startup_ms']['median'])} | "
            f"{fmt(exp['host_process_ms']['median'])} |\n"
            f"| syscall round trip, µs | {fmt(rt['usf'])} | {fmt(rt['host'])} |\n"
            f"| pure-Python loop, s | {fmt(exp['compute_seconds']['usf'])} | "
            f"{fmt(exp['compute_seconds']['host'])} |"
        )
        self.out(
            f"A syscall costs {fmt(rt['usf'])} µs in a USF against {fmt(rt['host'])} µs on the "
            "host: each is a VM exit and a handler in the Python monitor. Pure-Python code runs "
            f"at {fmt(exp['compute_speed_ratio_guest_to_host'])}× the host's speed: guest user "
            "code runs natively, with no exits, and the loop is timed once per environment, so "
            "the ratio carries the noise of the machine. A USF is slow where it asks the "
            "monitor for something, not where it computes."
        )

    def compat(self, exp: dict) -> None:
        if not self.section(exp, "Compatibility", (
            "In this experiment we show which stdlib modules and packages a function can use "
            "in a USF. We set up this experiment as follows: for each module a USF imports it "
            "and runs a smoke test; a host process runs the same check beside it. Modules the "
            "image does not carry come from the module store (installed once with pip, shown "
            "to the guest read-only, with the system libraries the store copied beside them "
            "loaded first, as the platform loads a function's requirements)."
        )):
            return
        rows = ["| module | from | USF | host | USF error |", "| --- | --- | --- | --- | --- |"]
        for name, m in exp["modules"].items():
            u, h = m["usf"], m["host"]
            rows.append(f"| `{name}` | {m.get('source', 'image')} | "
                        f"{'pass' if u['ok'] else 'FAIL'} | {'pass' if h['ok'] else 'FAIL'} | "
                        f"{u['error'].replace('|', '/')} |")
        self.out("\n".join(rows))
        both = [n for n, m in exp["modules"].items() if not m["usf"]["ok"] and not m["host"]["ok"]]
        only = [n for n, m in exp["modules"].items() if not m["usf"]["ok"] and m["host"]["ok"]]
        host_only = [n for n, m in exp["modules"].items() if m["usf"]["ok"] and not m["host"]["ok"]]
        text = [f"{exp['usf_passed']} of {exp['total']} modules pass in a USF and "
                f"{exp['host_passed']} on the host."]
        if both:
            text.append("Missing on the host as well, so not a USF limitation: "
                        + ", ".join(f"`{n}`" for n in both) + ".")
        if only:
            text.append("Failing only in the USF: " + ", ".join(f"`{n}`" for n in only) + ".")
        if host_only:
            text.append("Failing only on the host: " + ", ".join(
                f"`{n}` ({exp['modules'][n]['host']['error']})" for n in host_only) + ".")
        text.append("The guest runs the host's own CPython and extension modules, so what "
                    "imports on the host imports in a USF unless it needs a file the image does "
                    "not carry or a syscall the monitor does not serve; the error column names "
                    "which.")
        self.out(" ".join(text))

    def failures(self) -> None:
        lines = []
        for name, exp in self.exps.items():
            for line in failure_lines(exp):
                lines.append(f"{line} ({exp.get('title', name)})")
        self.out("## Failures")
        self.out("\n".join(lines) if lines else "Every experiment and series completed.")


def generate(outdir: Path) -> Path:
    """Write outdir/evaluation.md and its figures from outdir/results.json."""
    path = outdir / RESULTS_FILE
    results = json.loads(path.read_text())
    report = Report(results, outdir)
    text = report.build()
    results["derived"] = report.derived
    results["goals"] = report.goal_results
    results["figures"] = report.figures.files
    path.write_text(json.dumps(results, indent=1))
    target = outdir / REPORT_FILE
    target.write_text(text)
    return target
