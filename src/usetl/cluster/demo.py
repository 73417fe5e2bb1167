"""`make cluster-demo`: several hosts on this machine, end to end.

Starts nats-server with JetStream and a throwaway PostgreSQL (both in temporary
directories, listening on a bridge), three workers each in its own network namespace
with its own state directory, and a gateway; deploys the demo ETL function
(api/examples/sales_etl.py), invokes it asynchronously 100 times, and prints how many
ran on each host. Every server it started is stopped at the end.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from usetl.api.client import Client
from usetl.api.demo import EXAMPLE, DataServer, sales_csv

from . import launcher
from .netns import HostNetwork
from .servers import TemporaryNats, TemporaryPostgres

FINISHED = ("succeeded", "failed", "interrupted")


def run(invocations: int = 100, hosts: int = 3, say: Callable[[str], None] = print) -> Counter:
    with tempfile.TemporaryDirectory(prefix="usetl-cluster-demo-") as tmp, \
            HostNetwork(hosts) as net, TemporaryNats(host=net.gateway_ip) as nats, \
            TemporaryPostgres(host=net.gateway_ip) as pg:
        root = Path(tmp)
        say(f"cluster-demo: nats-server on {nats.host}:{nats.port} (JetStream), PostgreSQL on "
            f"{pg.host}:{pg.port}, bridge {net.bridge}")
        data = DataServer(sales_csv(), host=net.gateway_ip)
        gateway = launcher.gateway(root / "gateway", nats.url("gateway"), pg.url())
        workers = [launcher.worker(root / f"host{i}", f"host{i}", nats.url("worker"),
                                   pg.url("usetl_worker"), netns=ns)
                   for i, ns in enumerate(net.namespaces)]
        try:
            gateway.start()  # first: it migrates the schema the workers use
            for worker in workers:
                worker.start()
            launcher.wait_for_hosts(nats.url("gateway"), {f"host{i}" for i in range(hosts)},
                                    workers)
            say(f"cluster-demo: gateway on {gateway.url}; workers "
                + ", ".join(f"host{i} ({net.ip(i)}, netns {ns})"
                            for i, ns in enumerate(net.namespaces)))
            return _invoke(gateway, data, invocations, say)
        finally:
            launcher.stop_all([*workers, gateway])
            data.close()


def _invoke(gateway: launcher.GatewayProcess, data: DataServer, invocations: int,
            say: Callable[[str], None]) -> Counter:
    with Client(gateway.url, gateway.admin_token) as client:
        client.deploy("sales", EXAMPLE, allow=[data.base + "/"])
        say("cluster-demo: deployed sales (sales_etl.py:handler)")
        event = {"source": data.base + "/sales.csv", "sink": data.base + "/totals",
                 "min_amount": 250}
        started = time.monotonic()
        ids = [client.invoke_async("sales", event) for _ in range(invocations)]
        pending, records = set(ids), {}
        while pending:
            for invocation_id in list(pending):
                record = client.invocation(invocation_id)
                if record["status"] in FINISHED:
                    records[invocation_id] = record
                    pending.discard(invocation_id)
            time.sleep(0.2)
        elapsed = time.monotonic() - started
    per_host = Counter(r["host"] for r in records.values())
    failed = sum(r["status"] != "succeeded" for r in records.values())
    say(f"cluster-demo: {invocations} invocations in {elapsed:.1f} s, {failed} failed, "
        f"{len(data.posts)} results posted")
    for host, count in sorted(per_host.items()):
        say(f"cluster-demo:   {host}: {count}")
    return per_host


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invocations", type=int, default=100)
    parser.add_argument("--hosts", type=int, default=3)
    args = parser.parse_args()
    run(args.invocations, args.hosts, say=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
