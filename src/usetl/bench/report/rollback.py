"""The rollback section: time to roll a clone back against the pages it dirtied."""

from __future__ import annotations

from usetl.bench.report.document import Document, fmt, ok_series
from usetl.bench.rollback import WARM_RUNS


def _setup(doc: Document) -> str:
    return (
        "In this experiment we show how the cost of rolling a clone back to its template "
        "depends on the memory its invocation dirtied. We set up this experiment as "
        "follows: a clone of a base template runs code that writes one byte in each of N "
        "fresh pages, for N in "
        + ", ".join(map(str, doc.config["rollback_pages"]))
        + "; we then time `clone.rollback()` (the restore: it runs no guest code, the "
        "fresh identity travels with the next request) from the benchmark "
        f"process, {doc.config['rollback_runs']} times per N after {WARM_RUNS} untimed "
        "rounds (a clone process's first rollbacks run the path for the first time), and "
        "record the pages "
        "the monitor restored (the clone's private pages, found with PAGEMAP_SCAN) and its "
        "own timing."
    )


def write(doc: Document, exp: dict) -> None:
    if not doc.section(exp, "Rollback", _setup(doc)):
        return
    pts = exp["points"]
    _figure(doc, pts)
    rows = ["| pages written | pages restored | caller median ms | caller p95 ms "
            "| monitor median ms |", "| --- | --- | --- | --- | --- |"]
    rows += [f"| {p['pages']} | {fmt(p['restored_pages']['median'])} | "
             f"{fmt(p['ms']['median'])} | {fmt(p['ms']['p95'])} | "
             f"{fmt(p['monitor_ms']['median'])} |" for p in pts]
    doc.out("\n".join(rows))
    doc.out(" ".join(_cost_text(doc, pts) + _fork_text(doc, pts[-1]["ms"]["median"])))


def _figure(doc: Document, pts: list[dict]) -> None:
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

    doc.figure("rollback", "rollback time against pages restored", draw)


def _cost_text(doc: Document, pts: list[dict]) -> list[str]:
    """What the fewest and the most pages cost, and what each further page adds."""
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
        per_page = doc.d("rollback.us_per_page", (mb - ma) * 1e3 / (pb - pa))
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
    return text


def _fork_text(doc: Document, largest_ms: float) -> list[str]:
    """The largest rollback against forking a fresh clone per call."""
    fork = ok_series(doc.exps.get("coldstart", {})).get("hf_fork")
    if fork and fork["ms"]["median"] > largest_ms:
        ratio = doc.d("rollback.fork_vs_rollback", fork["ms"]["median"] / largest_ms)
        return [
            f"Even the largest rollback here is {ratio}× "
            f"cheaper than forking a fresh clone per call ({fmt(fork['ms']['median'])} ms), "
            "so recycling a clone beats replacing it while leaving nothing of the previous "
            "invocation behind."
        ]
    if fork:
        return [
            f"Forking a fresh clone per call ({fmt(fork['ms']['median'])} ms) is cheaper "
            "than this rollback, so recycling pays only when forks are scarce."
        ]
    return []
