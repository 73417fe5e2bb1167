"""The pipeline section: the zero-copy hand-off against an HTTP store, same functions."""

from __future__ import annotations

from usetl.bench.report.document import Document, fmt


def write(doc: Document, exp: dict) -> None:
    setup = (
        "In this experiment we show what handing files from one pipeline stage to the next "
        "costs. We set up this experiment as follows: three functions on the "
        f"{exp.get('backend', 'kvm')} backend (extract makes {exp.get('mib', 64)} MiB, check "
        "computes its CRC-32 and passes it on as it is, load computes the CRC-32 again) run "
        "as a pipeline, where each stage's file is mapped into the next stage's host region, "
        "and as three plain invocations in a row that pass the bytes through a local HTTP "
        "server with etl.post and etl.get; each way has its own deployment of the same code "
        "(its own warm instances), "
        f"{exp.get('runs', 5)} runs of each, alternating, after two untimed runs of each, "
        "each run started once every instance has been rolled back; we show the medians, "
        "first request to last result."
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
    if exp.get("ceiling"):
        doc.out(f"The functions' own work (each stage's guest time, the lesser of the two "
                f"ways') took {fmt(exp['work_ms'])} ms: a pipeline that spent nothing beyond "
                f"it would be {fmt(exp['ceiling'])}× faster than the HTTP way, the ceiling of "
                "this ratio here, however cheap the hand-off.")
    if "where" in exp:
        rows = "\n".join(
            f"| {way} | {stage['function']} | {fmt(stage['dispatch_ms'])} | "
            f"{fmt(stage['guest_ms'])} | {fmt(stage['etl_ms'])} | "
            f"{_count(stage, 'first_touches')} | {_count(stage, 'exits')} |"
            for way, stages in exp["where"].items() for stage in stages)
        doc.out("Where each stage's time went (median ms of its invocation's phases, and the "
                "median of its first touches of pages, which KVM fixed on its own, and of its "
                "exits to the monitor; median of each run's pair of ways: "
                f"{fmt(exp['paired_speedup'])}×):\n\n"
                "| way | stage | dispatch | guest | ETL requests | first touches | exits |\n"
                "| --- | --- | --- | --- | --- | --- | --- |\n" + rows)


def _count(stage: dict, name: str) -> str:
    """A stage's median count, or a dash in results from before the counts were kept."""
    return fmt(stage[name]) if name in stage else "–"
