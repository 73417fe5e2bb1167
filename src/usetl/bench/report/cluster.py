"""The several-hosts section: the single host against a cluster of 1-3 workers."""

from __future__ import annotations

from usetl.bench.report.document import Document, fmt

LABELS = {"single": "single host (`usetl serve`)", "workers_1": "cluster, 1 worker",
          "workers_2": "cluster, 2 workers", "workers_3": "cluster, 3 workers"}


def write(doc: Document, exp: dict) -> None:
    setup = (
        "In this experiment we show what dispatching over NATS JetStream costs against the "
        "single-host server. We set up this experiment as follows (it is `usetl bench "
        "cluster`): a `usetl serve` (KVM backend), then a `usetl gateway` with 1, 2 and 3 "
        "`usetl worker`s, each worker in its own network namespace on a bridge where "
        "nats-server and PostgreSQL listen, serve a no-op and the demo ETL function over "
        f"the HTTP API; {exp.get('clients', 4)} clients invoke back to back for "
        f"{fmt(exp.get('timed_seconds', 3))} timed seconds, then one client for the serial "
        "median. On this 2-core machine workers add no CPU; the figure that matters is the "
        "dispatch overhead at the serial median, in NATS request/reply round trips, "
        "measured in turns (a no-op on the single host, one through the gateway and one "
        "worker, a round trip) so that all three see the same moments of the machine's load."
    )
    if not doc.section(exp, "Several hosts", setup):
        return
    rows = ["| setup, function | per second | median ms | serial median ms |",
            "| --- | --- | --- | --- |"]
    for key, label in LABELS.items():
        for name, m in exp["setups"][key].items():
            rows.append(f"| {label}, {name} | {fmt(m['load']['per_second'])} | "
                        f"{fmt(m['load']['ms']['median'])} | {fmt(m['serial_ms']['median'])} |")
    doc.out("\n".join(rows))
    rtt = exp["nats_round_trip_ms"]["median"]
    first = exp["setups"]["first_call"]
    doc.out(
        f"A NATS request/reply round trip took {doc.d('cluster.rtt_ms', rtt)} ms at the "
        f"median; one worker added {doc.d('cluster.overhead_ms', exp['dispatch_overhead_ms'])}"
        f" ms to the no-op's serial median, {fmt(exp['dispatch_overhead_round_trips'])} "
        "round trips (the goal is at most 2). A host's first call of a function whose "
        f"template it lacks took {fmt(first['fetched']['ms'])} ms restoring the shipped "
        f"snapshot and {fmt(first['built']['ms'])} ms building it from the code bundle; "
        f"the new host's very first call (a no-op's shipped template, its first sandbox) "
        f"{fmt(first['host_first']['ms'])} ms."
    )
