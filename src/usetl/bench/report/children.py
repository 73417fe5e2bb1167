"""The child-processes section: a child program and fork in a USF against the host's."""

from __future__ import annotations

from usetl.bench.report.document import Document, fmt

ROWS = (("true", "a `/bin/true`-like static program, `subprocess.run`"),
        ("shell", "the same through `/bin/sh` (`shell=True`)"),
        ("python", "`python -c pass`, `subprocess.run`"),
        ("fork", "fork to the child running"))


def write(doc: Document, exp: dict) -> None:
    setup = (
        "In this experiment we show what a child process costs. We set up this experiment "
        "as follows: a HyperFork clone runs a static program of three instructions (also "
        "through `/bin/sh`, which execs it in place) and `python -c pass` with "
        "`subprocess.run` (each starts in a sibling VM) and forks "
        "(the child is a copy of the clone's VM), timed in the guest; the host's "
        f"`subprocess.run` and `os.fork` do the same beside it, {exp.get('runs', 10)} "
        "times each, alternated; we show the medians."
    )
    if not doc.section(exp, "Child processes", setup):
        return
    rows = ["| | in a USF (ms) | on the host (ms) | ratio |", "| --- | --- | --- | --- |"]
    for name, label in ROWS:
        s = exp[name]
        rows.append(f"| {label} | {fmt(s['usf_ms'])} | {fmt(s['host_ms'])} | "
                    f"{doc.d(f'children.{name}_ratio', s['ratio'])}× |")
    doc.out("\n".join(rows))
    doc.out(
        "A child program costs a monitor fork, a new VM and the ELF loader in the USF, "
        "where the host execs; a Python child then starts CPython with every syscall an "
        "exit. A fork copies the running VM copy-on-write (the clone's memory is a private "
        "mapping already), so it costs a monitor fork and a VM, not a copy of memory."
    )
