"""`usetl bench cluster`: several hosts against one, measured side by side in one run.

The single-host server (`usetl serve`, KVM backend) and a cluster (a gateway, then 1, 2
and 3 workers, each in its own network namespace on a bridge, NATS and PostgreSQL on
the bridge) serve the same no-op and demo ETL functions over the HTTP API: throughput
and latency under `clients` concurrent callers, and the median of calls one at a time.
On a 2-core machine more workers cannot add CPU, so the figure that matters is the
dispatch overhead at the median against the single host, counted in NATS request/reply
round trips measured in the same run. Last, the first call of a function on a host that
lacks its template: restored from the shipped snapshot, and built from the code bundle.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from usetl.api.client import Client
from usetl.api.demo import DataServer, sales_csv
from usetl.api.launcher import ServerProcess
from usetl.cluster import launcher, membership, templates
from usetl.cluster.bus import PING_SUBJECT, Bus
from usetl.cluster.config import ClusterConfig
from usetl.cluster.netns import HostNetwork
from usetl.cluster.servers import TemporaryNats, TemporaryPostgres

from .stats import summary
from .sustained import checked, functions, measure

WORKERS = 3
TURNS = 300  # of the dispatch overhead's side-by-side measurement
WARMUP_TURNS = 20


def run(clients: int = 4, seconds: float = 3.0, warmup_s: float = 1.0,
        say: Callable[[str], None] = print) -> dict:
    with tempfile.TemporaryDirectory(prefix="usetl-bench-cluster-") as tmp, \
            HostNetwork(WORKERS + 1) as net, TemporaryNats(host=net.gateway_ip) as nats, \
            TemporaryPostgres(host=net.gateway_ip) as pg:
        root = Path(tmp)
        data = DataServer(sales_csv(), host=net.gateway_ip)
        try:
            # Kept up beside the cluster: the overhead is measured call against call.
            with ServerProcess(root / "single", None, "kvm") as server:
                say("single host")
                single = _per_thread_client(server.url, server.admin_token)
                setups = {"single": _single_host(single, data, clients, seconds, warmup_s)}
                setups.update(_cluster(root, net, nats, pg, data, single(), clients, seconds,
                                       warmup_s, say))
        finally:
            data.close()
    dispatch = setups.pop("dispatch")
    return {"clients": clients, "timed_seconds": seconds, "setups": setups,
            "nats_round_trip_ms": dispatch["round_trip_ms"],
            "dispatch": dispatch, "dispatch_overhead_ms": dispatch["overhead_ms"],
            "dispatch_overhead_round_trips": dispatch["round_trips"]}


def _single_host(client: Callable[[], Client], data: DataServer, clients: int, seconds: float,
                 warmup_s: float) -> dict:
    out = {}
    for name, (files, options, event) in functions(data).items():
        client().request("PUT", f"/v1/functions/{name}",
                         json={"files": files, "concurrency": clients, **options})
        out[name] = measure(lambda n=name, e=event: client().invoke(n, e), clients,
                            seconds, warmup_s)
    return out


def _per_thread_client(url: str, token: str) -> Callable[[], Client]:
    local = threading.local()

    def client() -> Client:
        if not hasattr(local, "client"):
            local.client = Client(url, token)
        return local.client

    return client


def _cluster(root: Path, net: HostNetwork, nats: TemporaryNats, pg: TemporaryPostgres,
             data: DataServer, single: Client, clients: int, seconds: float, warmup_s: float,
             say: Callable[[str], None]) -> dict:
    gateway = launcher.gateway(root / "gateway", nats.url("gateway"), pg.url()).start()
    workers: list[launcher.ClusterProcess] = []
    out: dict = {}
    try:
        client = _per_thread_client(gateway.url, gateway.admin_token)
        for n in range(1, WORKERS + 1):
            workers.append(_worker(root, net, nats, pg, n - 1).start())
            launcher.wait_for_hosts(nats.url("gateway"), {f"host{n - 1}"}, workers)
            if n == 1:
                for name, (files, options, _) in functions(data).items():
                    client().request("PUT", f"/v1/functions/{name}",
                                     json={"files": files, "concurrency": clients, **options})
                say("dispatch overhead: the single host, one worker and NATS, call by call")
                out["dispatch"] = _dispatch_overhead(nats, single, client(),
                                                     functions(data)["noop"][2])
            say(f"cluster, {n} worker(s)")
            out[f"workers_{n}"] = {
                name: measure(lambda n=name, e=event: client().invoke(n, e), clients,
                              seconds, warmup_s)
                for name, (_, _, event) in functions(data).items()}
        say("first call on a host without the template")
        out["first_call"] = _first_call(root, net, nats, pg, data, client(), workers)
    finally:
        launcher.stop_all([*workers, gateway])
    return out


def _dispatch_overhead(nats: TemporaryNats, single: Client, gateway: Client,
                       event: object) -> dict:
    """What a gateway and one worker add to a serial no-op against the single host, in
    NATS request/reply round trips (a gateway's connection to a worker's ping answer).
    Measured in turns (a single-host call, a cluster call, a round trip), so that all
    three medians see the same moments of a shared machine's load."""
    bus = Bus(ClusterConfig(nats.url("gateway"), ""), "bench-round-trips")
    times: dict[str, list[float]] = {"single": [], "cluster": [], "round_trip": []}

    def timed(label: str, call: Callable[[], object]) -> None:
        t0 = time.perf_counter()
        call()
        times[label].append((time.perf_counter() - t0) * 1e3)

    try:
        for turn in range(WARMUP_TURNS + TURNS):
            if turn == WARMUP_TURNS:
                times = {label: [] for label in times}
            timed("single", lambda: checked(single.invoke("noop", event)))
            timed("cluster", lambda: checked(gateway.invoke("noop", event)))
            timed("round_trip", lambda: bus.run(bus.nc.request(PING_SUBJECT, b"", timeout=5)))
    finally:
        bus.close()
    medians = {label: summary(ms) for label, ms in times.items()}
    overhead = medians["cluster"]["median"] - medians["single"]["median"]
    return {"single_ms": medians["single"], "cluster_ms": medians["cluster"],
            "round_trip_ms": medians["round_trip"], "overhead_ms": round(overhead, 3),
            "round_trips": round(overhead / medians["round_trip"]["median"], 2)}


def _worker(root: Path, net: HostNetwork, nats: TemporaryNats, pg: TemporaryPostgres,
            i: int) -> launcher.ClusterProcess:
    return launcher.worker(root / f"host{i}", f"host{i}", nats.url("worker"),
                           pg.url("usetl_worker"), netns=net.namespaces[i])


def _first_call(root: Path, net: HostNetwork, nats: TemporaryNats, pg: TemporaryPostgres,
                data: DataServer, client: Client, workers: list) -> dict:
    """A new host, every other one drained: its very first call (a no-op), then its first
    call of a function whose shipped template it restores, and of one whose template
    comes from an incompatible host."""
    bus = Bus(ClusterConfig(nats.url("gateway"), ""), "bench-cluster")
    try:
        files, options, event = functions(data)["etl"]
        for name in ("fetched", "built"):
            client.request("PUT", f"/v1/functions/{name}", json={"files": files, **options})
        key, shipped = _wait_shipped(bus, "built")
        _wait_shipped(bus, "fetched")
        other = templates.TemplateManifest("0" * 32, shipped.snapshot, "an incompatible host")
        bus.run(bus.templates.put(templates.manifest_key(key, 1), msgspec.json.encode(other)))
        fresh = _worker(root, net, nats, pg, WORKERS).start()
        workers.append(fresh)
        launcher.wait_for_hosts(nats.url("gateway"), {f"host{WORKERS}"}, workers)
        for i in range(WORKERS):
            bus.run(membership.drain(bus, f"host{i}"))
        _wait_drained(bus, [f"host{i}" for i in range(WORKERS)])
        # The new host's one-time costs (its first sandbox, imports) come with its first
        # call, a no-op's shipped template: timed apart from the two compared.
        calls = [("host_first", "noop", functions(data)["noop"][2]),
                 ("fetched", "fetched", event), ("built", "built", event)]
        out = {}
        for label, name, payload in calls:
            t0 = time.perf_counter()
            record = client.invoke(name, payload)
            out[label] = {"ms": round((time.perf_counter() - t0) * 1e3, 1),
                          "host": record["host"], "status": record["status"]}
        return out
    finally:
        bus.close()


def _wait_shipped(bus: Bus, name: str, timeout: float = 120.0):
    """(version key, its template manifest) once the builder has shipped it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for host in bus.run(membership.hosts(bus)):
            for key in host["templates"]:
                shipped = bus.run(templates._manifest(bus, key))
                if key.split("/")[1] == name and shipped is not None:
                    return key, shipped
        time.sleep(0.1)
    raise TimeoutError(f"the template of {name} was not shipped within {timeout:g} s")


def _wait_drained(bus: Bus, names: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hosts = {h["host"]: h for h in bus.run(membership.hosts(bus))}
        if all(n in hosts and hosts[n]["draining"] and not hosts[n]["fetching"]
               for n in names):
            return
        time.sleep(0.1)
    raise TimeoutError(f"hosts {names} did not drain within {timeout:g} s")


def format_report(result: dict) -> str:
    lines = [f"{'setup':<12} {'function':<6} {'per s':>7} {'median ms':>10} "
             f"{'serial median':>14}"]
    for label, by_function in result["setups"].items():
        if label == "first_call":
            continue
        for name, m in by_function.items():
            lines.append(f"{label:<12} {name:<6} {m['load']['per_second']:>7} "
                         f"{m['load']['ms']['median']:>10} {m['serial_ms']['median']:>14}")
    rtt = result["nats_round_trip_ms"]
    lines.append(f"NATS request/reply round trip: median {rtt['median']} ms, "
                 f"p95 {rtt['p95']} ms")
    dispatch = result["dispatch"]
    lines.append(f"serial no-op, call by call: single host median "
                 f"{dispatch['single_ms']['median']} ms, gateway + 1 worker "
                 f"{dispatch['cluster_ms']['median']} ms")
    lines.append(f"dispatch overhead at the median (1 worker against the single host): "
                 f"{result['dispatch_overhead_ms']} ms = "
                 f"{result['dispatch_overhead_round_trips']} round trips")
    for how, m in result["setups"]["first_call"].items():
        what = ("a new host's first call (a no-op, fetched)" if how == "host_first" else
                f"first call on a host without the template, {how}")
        lines.append(f"{what}: {m['ms']} ms (on {m['host']}, {m['status']})")
    return "\n".join(lines)
