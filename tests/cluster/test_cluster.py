"""Several hosts for real: nats-server with JetStream and PostgreSQL on a bridge, three
`usetl worker`s each in its own network namespace and state directory, `usetl gateway`s
in front, one ETL function posting to an HTTP server on the bridge (so each run to
completion is counted once, by the server), and a callback receiver on 127.0.0.1.

The heartbeat TTL and the ack wait are short here (the defaults are 5 s and 4 s): what
waits on them (a killed host leaving, a redelivery) comes sooner, and nothing else. A
worker's pull requests wait longer than the default 1 s: no call may wait for one to
expire."""

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
from nats.js.errors import NotFoundError

from http_servers import LocalHttpServer, Receiver
from usetl.api.client import ApiError, Client
from usetl.cluster import launcher, membership, templates
from usetl.cluster.bus import STREAM, Bus, consumer_name
from usetl.cluster.config import ClusterConfig
from usetl.cluster.netns import HostNetwork
from usetl.cluster.servers import TemporaryNats, TemporaryPostgres
from usetl.cluster.templates import TemplateManifest
from usetl.errors import UsetlError
from usetl.platform.learning import LEARN_AFTER
from usetl.platform.registry import Registry
from usetl.platform.secrets import KEY_ENV as SECRET_KEY_ENV
from waiting import wait_until

pytestmark = pytest.mark.kvm
WORKERS = ["w0", "w1", "w2"]
HEARTBEAT_TTL = ("--heartbeat-ttl", "3")
ACK_WAIT = ("--ack-wait", "2")
PULL_WAIT_S = 5.0
CALLBACK_BACKOFF_S = 1.0  # before a callback's second attempt (2 s before the third)
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
    if "source" in event:  # fails (a 404) until the test puts the file there
        etl.get(event["source"])
        return {"secret_chars": len(context.secrets["token"])}
    time.sleep(event.get("sleep", 0))
    if "sink" in event:
        etl.post(event["sink"], context.request_id)
    return {"n": event.get("n")}
'''

# Imports a module lazily on every call: a host that serves it LEARN_AFTER times learns
# the next template generation, which has it imported already.
LEARNS = '''
import sys

def handler(event, context):
    before = "fractions" in sys.modules
    import fractions
    return {"imported_before": before}
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
    receiver: Receiver
    client: Client
    bus: Bus
    registry: Registry
    admin_id: int

    def hosts(self) -> dict[str, dict]:
        return {h["host"]: h for h in self.bus.run(membership.hosts(self.bus))}

    def finished(self, ids: list[str]) -> list[dict] | None:
        records = [self.client.invocation(i) for i in ids]
        done = all(r["status"] in ("succeeded", "failed", "interrupted") for r in records)
        return records if done else None

    def deploy(self, name: str, code: Path, client: Client | None = None, **options) -> str:
        """Deploy; returns the version's key once its builder has shipped the template."""
        (client or self.client).deploy(name, code, allow=[self.http.base + "/"], timeout_s=20,
                                       **options)
        key = self.registry.version(self.admin_id, name).key
        wait_until(lambda: self.shipped(key), f"the template of {key} to be shipped")
        return key

    def builder(self, name: str) -> str:
        """The host that built the live version's template at its deploy (and shipped it)."""
        return self.shipped(self.registry.version(self.admin_id, name).key).host

    def shipped(self, key: str, generation: int = 1) -> TemplateManifest | None:
        return self.bus.run(templates._manifest(self.bus, key, generation))

    def origins(self, key: str) -> list[str]:
        return sorted(h["templates"].get(key, "-") for h in self.hosts().values())

    def wait_for_origins(self, key: str, expected: list[str]) -> None:
        """Until the heartbeats say how each host got the template (they lag a beat)."""
        wait_until(lambda: self.origins(key) == expected,
                   f"the hosts to report {key}'s templates as {expected}", 30)

    def posts(self) -> Counter:
        return Counter(body.decode() for path, _, body in self.http.posts if path == "/done")


def start_gateway(state: Path, nats: TemporaryNats, pg: TemporaryPostgres, receiver: Receiver,
                  port: int | None = None, *options: str) -> launcher.GatewayProcess:
    """A gateway that sends callbacks to the receiver."""
    return launcher.gateway(state, nats.url("gateway"), pg.url(), "127.0.0.1", port, None,
                            *HEARTBEAT_TTL, *ACK_WAIT, "--callback-allow", receiver.base + "/",
                            "--callback-backoff", str(CALLBACK_BACKOFF_S), *options).start()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    code = root / "etl_fn.py"
    code.write_text(FUNCTION)
    (root / "learns.py").write_text(LEARNS)
    # Secrets are sealed by a gateway and opened by workers: one key for the cluster.
    os.environ[SECRET_KEY_ENV] = base64.urlsafe_b64encode(os.urandom(32)).decode()
    with HostNetwork(len(WORKERS)) as net, TemporaryNats(host=net.gateway_ip) as nats, \
            TemporaryPostgres(host=net.gateway_ip) as pg:
        registry = Registry(pg.url())  # the schema, as its owner: workers may only use it
        workers = {name: launcher.worker(root / name, name, nats.url("worker"),
                                         pg.url("usetl_worker"), netns=net.namespaces[i],
                                         options=(*HEARTBEAT_TTL, "--pull-wait",
                                                  str(PULL_WAIT_S))).start()
                   for i, name in enumerate(WORKERS)}
        receiver = Receiver()
        gateway = start_gateway(root / "gw", nats, pg, receiver)
        http = LocalHttpServer(net.gateway_ip)
        client = Client(gateway.url, gateway.admin_token, timeout=60)
        bus = Bus(ClusterConfig(nats.url("gateway"), ""), "test-cluster")
        try:
            launcher.wait_for_hosts(nats.url("gateway"), set(WORKERS), list(workers.values()))
            [admin] = [t for t in registry.tenants() if t.admin]
            cluster = Cluster(root, net, nats, pg, gateway, workers, http, receiver, client,
                              bus, registry, admin.id)
            # One function for most tests; its failed async runs are retried once.
            client.set_secret("token", "s3cret-value")
            cluster.deploy("etl", code, retries=1, retry_backoff_s=0.2, secrets=["token"])
            yield cluster
        finally:
            bus.close()
            client.close()
            registry.close()
            launcher.stop_all([*workers.values(), gateway])
            http.close()
            receiver.close()
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


def test_warm_sync_calls_without_secrets_are_answered_and_recorded(cluster):
    """A secret-free function's warm sync calls are awaited on the workers' loops: each
    answered (a failure too), and its record written with its host and rollback."""
    cluster.deploy("plain", cluster.root / "etl_fn.py")
    answers = [cluster.client.invoke("plain", {"n": i}) for i in range(8)]
    assert [a["result"] for a in answers] == [{"n": i} for i in range(8)]
    failed = cluster.client.invoke("plain", {"source": cluster.http.base + "/missing.csv"})
    assert failed["status"] == "failed" and failed["error"]["type"] == "EtlError"
    answers.append(failed)
    assert all(a["host"] in WORKERS for a in answers)

    def recorded() -> list[dict] | None:
        try:
            records = [cluster.client.invocation(a["id"]) for a in answers]
        except ApiError as e:
            assert e.status == 404  # written just after its answer
            return None
        return records if all("rollback_ms" in r["phases"] for r in records) else None

    records = wait_until(recorded, "the sync calls' records with their rollbacks")
    assert [(r["status"], r["host"]) for r in records] == [
        (a["status"], a["host"]) for a in answers]


def test_a_host_holding_more_functions_than_slots_pulls_each_call_at_once(cluster):
    """w0 alone serves, with 2 slots and at least 4 warm functions: its pull requests may
    all wait on other functions, so a call of another is pulled on its ring (beyond the
    slots), not once a request expires or the functions' turns come round."""
    names = ["many-a", "many-b", "many-c"]
    drain(cluster, ["w1", "w2"])
    try:
        for name in names:
            cluster.deploy(name, cluster.root / "etl_fn.py")
            cluster.client.invoke(name, {})  # w0 holds its template from now on
        keys = {cluster.registry.version(cluster.admin_id, n).key for n in names}
        wait_until(lambda: keys <= set(cluster.hosts()["w0"]["warm"]), "w0 to hold them warm")
        # Well under one pull request's wait: a call that waited for one would time out.
        with Client(cluster.gateway.url, cluster.gateway.admin_token,
                    timeout=PULL_WAIT_S * 0.8) as quick:
            answers = [quick.invoke(name, {"n": i})
                       for i in range(3) for name in [*names, "etl"]]
    finally:
        drain(cluster, ["w1", "w2"], undo=True)
    assert [a["result"] for a in answers] == [{"n": i} for i in range(3) for _ in range(4)]
    assert {a["host"] for a in answers} == {"w0"}


def test_an_async_run_that_fails_is_retried_with_its_secret_on_a_worker(cluster):
    invocation_id = cluster.client.invoke_async("etl", {"source": cluster.http.base + "/later.csv"})
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


def serve_only(cluster: Cluster, host: str) -> None:
    """Let one host take work, and no other (every worker named, not those `host ls` shows
    now: a host whose beat is late is missing from it for a moment, and would stay open)."""
    drain(cluster, [n for n in WORKERS if n != host])
    drain(cluster, [host], undo=True)


def test_templates_between_hosts_other_keys_learned_generations_and_corrupt_objects(cluster):
    """One function's templates on three hosts: one with another compatibility key is built
    where it is needed; a learned generation replaces the old one on a host serving it
    (fetched); a corrupted object is refused, and the generation the registry names built."""
    key = cluster.deploy("shipped", cluster.root / "learns.py")
    builder = cluster.builder("shipped")
    other, fresh = [n for n in WORKERS if n != builder]

    def served_on(host: str) -> dict:
        record = cluster.client.invoke("shipped")
        assert record["host"] == host
        return record["result"]

    elsewhere = TemplateManifest(compat="0" * 32, snapshot=cluster.shipped(key).snapshot,
                                 host="a host with other CPU features")
    cluster.bus.run(cluster.bus.templates.put(templates.manifest_key(key, 1),
                                              msgspec.json.encode(elsewhere)))
    serve_only(cluster, other)
    assert served_on(other) == {"imported_before": False}
    serve_only(cluster, builder)
    for _ in range(LEARN_AFTER):
        assert served_on(builder) == {"imported_before": False}
    wait_until(lambda: cluster.client.function("shipped")["generation"] == 2,
               "the learned generation in the registry")
    shipped = cluster.shipped(key, 2)
    assert shipped.host == builder and "fractions" in shipped.learned
    # The host serving generation 1 catches up on its own, without learning it again.
    wait_until(lambda: cluster.hosts().get(other, {}).get("generations", {}).get(key) == 2,
               f"{other} to serve generation 2")
    cluster.bus.run(cluster.bus.objects.put(shipped.snapshot.replace(":", "_"),
                                            b"not the snapshot that was shipped"))
    serve_only(cluster, fresh)  # no template: generation 2 at once, refused, built here
    assert served_on(fresh) == {"imported_before": True}
    cluster.wait_for_origins(key, ["built", "fetched", "rebuilt"])
    wait_until(lambda: [cluster.hosts().get(n, {}).get("generations", {}).get(key)
                        for n in WORKERS] == [2, 2, 2], "every host to serve generation 2")
    serve_only(cluster, other)
    assert served_on(other) == {"imported_before": True}
    drain(cluster, WORKERS, undo=True)


def test_a_stopped_worker_answers_and_acks_what_it_runs(cluster):
    """SIGTERM: the calls a worker runs (one awaited on its loop, one on a thread) finish
    there, answered and acked, after its threads are done: none runs again elsewhere."""
    victim, others = "w0", ["w1", "w2"]
    for name in others:
        cluster.bus.run(membership.drain(cluster.bus, name))
    wait_until(lambda: drained(cluster, others), "the other hosts to take nothing new")
    # Its warm instance is left to serve the next call on the loop.
    assert cluster.client.invoke("plain", {"n": 0})["host"] == victim
    on_thread, on_loop = cluster.http.gate("/gate-stop-a"), cluster.http.gate("/gate-stop-s")
    sink = cluster.http.base + "/done"
    async_id = cluster.client.invoke_async("etl", {"gate": on_thread.url, "sink": sink})
    answers: list = []
    caller = threading.Thread(target=lambda: answers.append(
        cluster.client.invoke("plain", {"gate": on_loop.url, "sink": sink})))
    caller.start()
    on_thread.wait_for(1)
    on_loop.wait_for(1)
    for name in others:
        cluster.bus.run(membership.drain(cluster.bus, name, undo=True))
    worker = cluster.workers[victim]
    stopping = threading.Thread(target=worker.stop)
    stopping.start()
    wait_until(lambda: "stopping: finishing 2 invocations" in worker.log.read_text(),
               "the stopped worker to wind down")
    on_thread.open()
    [record] = wait_until(lambda: cluster.finished([async_id]), "the async invocation")
    on_loop.open()
    caller.join()
    stopping.join()
    [answer] = answers
    assert (record["status"], record["host"]) == ("succeeded", victim)
    assert (answer["status"], answer["host"]) == ("succeeded", victim)
    for durable in ("plain", "etl"):  # both acked: nothing left to redeliver
        info = cluster.bus.run(cluster.bus.js.consumer_info(
            STREAM, consumer_name(cluster.admin_id, durable)))
        assert (info.num_pending, info.num_ack_pending) == (0, 0)
    assert cluster.posts()[async_id] == cluster.posts()[answer["id"]] == 1
    worker.start()
    launcher.wait_for_hosts(cluster.nats.url("gateway"), set(WORKERS),
                            list(cluster.workers.values()))


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
    second = start_gateway(cluster.root / "gw2", cluster.nats, cluster.pg, cluster.receiver,
                           None, "--max-runs", "1")
    client = Client(second.url, cluster.gateway.admin_token, timeout=60)
    try:
        assert client.invoke("etl", {"n": 1})["result"] == {"n": 1}
        # Deployed here, seen by the first gateway; its invocations run at most once.
        cluster.deploy("fragile", cluster.root / "etl_fn.py", client)
        listed = [f["name"] for f in cluster.client.functions()]
        assert "fragile" in listed and listed == [f["name"] for f in client.functions()]
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


def test_callbacks_outlive_their_gateways_and_each_attempt_is_made_once(cluster):
    """Two gateways pull due callbacks; the receiver refuses the first two attempts, and
    every gateway is gone while the second is due: it is made when due by a new one."""
    second = start_gateway(cluster.root / "gw3", cluster.nats, cluster.pg, cluster.receiver)
    hook = cluster.receiver.base + "/hooks/done"
    cluster.receiver.failures["/hooks/done"] = 2
    try:
        invocation_id = cluster.client.invoke_async("etl", {"n": 3}, callback_url=hook)
        wait_until(lambda: cluster.client.invocation(invocation_id)["callback"]["attempts"],
                   "the first attempt's record")  # killed before it, it would be made again
    finally:
        second.stop(signal.SIGKILL)
    cluster.gateway.stop(signal.SIGKILL)
    cluster.gateway.start()
    record = wait_until(lambda: (r := cluster.client.invocation(invocation_id))["callback"][
        "state"] != "pending" and r, "the callback to be delivered", 60)
    attempts = record["callback"]["attempts"]
    assert record["callback"]["state"] == "delivered"
    assert [a["status"] for a in attempts] == [503, 503, 200]
    assert attempts[1]["at"] - attempts[0]["at"] >= CALLBACK_BACKOFF_S  # the back-off held
    posts = cluster.receiver.posts_to("/hooks/done")
    assert [status for status, _ in posts] == [503, 503, 200]  # each attempt once
    delivered = json.loads(posts[-1][1])
    assert delivered["id"] == invocation_id and delivered["result"] == {"n": 3}
    with pytest.raises(ApiError) as refused:  # outside the gateways' allow-list
        cluster.client.invoke_async("etl", {}, callback_url="http://127.0.0.2:9/hook")
    assert (refused.value.status, refused.value.code) == (400, "callback_refused")


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
    # w0 was killed above; the run dies on fragile's builder (no template to fetch first).
    victim = cluster.builder("fragile")
    [survivor] = {"w1", "w2"} - {victim}
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
    # The worker publishes the dead letter after it wrote the record.
    dead = wait_until(lambda: last_dead_letter(cluster, "fragile"), "the dead-letter message")
    assert msgspec.json.decode(dead.data)["id"] == invocation_id


def last_dead_letter(cluster, function: str):
    try:
        return cluster.bus.run(cluster.bus.js.get_last_msg(
            "USETL_DEAD", f"usetl.dead.{cluster.admin_id}.{function}"))
    except NotFoundError:
        return None

