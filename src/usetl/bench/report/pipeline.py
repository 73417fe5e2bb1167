"""The pipeline section: the zero-copy hand-off against an HTTP store, same functions."""

from __future__ import annotations

from usetl.bench.report.document import Document, fmt


def write(doc: Document, exp: dict) -> None:
    setup = (
        "In this experiment we show what handing files from one pipeline stage to the next "
        "costs. We set up this experiment as follows: three functions on the "
        f"{exp.get('backend', 'kvm')} backend (extract makes {exp.get('mib', 64)} MiB, check "
        "computes its CRC-32 and passes it on, load computes the CRC-32 again) run as a "
        "pipeline, where each stage's file is mapped into the next stage's host region, and "
        "as three plain invocations in a row that pass the bytes through a local HTTP "
        "server with etl.post and etl.get; "
        f"{exp.get('runs', 5)} runs of each, alternating, after one untimed run of each; we "
        "show the medians, first request to last result."
    )
    if not doc.section(exp, "Pipeline hand-off", setup):
        return
    doc.out("| | pipeline | through an HTTP store |\n| --- | --- | --- |\n"
            f"| median ms | {fmt(exp['pipeline_ms'])} | {fmt(exp['http_ms'])} |")
    doc.out(
        f"The pipeline is {doc.d('pipeline.speedup', exp['speedup'])}× faster; the host "
        f"copied {exp['copied_bytes']} bytes to hand the files on (the memory file that held "
        "one stage's guest region is sealed and mapped read-only into the next stage's host "
        "region). Through the HTTP store every byte crosses loopback twice per hand-off, "
        "through Python on both sides; the functions' own work is the same in both."
    )
