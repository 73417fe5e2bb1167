"""The I/O-overlap section: N etl.get one after another against the same on N threads."""

from __future__ import annotations

from usetl.bench.report.document import Document, fmt


def write(doc: Document, exp: dict) -> None:
    setup = (
        "In this experiment we show whether guest threads overlap their I/O. We set up "
        "this experiment as follows: one USF runs a guest program that does "
        f"{exp.get('requests', 8)} etl.get calls of {exp.get('size_mib', 8)} MiB each from "
        f"a local HTTP server that waits {exp.get('delay_ms', 50)} ms before each answer, "
        "first one after another, then on as many threads of a ThreadPoolExecutor, timed "
        f"inside the guest, {exp.get('runs', 3)} times; we show the medians."
    )
    if not doc.section(exp, "I/O overlap with threads", setup):
        return
    doc.out("| | one after another | on threads |\n| --- | --- | --- |\n"
            f"| median ms | {fmt(exp['sequential_ms'])} | {fmt(exp['threaded_ms'])} |")
    doc.out(
        f"On threads the requests finish {doc.d('threads.speedup', exp['speedup'])}× "
        "faster: while a guest thread waits for its request, a host thread serves it and "
        "the vCPU runs the other guest threads, so the delays overlap. Receiving the "
        "bodies still costs host CPU (the HTTP client is Python in the monitor, under one "
        "GIL, and the server shares the machine), which does not overlap: where the "
        "machine's CPUs are busy, that CPU sets both times and the speed-up shrinks."
    )
