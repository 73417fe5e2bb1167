"""The cold-start section: request-to-result latency per environment (two figures)."""

from __future__ import annotations

from usetl.bench.report.document import (
    USF_SERIES,
    Document,
    failed_series,
    fastest,
    fmt,
    ok_series,
)

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
# Why each HyperFork path costs what it does.
WHY = {
    "hf_ready": "the clone was forked and warmed before the request, which pays one "
                "round trip to the clone's process and the handler",
    "hf_recycle": "the request is the clone's first after a rollback and carries its "
                  "fresh identity, taken in the same guest run as the handler",
    "hf_fork": "the request pays for forking the template's process, a new VM, "
               "restoring its state and the first-touch faults of fresh guest memory",
    "hf_restore": "the request pays for a new template process mapping the snapshot "
                  "from disk, then a fork",
}
SETUP = (
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
)


def write(doc: Document, exp: dict) -> None:
    if not doc.section(exp, "Cold start", SETUP):
        return
    s = ok_series(exp)
    order = [k for k in COLDSTART_ORDER if k in exp["series"]]
    _latency_figure(doc, exp, s, order)
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
    doc.out("\n".join(rows))
    _distribution_figure(doc, exp, s, order)
    doc.out(" ".join(_usf_text(doc, s) + _hyperfork_text(doc, s) + _baseline_text(doc, s)))
    _in_turns_text(doc, exp.get("in_turns"))
    doc.failed_note(exp)


def _in_turns_text(doc: Document, t: dict | None) -> None:
    """The cold paths timed in turns: the numbers the issue-15 goals take."""
    if not t:
        return
    if t.get("status") != "ok":
        doc.out(f"The cold paths timed in turns failed in this run: {t.get('reason')}.")
        return
    med = {k: fmt(t[k]["ms"]["median"]) for k in ("hf_fork", "zygote", "hf_restore")}
    doc.out(
        "The goals table takes the cold paths from a second run, one call of each in turn "
        "(a fork, a zygote's child, a restore, again), so that a fork does not follow a "
        "fork at once and the machine's load falls on all three alike: a new clone "
        f"{med['hf_fork']} ms, the SOCK-style zygote's child {med['zygote']} ms "
        f"({fmt(t['fork_vs_zygote'])}×), a template restored from its snapshot "
        f"{med['hf_restore']} ms ({fmt(t['restore_vs_fork'])}× the fork)."
    )


def _latency_figure(doc: Document, exp: dict, s: dict, order: list[str]) -> None:
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

    doc.figure("coldstart", "request-to-result latency per environment (usetl in blue)", draw)


def _distribution_figure(doc: Document, exp: dict, s: dict, order: list[str]) -> None:
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

    doc.figure("coldstart_cdf", "distribution of request-to-result latency (usetl solid, "
               "baselines dashed)", cdf)


def _usf_text(doc: Document, s: dict) -> list[str]:
    """A USF created per call against one started ahead and a host process."""
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
            ratio = doc.d("coldstart.create_vs_host", med["usf_create"] / med["host_process"])
            text.append(
                f"That is {ratio}× "
                f"a host process per call ({fmt(med['host_process'])} ms), which makes the "
                "same syscalls natively."
            )
    if "usf_pool" in s:
        line = (f"A pre-started USF answers in {fmt(med['usf_pool'])} ms: only the request's "
                "own work remains")
        if "usf_create" in med:
            ratio = doc.d("coldstart.create_vs_pool", med["usf_create"] / med["usf_pool"])
            line += (f", {ratio}× "
                     "faster than creating one, which is why the paper keeps a pool")
        text.append(line + ".")
    return text


def _hyperfork_text(doc: Document, s: dict) -> list[str]:
    med = {k: v["ms"]["median"] for k, v in s.items()}
    text = []
    for k in ("hf_ready", "hf_recycle", "hf_fork", "hf_restore"):
        if k in s:
            text.append(f"With HyperFork, {PROSE[k]} answers in "
                        f"{fmt(med[k])} ms (p99 {fmt(s[k]['ms']['p99'])} ms): {WHY[k]}.")
    if "fork_ms" in s.get("hf_fork", {}):
        f = s["hf_fork"]["fork_ms"]
        text.append(f"Of a clone forked per call, clone creation alone (from `fork()` to a "
                    f"clone ready for its first request) takes {fmt(f['median'])} ms at the "
                    f"median (p99 {fmt(f['p99'])} ms); the rest is the first request in a "
                    "fresh VM.")
    if "hf_fork" in med and "usf_create" in med:
        ratio = doc.d("coldstart.create_vs_fork", med["usf_create"] / med["hf_fork"])
        text.append(f"Forking a started template is {ratio}× faster than creating a USF, "
                    "because CPython's start-up and the function's imports ran once, in "
                    "the template.")
    return text


def _baseline_text(doc: Document, s: dict) -> list[str]:
    """The baselines, then the fastest usetl path."""
    med = {k: v["ms"]["median"] for k, v in s.items()}
    text = []
    if "container" in med and "host_process" in med and med["container"] > med["host_process"]:
        text.append(
            "Among the baselines, a container per call costs "
            + doc.d("coldstart.container_minus_host", med["container"] - med["host_process"])
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
    best = fastest(s, [k for k in COLDSTART_ORDER if k in USF_SERIES])
    if best:
        name, ms = best
        text.append(
            f"In short: the fastest usetl path here, {PROSE[name]}, answers in "
            f"{fmt(ms)} ms; a cold start is cheap only when the interpreter was started "
            "before the request arrived."
        )
    return text


def summary(doc: Document) -> list[str]:
    """The summary's sentences on cold starts."""
    cs = doc.exp("coldstart")
    if not cs:
        return []
    parts = []
    s = ok_series(cs)
    med = {k: v["ms"]["median"] for k, v in s.items()}
    best_usf = fastest(s, [k for k in COLDSTART_ORDER if k in USF_SERIES])
    if best_usf:
        name, ms = best_usf
        text = (f"The fastest way usetl answers a request, {PROSE[name]}, takes "
                f"{fmt(ms)} ms from request to result at the median")
        cmp = [doc.compare(f"summary.best_usf_vs_{k}", ms, med[k], what)
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
            + doc.compare("summary.fork_vs_create", med["hf_fork"], med["usf_create"],
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
    return parts
