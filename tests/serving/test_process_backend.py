"""The process backend: a real zygote process and its forked, namespaced children."""

import os

import pytest
from sandbox_files import LAZY, write_function

from usetl.platform.backend import FunctionLoadError, FunctionSpec, RollbackImpossible
from usetl.platform.process_backend import ProcessBackend

PROBE = """
import os
STARTED = os.getpid()

def handler(event, context):
    print("event", event["n"])
    try:
        open("/etc/usetl-probe", "w")
        fs = "writable"
    except OSError as e:
        fs = e.strerror
    return {"n": event["n"] * 2, "uid": os.getuid(), "fs": fs,
            "code": sorted(os.listdir(".")), "secret": os.path.exists(event["secret"])}
"""


@pytest.fixture
def function_dir(tmp_path):
    def make(source: str, sub: str = "fn"):
        return write_function(tmp_path / sub, source)

    return make


@pytest.fixture
def backend():
    return ProcessBackend()


def test_instance_runs_the_handler_isolated(function_dir, tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    (state / "registry.db").write_text("tokens")
    (state / "registry.db").chmod(0o644)
    backend = ProcessBackend(hide=[state])
    code = function_dir(PROBE)
    template = backend.template(FunctionSpec("t/probe/1", code, "fn.py:handler"))
    try:
        assert template.memory_bytes > 1 << 20
        instance = template.fork()
        out = instance.invoke({"n": 21, "secret": str(state / "registry.db")}, {}, 10)
        assert out.error is None, out.error
        assert out.value["n"] == 42
        assert out.stdout == "event 21\n"
        if os.geteuid() == 0:
            assert out.value["uid"] >= 100000  # usetl.jail's range, one uid per zygote
            assert out.value["fs"] == "Read-only file system"
            assert out.value["secret"] is False  # the server's state is not visible
        assert out.value["code"] == ["fn.py"]
        with pytest.raises(RollbackImpossible):
            instance.rollback()
    finally:
        template.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a zygote a uid")
def test_each_function_s_zygote_has_its_own_uid(backend, function_dir):
    uids = []
    for name in ("a", "b"):
        template = backend.template(FunctionSpec(f"t/{name}/1", function_dir(PROBE, name),
                                                 "fn.py:handler"))
        try:
            out = template.fork().invoke({"n": 1, "secret": "/nonexistent"}, {}, 10)
            assert out.error is None, out.error
            uids.append(out.value["uid"])
        finally:
            template.close()
    assert uids[0] != uids[1]


def test_timeout_kills_the_instance(backend, function_dir):
    code = function_dir("def handler(event, context):\n    while True:\n        pass\n")
    template = backend.template(FunctionSpec("t/spin/1", code, "fn.py:handler"))
    try:
        instance = template.fork()
        out = instance.invoke({}, {}, 0.5)
        assert out.error.type == "Timeout"
        assert 450 < out.total_ms < 3000
        assert template.fork().invoke({}, {}, 0.2).error.type == "Timeout"
    finally:
        template.close()


def test_errors_and_memory_limit(backend, function_dir):
    code = function_dir(
        "def handler(event, context):\n"
        "    if event == 'big':\n"
        "        return len(bytearray(512 << 20))\n"
        "    raise ValueError('bad event ' + repr(event))\n"
    )
    template = backend.template(FunctionSpec("t/err/1", code, "fn.py:handler", memory_mib=256))
    try:
        out = template.fork().invoke("x", {}, 10)
        assert out.error.type == "ValueError"
        assert "bad event 'x'" in out.error.message
        assert 'fn.py", line 4' in out.error.traceback
        out = template.fork().invoke("big", {}, 10)
        assert out.error.type == "MemoryError"
    finally:
        template.close()


def test_syntax_error_fails_the_template_with_its_line(backend, function_dir):
    code = function_dir("def handler(event, context):\n    return (\n\nx = 1 +\n")
    with pytest.raises(FunctionLoadError) as e:
        backend.template(FunctionSpec("t/syntax/1", code, "fn.py:handler"))
    assert e.value.error.type == "SyntaxError"
    assert "line" in str(e.value)


def test_missing_handler_fails_the_template(backend, function_dir):
    code = function_dir("def other(event, context):\n    return 1\n")
    with pytest.raises(FunctionLoadError, match="no function 'handler'"):
        backend.template(FunctionSpec("t/missing/1", code, "fn.py:handler"))


ETL = """
import json, socket
from usetl import etl

def handler(event, context):
    try:
        socket.create_connection(("127.0.0.1", event["port"]), timeout=1)
        direct = "connected"
    except OSError as e:
        direct = type(e).__name__
    data = etl.get(event["url"])
    try:
        etl.get(event["denied"])
        denied = None
    except etl.EtlError as e:
        denied = e.kind
    with etl.open("out.json", "w") as f:
        f.write(json.dumps({"n": len(data.text().splitlines())}))
    r = etl.post(event["sink"], etl.stat("out.json"), content_type="application/json")
    return {"direct": direct, "denied": denied, "status": r.status, "answer": r.json(),
            "files": [f.name for f in etl.ls()]}
"""


def test_etl_goes_through_the_host_under_the_policy(backend, function_dir, http_server):
    url = http_server.add("/data.csv", b"a\nb\nc\n")
    code = function_dir(ETL)
    spec = FunctionSpec("t/etl/1", code, "fn.py:handler", allow=[http_server.base + "/"])
    template = backend.template(spec)
    try:
        out = template.fork().invoke({
            "url": url, "port": http_server.port, "denied": "http://127.0.0.2/x",
            "sink": http_server.base + "/sink",
        }, {}, 10)
        assert out.error is None, out.error
        if os.geteuid() == 0:
            assert out.value["direct"] != "connected"  # no network of its own
        assert out.value["denied"] == "denied"
        assert out.value["status"] == 200 and out.value["answer"]["size"] == len('{"n": 3}')
        assert http_server.posts[-1] == ("/sink", "application/json", b'{"n": 3}')
        assert out.value["files"] == ["data.csv", "sink", "out.json"]
        assert out.io.requests == 2 and out.io.bytes_in >= 6 and out.io.bytes_out == 8
        assert out.io.host_cpu_s > 0
        again = template.fork().invoke({
            "url": url, "port": http_server.port, "denied": "http://127.0.0.2/x",
            "sink": http_server.base + "/sink",
        }, {}, 10)
        assert again.value["files"] == ["data.csv", "sink", "out.json"]  # nothing carried over
    finally:
        template.close()


TMP = """
import ctypes, os
def handler(event, context):
    seen = sorted(os.listdir("/tmp"))
    with open("/tmp/" + event, "w") as f:
        f.write("secret")
    libc = ctypes.CDLL(None, use_errno=True)
    undone = libc.umount2(b"/tmp", 2) == 0
    return {"seen": seen, "undone": undone}
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="namespaces need root")
def test_each_instance_has_its_own_tmp(backend, function_dir):
    template = backend.template(FunctionSpec("t/tmp/1", function_dir(TMP), "fn.py:handler"))
    try:
        first = template.fork().invoke("a", {}, 10)
        second = template.fork().invoke("b", {}, 10)
        assert first.error is None and second.error is None, (first.error, second.error)
        assert first.value == {"seen": [], "undone": False}
        assert second.value == {"seen": [], "undone": False}  # nothing left by the first
    finally:
        template.close()


def test_a_warm_up_runs_in_the_zygote_before_any_fork(backend, function_dir):
    spec = FunctionSpec("t/warm/1", function_dir(LAZY), "fn.py:handler", warmup='{"n": 1}')
    template = backend.template(spec)
    try:
        assert template.warmup.value == {"calls": 1, "imported_before": False}
        assert template.warmup.stdout == "call 1 warmup\n"
        for _ in range(2):
            out = template.fork().invoke(0, {"request_id": "r"}, 10)
            assert out.value == {"calls": 2, "imported_before": True}, out.error
    finally:
        template.close()
    failing = FunctionSpec("t/warm/2", function_dir(LAZY, sub="b"), "fn.py:handler",
                           warmup='"fail"')
    with pytest.raises(FunctionLoadError, match="warm-up invocation failed") as refused:
        backend.template(failing)
    assert "not this event" in refused.value.error.traceback


def test_a_zygote_imports_what_its_calls_imported_lazily_when_learned(backend, function_dir):
    cold = FunctionSpec("t/learn/1", function_dir(LAZY), "fn.py:handler")
    template = backend.template(cold)
    try:
        out = template.fork().invoke(0, {}, 10)
        assert out.value["imported_before"] is False and "fractions" in out.imported
    finally:
        template.close()
    learned = FunctionSpec("t/learn/1", function_dir(LAZY), "fn.py:handler", generation=2,
                           learned=out.imported)
    template = backend.template(learned)
    try:
        again = template.fork().invoke(0, {}, 10)
        assert again.value["imported_before"] is True and again.imported == []
    finally:
        template.close()


HOOKS = """
import os
from usetl import runtime
EVENTS = []
runtime.before_freeze(lambda: EVENTS.append("freeze"))
runtime.after_clone(lambda: EVENTS.append(f"clone {os.getpid()}"))

def handler(event, context):
    return EVENTS, os.getpid()
"""


def test_runtime_hooks_run_before_the_first_fork_and_in_each_instance(backend, function_dir):
    template = backend.template(FunctionSpec("t/hooks/1", function_dir(HOOKS), "fn.py:handler"))
    try:
        for _ in range(2):
            events, pid = template.fork().invoke(None, {}, 10).value
            assert events == ["freeze", f"clone {pid}"]
    finally:
        template.close()


SPAWNS = """
import multiprocessing, subprocess, sys
import helper

def handler(event, context):
    child = subprocess.run([sys.executable, "-c", "import helper; print(helper.double(4))"],
                           capture_output=True, text=True, timeout=60)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        spawned = pool.apply(helper.double, (5,))
    return {"child": child.stdout.strip() or child.stderr[-300:], "spawned": spawned}
"""


def test_child_interpreters_import_the_functions_code(backend, function_dir):
    """A child `python` (subprocess, multiprocessing's spawn, which passes on the parent's
    interpreter flags) finds the function's code and requirements, as on a host."""
    code = function_dir(SPAWNS)
    (code / "helper.py").write_text("def double(n):\n    return 2 * n\n")
    template = backend.template(FunctionSpec("t/spawns/1", code, "fn.py:handler"))
    try:
        out = template.fork().invoke({}, {}, 60)
        assert out.error is None, (out.error, out.stderr)
        assert out.value == {"child": "8", "spawned": 10}
    finally:
        template.close()
