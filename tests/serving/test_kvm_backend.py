"""The KVM backend: HyperFork clones as platform instances (real VMs)."""

import pytest
from sandbox_files import write_function

from usetl.platform.backend import FunctionLoadError, FunctionSpec
from usetl.platform.kvm_backend import KvmBackend

pytestmark = pytest.mark.kvm

FUNCTION = """
import os
import helper
COUNTER = [0]
def handler(event, context):
    COUNTER[0] += 1
    print("event", event["n"])
    return {"double": helper.double(event["n"]), "calls": COUNTER[0],
            "env": os.environ.get("MODE"), "request": context.request_id}
"""


@pytest.fixture(scope="module")
def backend():
    b = KvmBackend()
    yield b
    b.close()


def test_clone_invokes_rolls_back_and_forgets(backend, tmp_path):
    code = write_function(tmp_path / "fn", FUNCTION)
    modules = write_function(tmp_path / "mod", "def double(x):\n    return 2 * x\n", "helper.py")
    spec = FunctionSpec("t/kvm/1", code, "fn.py:handler", module_dirs=[modules],
                        env={"MODE": "test"})
    template = backend.template(spec)
    try:
        assert template.memory_bytes > 1 << 20
        instance = template.fork()
        out = instance.invoke({"n": 21}, {"request_id": "r1"}, 30)
        assert out.error is None, out.error
        assert out.value == {"double": 42, "calls": 1, "env": "test", "request": "r1"}
        assert out.stdout == "event 21\n"
        assert out.guest_cpu_ms > 0
        instance.rollback()
        again = instance.invoke({"n": 1}, {"request_id": "r2"}, 30)
        assert again.value["calls"] == 1  # the last invocation left nothing behind
        instance.close()
    finally:
        template.close()


def test_timeout_ends_the_clone_and_syntax_errors_name_the_line(backend, tmp_path):
    code = write_function(tmp_path / "spin", "def handler(event, context):\n    while True:\n"
                          "        pass\n")
    template = backend.template(FunctionSpec("t/kvm/2", code, "fn.py:handler"))
    try:
        instance = template.fork()
        out = instance.invoke(None, {}, 0.5)
        assert out.error.type == "Timeout"
        assert instance.closed
    finally:
        template.close()
    bad = write_function(tmp_path / "bad", "def handler(event, context):\n    return (\n")
    with pytest.raises(FunctionLoadError, match="line 2"):
        backend.template(FunctionSpec("t/kvm/3", bad, "fn.py:handler"))


def test_evicted_template_comes_back_from_its_snapshot(backend, tmp_path):
    from usetl.platform.pool import Pool, PoolConfig

    pool = Pool(backend, PoolConfig(memory_budget_bytes=1), snapshot_dir=tmp_path / "snap")
    try:
        for name in ("a", "b"):
            code = write_function(tmp_path / name, f"def handler(event, context):\n"
                                  f"    return '{name}' + str(event)\n")
            spec = FunctionSpec(f"t/{name}/1", code, "fn.py:handler")
            pool.add(spec, 2, 4, pool.start_template(spec))
        status = {s["function"]: s for s in pool.status()}
        assert not status["t/a/1"]["template"] and status["t/a/1"]["snapshot"]
        assert pool.invoke("t/a/1", 1, {}).value == "a1"  # restored from the snapshot
        assert pool.invoke("t/b/1", 2, {}).value == "b2"
        assert pool.metrics.evictions.value() >= 2
    finally:
        pool.close()


def test_serve_chooses_kvm_where_it_is_usable():
    from usetl.platform.backend import BackendError
    from usetl.platform.backends import choose_backend

    chosen = choose_backend(None, hide=[])
    assert chosen.name == "kvm"  # never the weaker process backend silently
    chosen.close()
    assert choose_backend("process", hide=[]).name == "process"
    with pytest.raises(BackendError, match="unknown backend"):
        choose_backend("docker", hide=[])
