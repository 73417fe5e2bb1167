"""End to end through the HTTP API of a real `usetl serve` (process backend) on 127.0.0.1."""

from __future__ import annotations

import base64
import signal
import textwrap
import threading

import httpx
import pytest
from sandbox_files import write_wheel

from usetl.api.client import ApiError, Client
from usetl.api.launcher import ServerProcess as Server
from waiting import wait_until

HELLO = """
import os
def handler(event, context):
    print("hello", event["name"])
    return {"greeting": "hi " + event["name"], "function": context.function,
            "left": context.remaining_ms() > 0,
            "env": os.environ.get("GREETING")}
"""
RAISES = """
def handler(event, context):
    raise ValueError("no good: " + str(event))
"""
SPINS = """
def handler(event, context):
    while True:
        pass
"""
SLEEPS = """
import time
def handler(event, context):
    time.sleep(event["sleep"])
    return event["n"]
"""
# Waits at the test's gate, if the event names one: it is running until the test opens it.
GATED = """
from usetl import etl
def handler(event, context):
    if event.get("gate"):
        etl.get(event["gate"])
    return event["n"]
"""
SQUARE = """
def handler(event, context):
    return {"n": event["n"], "square": event["n"] ** 2}
"""


def files(source: str, name: str = "fn.py") -> dict:
    return {name: base64.b64encode(textwrap.dedent(source).encode()).decode()}


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    """Where the requirements come from: wheels the tests write, never the package index."""
    return tmp_path_factory.mktemp("wheels")


@pytest.fixture(scope="module")
def server(tmp_path_factory, wheelhouse):
    root = tmp_path_factory.mktemp("usetl")
    s = Server(root / "state", root / "modules", "process", "--wheelhouse", str(wheelhouse))
    yield s.start()
    s.stop()


@pytest.fixture(scope="module")
def admin(server):
    c = Client(server.url, server.admin_token)
    yield c
    c.close()


def tenant(server, admin, name) -> Client:
    return Client(server.url, admin.add_tenant(name)["token"])


@pytest.fixture(scope="module")
def alice(server, admin):
    return tenant(server, admin, "alice")


def deploy(client: Client, name: str, source: str, **options) -> dict:
    body = {"handler": "fn.py:handler", "files": files(source), **options}
    return client.request("PUT", f"/v1/functions/{name}", json=body)


def test_deploy_invoke_list_delete(alice):
    v = deploy(alice, "hello", HELLO, env={"GREETING": "hey"})
    assert v["version"] == 1 and v["env"] == ["GREETING"]
    record = alice.invoke("hello", {"name": "bob"})
    assert record["status"] == "succeeded"
    assert record["result"] == {"greeting": "hi bob", "function": "hello", "env": "hey",
                                "left": True}
    assert record["stdout"] == "hello bob\n"
    assert record["metrics"]["duration_ms"] > 0 and record["metrics"]["peak_memory_bytes"] > 0
    assert [f["name"] for f in alice.functions()] == ["hello"]
    assert alice.function("hello")["versions"] == [1]
    assert alice.invocation(record["id"])["result"]["greeting"] == "hi bob"
    assert alice.delete("hello") == {"deleted": "hello", "versions": [1]}
    with pytest.raises(ApiError) as e:
        alice.invoke("hello", {"name": "bob"})
    assert (e.value.status, e.value.code) == (404, "function_not_found")
    again = deploy(alice, "hello", SQUARE)  # the name is free again, from version 1
    assert again["version"] == 1
    assert alice.invoke("hello", {"n": 5})["result"] == {"n": 5, "square": 25}


LAMBDA_STYLE = """
def lambda_handler(event, context):
    return {"id": context.aws_request_id, "name": context.function_name,
            "version": context.function_version, "arn": context.invoked_function_arn,
            "memory": "MB: " + context.memory_limit_in_mb, "group": context.log_group_name,
            "left": 0 < context.get_remaining_time_in_millis() <= 30000}
"""


def test_a_handler_written_for_lambda_is_named_and_reads_its_context_as_there(alice):
    v = deploy(alice, "lam", LAMBDA_STYLE, handler="fn.lambda_handler", timeout_s=30,
               memory_mib=192)
    assert v["handler"] == "fn.py:lambda_handler"
    record = alice.invoke("lam", {})
    tenant = record["result"]["arn"].split(":")[4]
    assert tenant.isdigit()
    assert record["result"] == {"id": record["id"], "name": "lam", "version": "1",
                                "arn": f"arn:usetl:lambda:local:{tenant}:function:lam",
                                "memory": "MB: 192", "group": "/usetl/lam", "left": True}


def test_raises_prints_times_out(alice):
    deploy(alice, "raises", RAISES)
    record = alice.invoke("raises", 7)
    assert record["status"] == "failed"
    assert record["error"]["type"] == "ValueError"
    assert record["error"]["message"] == "no good: 7"
    assert "fn.py" in record["error"]["traceback"]
    deploy(alice, "spins", SPINS, timeout_s=0.5)
    record = alice.invoke("spins", None)
    assert record["error"]["type"] == "Timeout"
    assert alice.invoke("spins", None)["error"]["type"] == "Timeout"  # a fresh instance again


def test_syntax_error_refused_with_line_and_old_version_stays(alice):
    deploy(alice, "evolving", HELLO)
    with pytest.raises(ApiError) as e:
        deploy(alice, "evolving", "def handler(event, context):\n    return )\n")
    assert (e.value.status, e.value.code) == (400, "load_failed")
    assert "line 2" in str(e.value)
    with pytest.raises(ApiError) as e:
        deploy(alice, "evolving", HELLO, requirements=["usetl-no-such-package-anywhere==1.0"])
    assert e.value.code == "requirements_failed" and "No matching distribution" in str(e.value)
    for bad in ("./local-dir", "git+https://example.com/x.git", "x @ https://example.com/x.whl",
                "--index-url=https://example.com/"):
        with pytest.raises(ApiError) as e:
            deploy(alice, "evolving", HELLO, requirements=[bad])
        assert e.value.code == "invalid_requirement"
    assert alice.function("evolving")["versions"] == [1]
    assert alice.invoke("evolving", {"name": "x"})["result"]["greeting"] == "hi x"
    v2 = deploy(alice, "evolving", HELLO.replace("hi ", "hello "))
    assert v2["version"] == 2
    assert alice.invoke("evolving", {"name": "x"})["result"]["greeting"] == "hello x"


def test_malformed_and_oversized_events_change_nothing(server, alice):
    deploy(alice, "square", SQUARE)
    before = alice.logs("square")
    r = httpx.post(f"{server.url}/v1/functions/square/invoke", content=b"{not json",
                   headers={"Authorization": f"Bearer {alice.token}"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.post(f"{server.url}/v1/functions/square/invoke", content=b"1" * (7 << 20),
                   headers={"Authorization": f"Bearer {alice.token}"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    chunks = (b" " * (1 << 20) for _ in range(90))  # no Content-Length: counted as it streams
    r = httpx.put(f"{server.url}/v1/functions/square", content=chunks,
                  headers={"Authorization": f"Bearer {alice.token}"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    r = httpx.put(f"{server.url}/v1/functions/square", content=b"[]",
                  headers={"Authorization": f"Bearer {alice.token}"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    assert alice.logs("square") == before
    assert alice.function("square")["versions"] == [1]


def test_the_invoke_route_answers_as_the_rest_of_the_api(server, alice):
    """POST .../invoke has a path of its own (api/hot_path.py): the same errors, limits,
    headers and documentation as the app's routes."""
    deploy(alice, "echo", "def handler(event, context):\n    return event\n")
    url = f"{server.url}/v1/functions/echo/invoke"
    auth = {"Authorization": f"bearer  {alice.token}"}  # the scheme in any case
    r = httpx.post(url, content=b"", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json()["status"] == "succeeded" and r.json()["result"] is None  # no body: null
    for headers in ({}, {"Authorization": "Bearer usetl_wrong"}):
        r = httpx.post(url, content=b"1", headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["code"] == "unauthenticated"
    r = httpx.post(f"{server.url}/v1/functions/nope/invoke", content=b"1", headers=auth)
    assert r.status_code == 404 and r.json()["error"]["code"] == "function_not_found"
    over = (b" " * (1 << 20) for _ in range(7))  # chunked: no Content-Length to refuse by
    r = httpx.post(url, content=over, headers=auth)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    r = httpx.get(url, headers=auth)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert list(paths["/v1/functions/{name}/invoke"]) == ["post"]
    names = list(paths)
    assert names.index("/v1/functions/{name}/invoke") + 1 == names.index(
        "/v1/functions/{name}/invocations")


def test_tenants_are_isolated(server, admin, alice):
    deploy(alice, "private", SQUARE)
    mine = alice.invoke("private", {"n": 3})
    bob = tenant(server, admin, "bob")
    for call in (lambda: bob.invoke("private", {"n": 1}),
                 lambda: bob.function("private"),
                 lambda: bob.logs("private"),
                 lambda: bob.delete("private"),
                 lambda: bob.invocation(mine["id"]),
                 lambda: bob.invoke_async("private", {"n": 1})):
        with pytest.raises(ApiError) as e:
            call()
        assert e.value.status == 404
    assert bob.functions() == []
    for headers in ({}, {"Authorization": "Bearer usetl_wrong"}, {"Authorization": "Basic x"}):
        r = httpx.delete(f"{server.url}/v1/functions/private", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    with pytest.raises(ApiError) as e:
        bob.add_tenant("mallory")
    assert e.value.status == 403
    with pytest.raises(ApiError) as e:
        bob.metrics()
    assert e.value.status == 403
    assert alice.invoke("private", {"n": 4})["result"]["square"] == 16
    assert len(alice.logs("private")) == 2
    usage = {u["function"]: u for u in alice.usage()}
    assert usage["private"]["invocations"] == 2 and usage["private"]["guest_cpu_ms"] > 0
    assert bob.usage() == []
    assert [f["name"] for f in bob.functions()] == []


def test_concurrency_limit_rejects_with_429(alice, module_http_server):
    gate = module_http_server.gate("/single")
    deploy(alice, "single", GATED, concurrency=1, queue=0, allow=[module_http_server.base])
    results = []
    t = threading.Thread(target=lambda: results.append(
        alice.invoke("single", {"gate": gate.url, "n": 1})))
    t.start()
    gate.wait_for(1)
    with pytest.raises(ApiError) as e:
        alice.invoke("single", {"n": 2})
    assert (e.value.status, e.value.code) == (429, "concurrency_limit")
    gate.open()
    t.join()
    assert results[0]["result"] == 1
    assert alice.invoke("single", {"n": 3})["result"] == 3


def test_async_invocations_beyond_the_queue_get_429(alice, module_http_server):
    gate = module_http_server.gate("/bounded")
    deploy(alice, "bounded", GATED, concurrency=1, queue=1, allow=[module_http_server.base])
    first = alice.invoke_async("bounded", {"gate": gate.url, "n": 1})
    gate.wait_for(1)
    waiting = [alice.invoke_async("bounded", {"n": n}) for n in (2, 3)]  # concurrency + queue
    with pytest.raises(ApiError) as e:
        alice.invoke_async("bounded", {"n": 4})
    assert (e.value.status, e.value.code) == (429, "queue_full")
    gate.open()
    for invocation_id, n in zip([first, *waiting], (1, 2, 3), strict=True):
        wait_until(lambda i=invocation_id: alice.invocation(i)["status"] == "succeeded",
                   f"async invocation {n} to finish")
        assert alice.invocation(invocation_id)["result"] == n


def test_stored_output_is_capped(alice):
    deploy(alice, "chatty", "def handler(event, context):\n    print('x' * (3 << 20))\n")
    record = alice.invoke("chatty", None)
    assert record["status"] == "succeeded"
    assert record["stdout"].startswith("x" * 1000) and len(record["stdout"]) < (1 << 20) + 200
    assert record["stdout"].endswith(f"[usetl: output cut at {1 << 20} bytes of {(3 << 20) + 1}]\n")


def test_logs_page_back_with_before(alice):
    deploy(alice, "paged", SQUARE)
    ids = [alice.invoke("paged", {"n": n})["id"] for n in range(3)]
    latest = alice.logs("paged", limit=2)
    assert [r["id"] for r in latest] == ids[1:]
    older = alice.logs("paged", limit=2, before=latest[0]["created"])
    assert [r["id"] for r in older] == ids[:1]


def test_200_concurrent_invocations(server, alice):
    deploy(alice, "many", SQUARE)
    results: dict[int, dict] = {}
    errors = []
    shared = Client(server.url, alice.token)  # httpx clients are thread-safe
    shared.http = httpx.Client(base_url=server.url, headers=alice.http.headers, timeout=60,
                               limits=httpx.Limits(max_connections=200))

    def run(n):
        try:
            results[n] = shared.invoke("many", {"n": n})
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shared.close()
    assert errors == []
    assert all(results[n]["result"] == {"n": n, "square": n * n} for n in range(200))


def test_logs_and_metrics(admin, alice):
    deploy(alice, "chatty", "def handler(event, context):\n    print('line', event)\n")
    for n in range(3):
        alice.invoke("chatty", n)
    logs = alice.logs("chatty", limit=2)
    assert [r["stdout"] for r in logs] == ["line 1\n", "line 2\n"]
    text = admin.metrics()
    assert "# TYPE usetl_invocation_seconds histogram" in text
    assert "usetl_invocations_total{function=" in text and 'status="ok"' in text
    assert "usetl_pool_memory_bytes" in text
    pool = alice.pool()
    assert pool["backend"] == "process"
    assert all(f["function"].split("/")[0] == pool["functions"][0]["function"].split("/")[0]
               for f in pool["functions"])


def test_async_invocations_survive_a_restart(tmp_path):
    server = Server(tmp_path / "state", tmp_path / "modules").start()
    try:
        admin = Client(server.url, server.admin_token)
        deploy(admin, "slow", SLEEPS, concurrency=1)
        running = admin.invoke_async("slow", {"sleep": 30, "n": 1})
        wait_until(lambda: admin.invocation(running)["status"] == "running",
                   "the first invocation to start")
        queued = admin.invoke_async("slow", {"sleep": 0, "n": 2})
        assert admin.invocation(queued)["status"] == "queued"
        admin.close()
        printed = server.stop(signal.SIGKILL)  # a crash: nothing is flushed on the way out
        assert "WARNING: isolation is weaker than with KVM" in printed
        assert f"serving on {server.url}" in printed and "admin token" in printed
        server.start()
        admin = Client(server.url, server.admin_token)
        wait_until(lambda: admin.invocation(queued)["status"] == "succeeded",
                   "the re-queued invocation to run after the restart")
        assert admin.invocation(queued)["result"] == 2
        record = admin.invocation(running)
        assert record["status"] == "interrupted"
        assert record["error"]["type"] == "Interrupted"
        admin.close()
    finally:
        server.stop()


VECTORS = """
import tinyvec
def handler(event, context):
    a = list(range(event["n"]))
    return {"dot": tinyvec.dot(a, a), "version": tinyvec.__version__}
"""


def test_requirements_installed_once_and_shared(server, alice, wheelhouse):
    write_wheel(wheelhouse, "tinyvec", "1.4", {"tinyvec/__init__.py": """
        from tinyvec_base import total
        __version__ = "1.4"
        def dot(a, b):
            return total(x * y for x, y in zip(a, b, strict=True))
    """}, requires=("tinyvec-base",))
    write_wheel(wheelhouse, "tinyvec_base", "0.3", {"tinyvec_base.py": "total = sum\n"})
    deploy(alice, "vec-one", VECTORS, requirements=["tinyvec"])
    deploy(alice, "vec-two", VECTORS.replace("dot(a, a)", "dot(a, [1] * len(a))"),
           requirements=["tinyvec==1.4"])
    one = alice.invoke("vec-one", {"n": 1000})
    two = alice.invoke("vec-two", {"n": 1000})
    assert one["error"] is None and two["error"] is None, (one["error"], two["error"])
    assert one["result"]["dot"] == sum(i * i for i in range(1000))
    assert two["result"]["dot"] == sum(range(1000))
    entries = sorted(p.name.rsplit("-", 1)[0] for p in server.modules.iterdir()
                     if p.is_dir() and p.name.startswith("tinyvec"))  # not their .usetl packs
    assert entries == ["tinyvec-1.4", "tinyvec-base-0.3"]  # one of each, shared
    assert one["result"]["version"] == "1.4"



def test_a_new_version_goes_live_while_the_old_one_finishes(server, alice, module_http_server):
    version = ("from usetl import etl\ndef handler(event, context):\n"
               "    if event:\n        etl.get(event)\n    return 'v{}'\n")
    allow = [module_http_server.base]
    gate = module_http_server.gate("/rolling")
    deploy(alice, "rolling", version.format(1), allow=allow)
    seen: list[list[str]] = [[], [], []]  # what each client got, in order
    results, errors = [], []
    stop = threading.Event()

    def invoke_until_stopped(mine: list[str]):
        with Client(server.url, alice.token) as c:
            while not stop.is_set():
                record = c.invoke("rolling", None)
                if record["status"] == "succeeded":
                    mine.append(record["result"])
                    results.append(record["result"])
                else:
                    errors.append(record["error"])

    slow = []
    first = threading.Thread(target=lambda: slow.append(alice.invoke("rolling", gate.url)))
    first.start()
    gate.wait_for(1)  # running on version 1 until the gate opens
    threads = [threading.Thread(target=invoke_until_stopped, args=(mine,)) for mine in seen]
    for t in threads:
        t.start()
    wait_until(lambda: results, "a first answer from version 1")
    assert deploy(alice, "rolling", version.format(2), allow=allow)["version"] == 2
    # Every client has had an answer from version 2: none has a version 1 call in flight.
    wait_until(lambda: all("v2" in mine for mine in seen), "every client to reach version 2")
    stop.set()
    gate.open()
    for t in threads + [first]:
        t.join()
    assert errors == []
    assert slow[0]["result"] == "v1"  # began on version 1 and finished there
    assert results[0] == "v1" and results[-1] == "v2"
    assert all(mine == sorted(mine) for mine in seen)  # no client went back to version 1
    assert alice.invoke("rolling", None)["result"] == "v2"
