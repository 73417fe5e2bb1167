"""The floors section: a VM exit, a first touch, and what a recycled request costs in them."""

from __future__ import annotations

from usetl.bench.report.document import Document, fmt

SETUP = (
    "In this experiment we measure the two events that set every latency floor on this "
    "machine, and count them on the path of a recycled request. We set up this "
    "experiment as follows: in a clone of a base template, a guest loop calls getppid "
    "and times each call with the vDSO clock (a VM exit resumed from Python: the SYSCALL, "
    "the trampoline's port write, a trivial handler in the monitor and the resume); a "
    "VM whose guest loops on that port write alone is resumed by a loop that does "
    "nothing else (the bare exit: what KVM charges before any guest or monitor code); a "
    "clone of a function template whose module filled buffers writes, writes again and "
    "reads one byte per page of them, each timed (a first touch: copy-on-write on the "
    "host and a shadow page fault under PVM; the second write is the loop's own cost); "
    "a no-op's Invoke and Invoked go between two processes over the protocol's Channel "
    "(`usetl bench protocol`); and the clone runs a no-op (`pass`) after each rollback, "
    "timed from the benchmark process, and rollbacks after the guest wrote 64 fresh "
    "pages, timed in the monitor, with the monitor's count of exits (returns from "
    "KVM_RUN) for each."
)


def statement(doc: Document) -> list[str]:
    """The floors, for the top of the report."""
    e = doc.exp("floors")
    if not e:
        return []
    touch = e["first_touch"]
    return [f"The floors on this machine: a VM exit resumed from Python costs "
            f"{fmt(e['exit_us'])} µs and a clone's first touch of a page of its template's "
            f"memory {fmt(touch['write_us'])} µs to write ({fmt(touch['read_us'])} µs to "
            "read), each a median per event measured in this run."]


def write(doc: Document, exp: dict) -> None:
    if not doc.section(exp, "Floors and exits", SETUP):
        return
    touch, rec, rb = exp["first_touch"], exp["recycled"], exp["rollback"]
    msg = exp["message_us"]["median"]
    doc.out(
        "| event | median | exits |\n| --- | --- | --- |\n"
        f"| VM exit resumed from Python (getppid) | {fmt(exp['exit_us'])} µs | 1 |\n"
        f"| bare exit: the port write alone, no handler | {fmt(exp['bare_exit_us'])} µs | 1 |\n"
        f"| first write to a template page ({touch['pages']} pages) | "
        f"{fmt(touch['write_us'])} µs | |\n"
        f"| first read of a template page | {fmt(touch['read_us'])} µs | |\n"
        f"| second write to the same page (the loop alone) | {fmt(touch['again_us'])} µs | |\n"
        f"| message round trip between two processes (Invoke, Invoked) | {fmt(msg)} µs | |\n"
        f"| recycled no-op, request to result | {fmt(rec['request_ms']['median'])} ms | "
        f"{fmt(rec['request_exits'])} |\n"
        f"| rollback after that no-op (monitor) | {fmt(rec['rollback_ms']['median'])} ms | "
        f"{fmt(rec['rollback_exits'])} |\n"
        f"| rollback after {rb['dirtied']} pages dirtied (monitor) | {fmt(rb['ms']['median'])} "
        f"ms, of which the copy {fmt(rb['copy_ms']['median'])} ms | {fmt(rb['exits'])} |"
    )
    floor_us = 4 * exp["exit_us"] + msg
    doc.out(
        f"A recycled no-op took {fmt(rec['request_exits'])} exits and "
        f"{doc.d('floors.recycled_over_floor', rec['request_ms']['median'] * 1e3 / floor_us)}× "
        f"the time of four exits and one message round trip "
        f"({doc.d('floors.floor_us', floor_us)} µs); the rest "
        "is the monitor's and the server's Python on the request's path. A rollback runs no "
        "guest code: the fresh identity goes into the next request."
    )
