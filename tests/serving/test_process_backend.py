"""The process backend: a real zygote process and its forked, namespaced children."""

import os

import pytest
from sandbox_files import write_function

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
            assert out.value["uid"] == 65534
            assert out.value["fs"] == "Read-only file system"
            assert out.value["secret"] is False  # the server's state is not visible
        assert out.value["code"] == ["fn.py"]
        with pytest.raises(RollbackImpossible):
            instance.rollback()
    finally:
        template.close()


def test_timeout_kills_the_instance(backend, function_dir):
    code = function_dir("def handler(event, context):\n    while True:\n        pass\n")
    template = backend.template(FunctionSpec("t/spin/1", code, "fn.py:handler"))
    try:
        instance = template.fork()
        out = instance.invoke({}, {}, 0.5)
        assert out.error["type"] == "Timeout"
        assert 450 < out.duration_ms < 3000
        assert template.fork().invoke({}, {}, 0.2).error["type"] == "Timeout"
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
        assert out.error["type"] == "ValueError"
        assert "bad event 'x'" in out.error["message"]
        assert 'fn.py", line 4' in out.error["traceback"]
        out = template.fork().invoke("big", {}, 10)
        assert out.error["type"] == "MemoryError"
    finally:
        template.close()


def test_syntax_error_fails_the_template_with_its_line(backend, function_dir):
    code = function_dir("def handler(event, context):\n    return (\n\nx = 1 +\n")
    with pytest.raises(FunctionLoadError) as e:
        backend.template(FunctionSpec("t/syntax/1", code, "fn.py:handler"))
    assert e.value.error["type"] == "SyntaxError"
    assert "line" in str(e.value)


def test_missing_handler_fails_the_template(backend, function_dir):
    code = function_dir("def other(event, context):\n    return 1\n")
    with pytest.raises(FunctionLoadError, match="no function 'handler'"):
        backend.template(FunctionSpec("t/missing/1", code, "fn.py:handler"))
