"""Several hosts for real: nats-server with JetStream and PostgreSQL on a bridge, three
`usetl worker`s each in its own network namespace and state directory, `usetl gateway`s
in front, one ETL function posting to an HTTP server on the bridge (so each run to
completion is counted once, by the server)."""

import base64
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
from nats.errors import TimeoutError as NatsTimeout

from conftest import LocalHttpServer
from usetl.api.client import ApiError, Client
from usetl.cluster import launcher, membership, templates
from usetl.cluster.bus import STREAM, Bus
from usetl.cluster.config import ClusterConfig
from usetl.cluster.netns import HostNetwork
from usetl.cluster.servers import TemporaryNats, TemporaryPostgres
from usetl.cluster.templates import TemplateManifest
from usetl.errors import UsetlError
from usetl.platform.registry import Registry
from usetl.platform.secrets import KEY_ENV as SECRET_KEY_ENV
from waiting import wait_until

pytestmark = pytest.mark.kvm
WORKERS = ["w0", "w1", "w2"]
FUNCTION = '''
import hashlib
import time
from usetl import etl

def handler(event, context):
    event = event or {}
    if "gate" in event:
        etl.get(event["gate"])
    if "write" in event:  # a pipeline's first stage: MiB for the next
        data = bytes(range(256)) * (event["write"] << 12)
        with etl.open("blob.bin", "wb") as f:
            f.write(data)
        return {"sha": hashlib.sha256(data).hexdigest()}
    if "sha" in event:  # its second stage: the file handed on
        blob = etl.stat("blob.bin")
        return {"same": hashlib.sha256(blob.view()).hexdigest() == event["sha"],
                "size": blob.size}
    time.sleep(event.get("sleep", 0))
    if "sink" in event:
        etl.post(event["sink"], context.request_id)
    return {"n": event.get("n")}
'''
# Fails (a 404) until the test puts the file there; returns its secret's length.
RETRIED = '''
from usetl import etl

def handler(event, context):
    etl.get(event["source"])
    return {"secret_chars": len(context.secrets["token"])}
'''


@dataclass
class Cluster:
    root: Path
    net: HostNetwork
    nats: TemporaryNats
    pg: TemporaryPostgres
    gateway: launcher.GatewayProcess
    workers: dict[str, launcher.ClusterProcess]
    http: LocalHttpServer
    client: Client
    bus: Bus

    def hosts(self) -> dict[str, dict]:
        return {h["host"]: h for h in self.bus.run(membership.hosts(self.bus))}

    def finished(self, ids: list[str]) -> list[dict] | None:
        records = [self.client.invocation(i) for i in ids]
        done = all(r["status"] in ("succeeded", "failed", "interrupted") for r in records)
        return records if done else None

    def deploy(self, name: str, code: Path, client: Client | None = None) -> str:
        """Deploy; returns the version's key once its builder has shipped the template."""
        (client or self.client).deploy(name, code, allow=[self.http.base + "/"], timeout_s=20)
        key = wait_until(lambda: next((k for h in self.hosts().values() for k in h["templates"]
                                       if k.split("/")[1] == name), None), f"{name}'s builder")
        wait_until(lambda: self.shipped(key), f"the template of {key} to be shipped")
        return key

    def shipped(self, key: str) -> TemplateManifest | None:
        return self.bus.run(templates._manifest(self.bus, key))

    def origins(self, key: str) -> list[str]:
        return sorted(h["templates"].get(key, "-") for h in self.hosts().values())

    def wait_for_origins(self, key: str, expected: list[str]) -> None:
        """Until the heartbeats say how each host got the template (they lag a beat)."""
        wait_until(lambda: self.origins(key) == expected,
                   f"the hosts to report {key}'s templates as {expected}", 30)

    def load(self, name: str, count: int) -> list[dict]:
        """`count` async invocations at once (a backlog: cold hosts pull too), all finished."""
        ids = [self.client.invoke_async(name, {"n": n, "sleep": 0.3}) for n in range(count)]
        return wait_until(lambda: self.finished(ids), f"{count} invocations of {name}")

    def posts(self) -> Counter:
        return Counter(body.decode() for path, _, body in self.http.posts if path == "/done")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    code = root / "etl_fn.py"
    code.write_text(FUNCTION)
    (root / "retried.py").write_text(RETRIED)
    # Secrets are sealed by a gateway and opened by workers: one key for the cluster.
    os.environ[SECRET_KEY_ENV] = base64.urlsafe_b64encode(os.urandom(32)).decode()
    with HostNetwork(len(WORKERS)) as net, TemporaryNats(host=net.gateway_ip) as nats, \
            TemporaryPostgres(host=net.gateway_ip) as pg:
        Registry(pg.url()).close()  # the schema, as its owner: workers may only use it
        workers = {name: launcher.worker(root / name, name, nats.url("worker"),
                                         pg.url("usetl_worker"), netns=net.namespaces[i]).start()
                   for i, name in enumerate(WORKERS)}
        gateway = launcher.gateway(root / "gw", nats.url("gateway"), pg.url()).start()
        http = LocalHttpServer(net.gateway_ip)
        client = Client(gateway.url, gateway.admin_token, timeout=60)
        bus = Bus(ClusterConfig(nats.url("gateway"), ""), "test-cluster")
        try:
            launcher.wait_for_hosts(nats.url("gateway"), set(WORKERS), list(workers.values()))
            cluster = Cluster(root, net, nats, pg, gateway, workers, http, client, bus)
            cluster.deploy("etl", code)
            yield cluster
        finally:
            bus.close()
            client.close()
            for process in [*workers.values(), gateway]:
                process.stop()
            http.close()
            os.environ.pop(SECRET_KEY_ENV)


def drained(cluster: Cluster, names: list[str]) -> bool:
    """Each host draining, with no pull request left that could still take a message."""
    hosts = cluster.hosts()
    return all(n in hosts and hosts[n]["draining"] and not hosts[n]["fetching"] for n in names)


def test_invocations_fan_out_over_three_workers(cluster):
    ids = [cluster.client.invoke_async("etl", {"n": i, "sleep": 0.3, "sink": cluster.http.base
                                               + "/done"}) for i in range(24)]
    records = wait_until(lambda: cluster.finished(ids), "24 async invocations")
    assert [r["status"] for r in records] == ["succeeded"] * 24
    assert [r["result"]["n"] for r in records] == list(range(24))
    assert {r["host"] for r in records} == set(WORKERS)
    # Each worker measured where the time went, its rollback included once it was done.
    assert all(r["phases"]["guest_ms"] > 0 for r in records)
    wait_until(lambda: all("rollback_ms" in r["phases"] for r in cluster.finished(ids)),
               "the rollbacks' times in the records")
    posts = cluster.posts()
    assert all(posts[i] == 1 for i in ids)  # each ran to completion once
    assert cluster.client.invoke("etl", {"n": 5})["result"] == {"n": 5}
    # One host built the template at the deploy; the others restored its snapshot.
    [key] = {k for h in cluster.hosts().values() for k in h["templates"]}
    cluster.wait_for_origins(key, ["built", "fetched", "fetched"])
    listed = subprocess.run([sys.executable, "-m", "usetl", "host", "ls", "--json", "--nats",
                             cluster.nats.url("gateway")], capture_output=True, text=True,
                            check=True, env={**os.environ, "PYTHONPATH": str(launcher.SRC)})
    assert sorted(h["host"] for h in json.loads(listed.stdout)) == WORKERS


def test_an_async_run_that_fails_is_retried_with_its_secret_on_a_worker(cluster):
    cluster.client.set_secret("token", "s3cret-value")
    cluster.client.deploy("retried", cluster.root / "retried.py", allow=[cluster.http.base + "/"],
                          retries=1, retry_backoff_s=0.2, secrets=["token"])
    invocation_id = cluster.client.invoke_async("retried",
                                                {"source": cluster.http.base + "/later.csv"})
    wait_until(lambda: any(p == "/later.csv" for _, p, _ in cluster.http.requests),
               "the first attempt")
    cluster.http.add("/later.csv", b"now it is there")
    [record] = wait_until(lambda: cluster.finished([invocation_id]), "the retried invocation")
    assert record["status"] == "succeeded" and record["result"] == {"secret_chars": 12}
    assert [a["error"] and a["error"]["type"] for a in record["attempts"]] == ["EtlError", None]


def drain(cluster: Cluster, names: list[str], undo: bool = False) -> None:
    for name in names:
        cluster.bus.run(membership.drain(cluster.bus, name, undo))
    if undo:
        wait_until(lambda: (hosts := cluster.hosts()) and all(
            n in hosts and not hosts[n]["draining"] for n in names), f"{names} to take work again")
    else:
        wait_until(lambda: drained(cluster, names), f"{names} to take nothing new")


def stage_hosts(cluster: Cluster, record: dict) -> list[str]:
    """Where each stage ran (its invocation's record is written just after its answer)."""
    def host(invocation_id: str) -> str | None:
        try:
            return cluster.client.invocation(invocation_id)["host"]
        except ApiError as e:
            assert e.status == 404
            return None

    return [wait_until(lambda s=s: host(s["invocations"][0]), "the stage's record")
            for s in record["stages"]]


def test_a_pipeline_hands_files_on_within_a_host_and_between_hosts(cluster):
    cluster.client.deploy_pipeline("two", ["etl", "etl"])
    drain(cluster, ["w1", "w2"])  # both stages on w0: its memory file mapped, no copy
    record = cluster.client.run_pipeline("two", {"write": 1})
    assert record["status"] == "succeeded", record["error"]
    assert record["result"] == {"same": True, "size": 1 << 20}
    assert stage_hosts(cluster, record) == ["w0", "w0"]
    assert [s["copied_bytes"] for s in record["stages"]] == [0, 0]
    # The first stage held at the gate on w0, which then takes nothing new: the second
    # runs on another host, fetching the files from w0 through the object store.
    gate = cluster.http.gate("/gate-stage")
    run_id = cluster.client.run_pipeline("two", {"gate": gate.url, "write": 1}, wait=False)["id"]
    gate.wait_for(1)
    drain(cluster, ["w0"])
    drain(cluster, ["w1", "w2"], undo=True)
    gate.open()
    record = wait_until(lambda: (r := cluster.client.pipeline_run(run_id))["status"] not in (
        "queued", "running") and r, "the pipeline run")
    assert record["status"] == "succeeded", record["error"]
    assert record["result"] == {"same": True, "size": 1 << 20}
    first, second = stage_hosts(cluster, record)
    assert first == "w0" and second in ("w1", "w2")
    assert record["stages"][1]["copied_bytes"] >= 1 << 20  # the fetched copy, counted
    drain(cluster, ["w0"], undo=True)


def test_a_corrupted_template_is_refused_and_rebuilt(cluster):
    key = cluster.deploy("corrupt", cluster.root / "etl_fn.py")
    shipped = cluster.shipped(key)
    name = shipped.snapshot.replace(":", "_")
    cluster.bus.run(cluster.bus.objects.put(name, b"not the snapshot that was shipped"))
    records = cluster.load("corrupt", 18)
    assert {r["status"] for r in records} == {"succeeded"}
    assert {r["host"] for r in records} == set(WORKERS)
    cluster.wait_for_origins(key, ["built", "rebuilt", "rebuilt"])


def test_a_template_from_an_incompatible_host_is_built_here(cluster):
    key = cluster.deploy("elsewhere", cluster.root / "etl_fn.py")
    other = TemplateManifest(compat="0" * 32, snapshot=cluster.shipped(key).snapshot,
                             host="a host with other CPU features")
    cluster.bus.run(cluster.bus.templates.put(key, msgspec.json.encode(other)))
    records = cluster.load("elsewhere", 18)
    assert {r["host"] for r in records} == set(WORKERS)
    cluster.wait_for_origins(key, ["built", "built", "built"])


def test_a_worker_killed_mid_invocation(cluster):
    victim, others = "w0", ["w1", "w2"]
    for name in others:  # only the victim pulls, so both invocations below run there
        cluster.bus.run(membership.drain(cluster.bus, name))
    wait_until(lambda: drained(cluster, others), "the other hosts to take nothing new")
    gate = cluster.http.gate("/gate-kill")
    event = {"gate": gate.url, "sink": cluster.http.base + "/done"}
    async_id = cluster.client.invoke_async("etl", event)
    sync_outcome: list = []

    def call_sync() -> None:
        try:
            sync_outcome.append(cluster.client.invoke("etl", event))
        except ApiError as e:
            sync_outcome.append(e)

    caller = threading.Thread(target=call_sync)
    caller.start()
    gate.wait_for(2)  # both are running on the victim
    for name in others:
        cluster.bus.run(membership.drain(cluster.bus, name, undo=True))
    cluster.workers[victim].kill_host()
    gate.open()

    [record] = wait_until(lambda: cluster.finished([async_id]), "the redelivered invocation")
    assert record["status"] == "succeeded" and record["host"] in others
    caller.join()
    [sync] = sync_outcome
    assert isinstance(sync, ApiError) and sync.code == "worker_died" and sync.status == 502
    assert cluster.posts()[async_id] == 1  # the killed run never finished; the second did
    # Its heartbeat stopped: after the TTL it is no longer a member.
    wait_until(lambda: set(cluster.hosts()) == set(others), "the killed host to leave host ls",
               60)


def test_a_second_gateway_serves_the_same_functions_and_loses_no_accepted_call(cluster):
    second = launcher.gateway(cluster.root / "gw2", cluster.nats.url("gateway"),
                              cluster.pg.url(), "127.0.0.1", None, None, "--max-runs", "1").start()
    client = Client(second.url, cluster.gateway.admin_token, timeout=60)
    try:
        assert client.invoke("etl", {"n": 1})["result"] == {"n": 1}
        # Deployed here, seen by the first gateway; its invocations run at most once.
        cluster.deploy("fragile", cluster.root / "etl_fn.py", client)
        assert [f["name"] for f in cluster.client.functions()] == [
            "corrupt", "elsewhere", "etl", "fragile", "retried"]
        accepted: list[str] = []

        def load() -> None:
            for n in range(100):
                try:
                    accepted.append(client.invoke_async("etl", {"n": n}))
                except UsetlError:  # the gateway is gone (ApiError is one too)
                    return

        loader = threading.Thread(target=load)
        loader.start()
        wait_until(lambda: len(accepted) >= 10, "accepted invocations")
        second.stop(signal.SIGKILL)  # mid-load
        loader.join()
    finally:
        client.close()
        second.stop()
    records = wait_until(lambda: cluster.finished(accepted), "every accepted invocation")
    assert [r["status"] for r in records] == ["succeeded"] * len(accepted)


def test_a_nats_restart_is_survived_by_gateways_and_workers(cluster):
    cluster.nats.stop(keep_store=True)
    # Down until a request times out: the workers' own requests (a cold puller's poll,
    # a heartbeat) fail too, and every loop of theirs must outlive that.
    with pytest.raises(NatsTimeout):
        cluster.bus.run(cluster.bus.js.stream_info(STREAM))
    cluster.nats.start()
    wait_until(lambda: set(cluster.hosts()) == {"w1", "w2"}, "both hosts' heartbeats")
    assert cluster.client.invoke("etl", {"n": 7})["result"] == {"n": 7}
    invocation_id = cluster.client.invoke_async("etl", {"n": 8})
    [record] = wait_until(lambda: cluster.finished([invocation_id]), "an async invocation")
    assert record["result"] == {"n": 8}


def test_an_invocation_whose_runs_all_die_is_dead_lettered(cluster):
    victim, survivor = "w1", "w2"  # w0 was killed above
    cluster.bus.run(membership.drain(cluster.bus, survivor))
    wait_until(lambda: drained(cluster, [survivor]), "the survivor to take nothing new")
    gate = cluster.http.gate("/gate-dead")
    invocation_id = cluster.client.invoke_async(
        "fragile", {"gate": gate.url, "sink": cluster.http.base + "/done"})
    gate.wait_for(1)
    cluster.bus.run(membership.drain(cluster.bus, survivor, undo=True))
    cluster.workers[victim].kill_host()  # its one run (fragile's --max-runs 1) dies
    gate.open()
    [record] = wait_until(lambda: cluster.finished([invocation_id]), "the dead letter")
    assert record["status"] == "failed" and record["error"]["type"] == "DeadLetter"
    assert cluster.posts()[invocation_id] == 0  # it never ran to completion
    registry = Registry(cluster.pg.url())
    [admin] = [t for t in registry.tenants() if t.admin]
    registry.close()
    dead = cluster.bus.run(cluster.bus.js.get_last_msg("USETL_DEAD",
                                                       f"usetl.dead.{admin.id}.fragile"))
    assert msgspec.json.decode(dead.data)["id"] == invocation_id

