"""End to end through the HTTP API with the KVM backend: every invocation in a USF clone."""

from __future__ import annotations

import base64
import shutil
import subprocess
import textwrap
import threading
from pathlib import Path

import httpx
import pytest
from sandbox_files import LAZY

from usetl.api.client import ApiError, Client
from usetl.api.demo import EXAMPLE, DataServer, sales_csv
from usetl.api.launcher import ServerProcess
from usetl.platform.learning import LEARN_AFTER

pytestmark = pytest.mark.kvm

PROGRAMS = Path(__file__).parent.parent / "integration" / "programs"

STATEFUL = """
SEEN = []
def handler(event, context):
    SEEN.append(event)
    print("seen", len(SEEN))
    if event == "fail":
        raise KeyError("missing")
    return {"seen": len(SEEN), "n": event}
"""
NUMPY = """
import numpy as np
def handler(event, context):
    a = np.arange(event["n"], dtype=np.float64)
    return {"value": float(a @ a), "version": np.__version__}
"""


def files(source: str, name: str = "fn.py") -> dict:
    return {name: base64.b64encode(textwrap.dedent(source).encode()).decode()}


def deploy(client: Client, name: str, source: str, **options) -> dict:
    body = {"handler": "fn.py:handler", "files": files(source), **options}
    return client.request("PUT", f"/v1/functions/{name}", json=body)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("usetl-kvm")
    s = ServerProcess(root / "state", root / "modules", "kvm").start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    c = Client(server.url, server.admin_token)
    yield c
    c.close()


def test_a_deploy_with_a_warm_up_freezes_the_template_after_that_run(client):
    deployed = deploy(client, "lazy", LAZY, warmup={"deployer": 1})
    assert deployed["warm"] and deployed["warmup"]["stdout"] == "call 1 warmup\n"
    for _ in range(2):
        assert client.invoke("lazy", 0)["result"] == {"calls": 2, "imported_before": True}
    with pytest.raises(ApiError) as refused:
        deploy(client, "lazy", LAZY, warmup="fail")
    assert refused.value.code == "load_failed" and refused.value.cause["type"] == "ValueError"
    assert "not this event" in refused.value.cause["traceback"]
    assert client.function("lazy")["version"] == deployed["version"]  # nothing changed
    assert client.invoke("lazy", 0)["result"] == {"calls": 2, "imported_before": True}


def test_reuse_warm_keeps_an_instance_state_between_calls(client):
    deployed = deploy(client, "kept", STATEFUL, concurrency=1, reuse="warm")
    assert deployed["reuse"] == "warm"
    assert [client.invoke("kept", n)["result"]["seen"] for n in range(3)] == [1, 2, 3]
    with pytest.raises(ApiError) as bad:
        deploy(client, "kept", STATEFUL, reuse="sometimes")
    assert bad.value.code == "invalid_reuse"


UNIMPLEMENTED = """
import ctypes
def handler(event, context):
    libc = ctypes.CDLL(None, use_errno=True)
    return [libc.syscall(335), ctypes.get_errno(), libc.syscall(335)]
"""


def test_the_record_names_the_unimplemented_syscalls_an_invocation_hit(client):
    deploy(client, "enosys", UNIMPLEMENTED)
    record = client.invoke("enosys", None)
    assert record["result"] == [-1, 38, -1]  # ENOSYS, as on a kernel without the syscall
    assert record["unimplemented"] == {"syscall_335": 2}
    assert client.logs("enosys")[-1]["unimplemented"] == {"syscall_335": 2}
    assert client.invoke("enosys", None)["unimplemented"] == {"syscall_335": 2}  # per call


def test_invocations_run_in_clones_that_forget(client):
    assert client.pool()["backend"] == "kvm"
    deploy(client, "stateful", STATEFUL, concurrency=1)
    for n in range(3):
        record = client.invoke("stateful", n)
        assert record["result"] == {"seen": 1, "n": n}  # rolled back after every invocation
        assert record["stdout"] == "seen 1\n"
    failed = client.invoke("stateful", "fail")
    assert failed["status"] == "failed" and failed["error"]["type"] == "KeyError"
    assert client.invoke("stateful", 9)["result"] == {"seen": 1, "n": 9}


def test_timeout_and_syntax_error(client):
    deploy(client, "spin", "def handler(event, context):\n    while True:\n        pass\n",
           timeout_s=0.5)
    assert client.invoke("spin", None)["error"]["type"] == "Timeout"
    assert client.invoke("spin", None)["error"]["type"] == "Timeout"
    with pytest.raises(ApiError) as e:
        deploy(client, "broken", "def handler(event, context):\n    return )\n")
    assert e.value.code == "load_failed" and "line 2" in str(e.value)


SHELLS_OUT = """
import os, subprocess, sys
def handler(event, context):
    tool = subprocess.run([os.path.join(os.path.dirname(__file__), "bin", "children"),
                           "hello", "x"], capture_output=True, text=True)
    py = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True)
    return [tool.returncode, tool.stdout.strip(), py.stdout.strip()]
"""


def test_a_deployed_function_runs_the_program_it_ships_and_python_as_children(client, tmp_path):
    if not shutil.which("gcc"):
        pytest.fail("gcc is needed to build the test program")
    (tmp_path / "bin").mkdir()
    subprocess.run(["gcc", "-static", "-O1", "-o", str(tmp_path / "bin" / "children"),
                    str(PROGRAMS / "children.c")], check=True)
    (tmp_path / "main.py").write_text(SHELLS_OUT)
    client.deploy("shells-out", tmp_path)  # the program's mode bits go with it
    record = client.invoke("shells-out", None)
    assert record["error"] is None, (record["error"], record["stderr"])
    assert record["result"] == [7, "hello from C with 3 args", "42"]


def test_numpy_from_pypi_computes_inside_the_usf_and_is_stored_once(server, client):
    deploy(client, "np-a", NUMPY, requirements=["numpy"])
    deploy(client, "np-b", NUMPY.replace("a @ a", "a.sum()"), requirements=["numpy"])
    a = client.invoke("np-a", {"n": 1000})
    b = client.invoke("np-b", {"n": 1000})
    assert a["error"] is None and b["error"] is None, (a["error"], b["error"])
    assert a["result"]["value"] == sum(i * i for i in range(1000))
    assert b["result"]["value"] == sum(range(1000))
    entries = [p.name for p in server.modules.iterdir()
               if p.name.startswith("numpy-") and p.is_dir()]
    assert len(entries) == 1


def test_the_demo_etl_function_with_io_accounting(client):
    data = DataServer(sales_csv(rows=2000))
    try:
        client.deploy("sales", EXAMPLE, allow=[data.base + "/"])
        event = {"source": data.base + "/sales.csv", "sink": data.base + "/totals",
                 "min_amount": 500}
        record = client.invoke("sales", event)
        assert record["error"] is None, record["error"]
        summary = record["result"]["summary"]
        assert summary["rows"] == 2000 and 0 < summary["kept"] < 2000
        assert data.posts[-1].decode() == __import__("json").dumps(summary)
        m = record["metrics"]
        assert m["io_requests"] == 2 and m["bytes_in"] >= record["result"]["downloaded_bytes"]
        assert m["host_cpu_s"] > 0
        denied = client.invoke("sales", {**event, "source": "http://127.0.0.2:1/x.csv"})
        assert denied["error"]["type"] == "EtlError"
    finally:
        data.close()


def test_200_concurrent_invocations_through_a_few_clones(server, client):
    deploy(client, "square", "def handler(event, context):\n    return event * event\n",
           concurrency=4)
    shared = httpx.Client(base_url=server.url, timeout=120,
                          headers={"Authorization": f"Bearer {server.admin_token}"},
                          limits=httpx.Limits(max_connections=200))
    results: dict[int, int] = {}
    errors: list[str] = []

    def run(n: int) -> None:
        r = shared.post("/v1/functions/square/invoke", json=n)
        if r.status_code != 200 or r.json()["error"]:
            errors.append(r.text[:200])
        else:
            results[n] = r.json()["result"]

    threads = [threading.Thread(target=run, args=(n,)) for n in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shared.close()
    assert errors == []
    assert results == {n: n * n for n in range(200)}


def test_templates_come_back_from_snapshots_after_a_restart(tmp_path):
    server = ServerProcess(tmp_path / "state", tmp_path / "modules", "kvm").start()
    try:
        client = Client(server.url, server.admin_token)
        deploy(client, "kept", STATEFUL)
        assert client.invoke("kept", 1)["result"] == {"seen": 1, "n": 1}
        client.close()
        server.stop()  # SIGTERM: templates are saved on the way out
        assert any((tmp_path / "state" / "snapshots").iterdir())
        server.start()
        client = Client(server.url, server.admin_token)
        assert client.invoke("kept", 2)["result"] == {"seen": 1, "n": 2}
        assert "usetl_templates_restored_total 1" in client.metrics()
        client.close()
    finally:
        server.stop()


def test_lazy_imports_are_learned_and_shown_by_the_api_and_ls(server, client, tmp_path):
    import os
    import subprocess
    import sys

    from usetl.api.launcher import SRC
    from waiting import wait_until

    deploy(client, "learns", LAZY)
    for n in range(LEARN_AFTER):  # the server's default: the same imports this many times
        assert client.invoke("learns", n)["result"]["imported_before"] is False
    learned = wait_until(lambda: client.function("learns")["generation"] == 2
                         and client.function("learns"), "the learned generation")
    assert "fractions" in learned["learned_modules"] and learned["learn_error"] is None
    assert learned["version"] == 1  # a generation of the same version
    assert client.invoke("learns", 9)["result"] == {"calls": 1, "imported_before": True}
    env = dict(os.environ, PYTHONPATH=str(SRC), USETL_URL=server.url,
               USETL_TOKEN=server.admin_token, USETL_CONFIG=str(tmp_path / "config.json"))
    listed = subprocess.run([sys.executable, "-m", "usetl", "ls"], capture_output=True,
                            text=True, env=env, timeout=60)
    row = next(line.split() for line in listed.stdout.splitlines() if line.startswith("learns"))
    assert row[1:3] == ["1", "2"], listed.stdout  # version 1, generation 2
    assert "learned imports: " in listed.stdout and "fractions" in listed.stdout
