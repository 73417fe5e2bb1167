"""The syscalls-and-compute section: a syscall's cost and pure-Python speed in a USF."""

from __future__ import annotations

from usetl.bench.report.document import Document, fmt

SETUP = (
    "In this experiment we show where a USF is slower and where it is not: the cost "
    "of one syscall, and the speed of pure-Python code. We set up this experiment as "
    "follows: `usetl bench startup` times start-ups of a USF and of a host process, a "
    "loop of getppid calls, and a pure-Python loop, in a USF and on the host."
)


def write(doc: Document, exp: dict) -> None:
    if not doc.section(exp, "Syscalls and compute", SETUP):
        return
    rt = exp["syscall_round_trip_us"]
    doc.out(
        "| | USF | host |\n| --- | --- | --- |\n"
        f"| start-up, median ms | {fmt(exp['usf_startup_ms']['median'])} | "
        f"{fmt(exp['host_process_ms']['median'])} |\n"
        f"| syscall round trip, µs | {fmt(rt['usf'])} | {fmt(rt['host'])} |\n"
        f"| pure-Python loop, s | {fmt(exp['compute_seconds']['usf'])} | "
        f"{fmt(exp['compute_seconds']['host'])} |"
    )
    doc.out(
        f"A syscall costs {fmt(rt['usf'])} µs in a USF against {fmt(rt['host'])} µs on the "
        "host: each is a VM exit and a handler in the Python monitor. Pure-Python code runs "
        f"at {fmt(exp['compute_speed_ratio_guest_to_host'])}× the host's speed: guest user "
        "code runs natively, with no exits, and the loop is timed once per environment, so "
        "the ratio carries the noise of the machine. A USF is slow where it asks the "
        "monitor for something, not where it computes."
    )
