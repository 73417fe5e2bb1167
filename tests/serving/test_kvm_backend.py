"""The KVM backend: HyperFork clones as platform instances (real VMs)."""

import os
import threading

import pytest
from sandbox_files import write_function

from usetl.platform.backend import FunctionLoadError, FunctionSpec
from usetl.platform.kvm_backend import BACKGROUND_NICE, CAN_RENICE, KvmBackend
from usetl.platform.pool import Pool, PoolConfig
from waiting import wait_until

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


DIRTIES = """
def handler(event, context):
    block = bytearray(event["mib"] << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return len(block)
"""


def test_the_pool_budget_counts_what_a_rolled_back_instance_really_holds(backend, tmp_path):
    pool = Pool(backend, PoolConfig(memory_budget_bytes=1 << 40))
    try:
        spec = FunctionSpec("t/kvm/mem", write_function(tmp_path / "mem", DIRTIES),
                            "fn.py:handler")
        pool.add(spec, 1, 0, pool.start_template(spec))
        before = pool.memory_bytes()
        assert pool.invoke(spec.key, {"mib": 64}, {}).value == 64 << 20
        # Rolled back, the instance keeps the 64 MiB its invocation touched (its own copies).
        wait_until(lambda: pool.memory_bytes() >= before + (64 << 20),
                   "the rolled-back instance to be measured with its 64 MiB")
        # A budget one such instance exceeds: the idle function's template is evicted.
        pool.config.memory_budget_bytes = before + (32 << 20)
        wait_until(lambda: pool.metrics.evictions.value() == 1, "the template to be evicted")
        assert not pool.status()[0]["template"]
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
    merging = choose_backend("kvm", hide=[], merge_pages=True)
    assert merging.merge_pages
    merging.close()
    with pytest.raises(BackendError, match="for the KVM backend"):
        choose_backend("process", hide=[], merge_pages=True)
    huge = choose_backend("kvm", hide=[], huge_heap=True)
    assert huge.huge_heap and not huge.merge_pages
    huge.close()
    with pytest.raises(BackendError, match="for the KVM backend"):
        choose_backend("process", hide=[], huge_heap=True)


# A handler that imports a module of its own lazily; the module says when it is imported.
LEARNING = """
import os, random, sys, uuid
def handler(event, context):
    before = "heavy" in sys.modules
    os.environ["IN_CALL"] = "1"
    import heavy
    if event == "flaky":
        import flaky
    return {"before": before, "urandom": os.urandom(16).hex(), "random": random.random(),
            "uuid": str(uuid.uuid4()), "instance": os.environ["USETL_INSTANCE_ID"]}
"""
HEAVY = "print('importing heavy')\n"
# Imports in a call, not in a template (as code that needs what the call set up).
FLAKY = """
import os
if os.environ.get("IN_CALL") != "1":
    raise RuntimeError("flaky needs a call to import")
"""


def learning_pool(backend, tmp_path, name):
    from usetl.platform.pool import Pool, PoolConfig

    code = write_function(tmp_path / name, LEARNING)
    write_function(code, HEAVY, "heavy.py")
    write_function(code, FLAKY, "flaky.py")
    pool = Pool(backend, PoolConfig(learn_after=3))
    spec = FunctionSpec(f"t/{name}/1", code, "fn.py:handler")
    pool.add(spec, 8, 64, pool.start_template(spec))
    return pool, spec.key


def generation(pool, key):
    return next(s for s in pool.status() if s["function"] == key)


def test_lazy_imports_are_learned_into_a_new_generation_swapped_under_load(backend, tmp_path):
    import threading

    from waiting import wait_until

    pool, key = learning_pool(backend, tmp_path, "learn")
    outcomes = []
    swapped = threading.Event()

    def client():
        # Runs through the swap: until the new generation serves, then a few calls more.
        after = 0
        while after < 3:
            outcomes.append(pool.invoke(key, None, {}))
            after += swapped.is_set()

    try:
        clients = [threading.Thread(target=client) for _ in range(3)]
        for c in clients:
            c.start()
        try:
            wait_until(lambda: generation(pool, key)["generation"] == 2, "the new generation")
        finally:
            swapped.set()
        for c in clients:
            c.join()
        assert generation(pool, key)["learned"] == ["heavy"]
        for out in outcomes:  # none lost; each ran on a whole template of one generation
            assert out.error is None, out.error
            imported = out.stdout.count("importing heavy")
            assert (out.value["before"], imported, out.imported) in [
                (False, 1, ["heavy"]), (True, 0, [])], out
        later = [pool.invoke(key, None, {}) for _ in range(3)]
        assert all(r.value["before"] and r.stdout == "" and r.imported == [] for r in later)
        assert not outcomes[0].value["before"]
    finally:
        pool.close()


def test_a_learned_module_that_fails_to_import_leaves_the_old_generation(backend, tmp_path):
    from waiting import wait_until

    pool, key = learning_pool(backend, tmp_path, "flaky")
    try:
        for _ in range(3):
            assert pool.invoke(key, "flaky", {}).imported == ["heavy", "flaky"]
        failed = wait_until(lambda: generation(pool, key)["learn_error"], "the failed build")
        assert "flaky needs a call to import" in failed["traceback"]
        assert failed["message"].startswith("the learned import of 'flaky' failed")
        assert generation(pool, key)["generation"] == 1
        again = pool.invoke(key, "flaky", {})
        assert again.error is None and not again.value["before"]  # the old one serves on
    finally:
        pool.close()


def test_clones_of_a_learned_generation_never_share_random_values(backend, tmp_path):
    code = write_function(tmp_path / "fresh", LEARNING)
    write_function(code, HEAVY, "heavy.py")
    spec = FunctionSpec("t/fresh/1", code, "fn.py:handler", generation=2, learned=["heavy"])
    template = backend.template(spec)
    seen = []
    try:
        for _ in range(100):
            instance = template.fork()
            out = instance.invoke(None, {}, 30)
            instance.close()
            assert out.error is None and out.value.pop("before"), out
            seen.append(out.value)
    finally:
        template.close()
    for field in ("urandom", "random", "uuid", "instance"):
        assert len({v[field] for v in seen}) == 100, f"{field} repeats across clones"


CHILDREN = """
import subprocess, sys
from usetl import etl
def handler(event, context):
    held = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    try:
        subprocess.run([sys.executable, "-c", "pass"])
        second = "ran"
    except BlockingIOError:
        second = "refused"
    if event.get("gate"):
        etl.get(event["gate"])
    held.stdin.close()
    return [second, held.wait(), subprocess.run([sys.executable, "-c", "pass"]).returncode]
"""


def test_child_processes_count_toward_the_functions_concurrency(backend, tmp_path, http_server):
    import threading

    from usetl.platform.pool import ConcurrencyLimit

    pool = Pool(backend, PoolConfig())
    gate = http_server.gate("/held")
    try:
        code = write_function(tmp_path / "children", CHILDREN)
        spec = FunctionSpec("t/children/1", code, "fn.py:handler", allow=[http_server.base])
        pool.add(spec, 2, 0, pool.start_template(spec))
        # The invocation and its held child fill both slots: a second child is refused.
        out = pool.invoke("t/children/1", {}, {})
        assert out.error is None, (out.error, out.stderr)
        assert out.value == ["refused", 0, 0]
        assert "the invocation is at its limit of child processes (its function's " \
            "concurrency limit" in out.stderr
        results = []
        first = threading.Thread(target=lambda: results.append(
            pool.invoke("t/children/1", {"gate": gate.url}, {})))
        first.start()
        gate.wait_for(1)
        # One invocation is running, its child holds the other slot: no room, no queue.
        assert pool.status()[0]["children"] == 1
        with pytest.raises(ConcurrencyLimit, match="1 invocations and 1 of their child"):
            pool.invoke("t/children/1", {}, {})
        gate.open()
        first.join()
        assert results[0].value == ["refused", 0, 0]
        assert pool.status()[0]["children"] == 0
    finally:
        pool.close()


HOLDS_A_CHILD = """
import subprocess, sys
from usetl import etl
HOLD = "b = bytearray(60 << 20); b[::4096] = b'x' * len(b[::4096]); print('held', flush=True); " \\
       "import sys; sys.stdin.read()"
def handler(event, context):
    if not event:
        return "quick"
    child = subprocess.Popen([sys.executable, "-c", HOLD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    held = child.stdout.readline().strip()
    etl.get(event["holding"])
    child.stdin.close()
    status = child.wait()
    etl.get(event["after"])
    return [held, status]
"""


def test_a_clones_host_fds_are_as_many_after_each_invocation(backend, tmp_path):
    """An invocation that starts no child makes no host pipe for process tokens (each
    rollback dropped the last one's, open)."""
    from usetl.libos.children import ProcessSlots

    template = backend.template(FunctionSpec("t/fds/1", write_function(
        tmp_path / "fds", "def handler(event, context):\n    return event\n"), "fn.py:handler"))
    slots = ProcessSlots.new(4)
    instance = template.fork()
    try:
        def fds_after(event: int) -> int:
            out = instance.invoke(event, {}, 30, slots=slots)
            assert out.value == event, (out.error, out.stderr)
            instance.rollback()
            return len(os.listdir(f"/proc/{instance.clone.pid}/fd"))

        first = fds_after(0)
        assert [fds_after(n) for n in range(1, 5)] == [first] * 4
    finally:
        instance.close()
        template.close()
        slots.close()


SLEEPS = "import time\ndef handler(event, context):\n    time.sleep(event)\n    return event\n"


def test_a_pool_serves_on_an_event_loop_only_where_nothing_waits(backend, tmp_path):
    """invoke_async: a ready instance and a free slot, else None; a call cancelled while
    its clone runs frees its slot, and the pool still rolls its other instances back."""
    import asyncio

    pool = Pool(backend, PoolConfig())
    key = "t/loop/1"
    try:
        spec = FunctionSpec(key, write_function(tmp_path / "loop", SLEEPS), "fn.py:handler")
        pool.add(spec, 1, 0, pool.start_template(spec))
        assert pool.invoke(key, 0, {}).value == 0
        wait_until(lambda: pool.status()[0]["ready"] >= 1, "a ready instance")

        async def calls() -> list:
            served = await pool.invoke_async(key, 0, {"request_id": "r1"})
            while not pool.status()[0]["ready"]:  # its instance rolls back on this loop
                await asyncio.sleep(0.01)
            slow = asyncio.ensure_future(pool.invoke_async(key, 30, {}))
            while not pool.status()[0]["busy"]:
                assert not slow.done(), slow.result()  # it was served, or refused
                await asyncio.sleep(0.01)
            refused = await pool.invoke_async(key, 0, {})  # its one slot is taken
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow
            return [served, refused]

        served, refused = asyncio.run(calls())
        assert (served.value, served.error, refused) == (0, None, None)
        assert served.phases["guest_ms"] > 0
        assert pool.status()[0]["busy"] == 0
        assert pool.invoke(key, 0.01, {}).value == 0.01  # the slot came back
        assert pool.pools[key].reusable  # the killed clone said nothing of the others
    finally:
        pool.close()


def test_the_pool_counts_childrens_memory_and_a_childs_slot_wakes_a_queued_call(
        backend, tmp_path, http_server):
    import threading

    pool = Pool(backend, PoolConfig())
    holding, after = http_server.gate("/holding"), http_server.gate("/after")
    try:
        code = write_function(tmp_path / "holder", HOLDS_A_CHILD)
        spec = FunctionSpec("t/holder/1", code, "fn.py:handler", allow=[http_server.base])
        pool.add(spec, 2, 1, pool.start_template(spec))
        results = {}
        first = threading.Thread(target=lambda: results.update(first=pool.invoke(
            "t/holder/1", {"holding": holding.url, "after": after.url}, {})))
        first.start()
        holding.wait_for(1)
        # Its child's VM holds 60 MiB: the pool's status and budget count it while it runs.
        status = wait_until(lambda: (s := pool.status()[0])["children_bytes"] >= 60 << 20
                            and s, "the child's memory to be measured")
        assert status["children"] == 1
        assert pool.memory_bytes() >= status["children_bytes"] + status["template_bytes"]
        # Both slots are held (the invocation's and its child's): the next call queues...
        second = threading.Thread(target=lambda: results.update(second=pool.invoke(
            "t/holder/1", {}, {})))
        second.start()
        wait_until(lambda: pool.status()[0]["queued"] == 1, "the second call to queue")
        # ...until the child ends (its monitor gives the slot back), while the first runs on.
        holding.open()
        after.wait_for(1)
        second.join(timeout=120)
        assert not second.is_alive() and results["second"].value == "quick"
        after.open()
        first.join()
        assert results["first"].value == ["held", 0], results["first"]
        assert pool.status()[0]["children_bytes"] == 0
    finally:
        holding.open()
        after.open()
        pool.close()


WRITES_A_FILE = """
from usetl import etl
def handler(event, context):
    etl.put("out.bin", b"x" * event)
    return event
"""


def test_a_stage_that_handed_files_on_does_its_after_work_at_a_lower_priority(backend,
                                                                                tmp_path):
    """Its next hand-off's memory file and its rollback yield to the later stages; its next
    request, a stage's or not, runs at the normal priority again."""
    code = write_function(tmp_path / "fn", WRITES_A_FILE)
    template = backend.template(FunctionSpec("t/kvm-nice/1", code, "fn.py:handler"))
    try:
        instance = template.fork()
        pid = instance.clone.pid
        out = instance.invoke(5, {"request_id": "r1"}, 30, keep_files=True)
        assert out.error is None, out.error
        kept = instance.take_files()
        assert [f.name for f in kept.files.files] == ["out.bin"]
        kept.close()
        assert os.getpriority(os.PRIO_PROCESS, pid) == (BACKGROUND_NICE if CAN_RENICE else 0)
        instance.rollback()
        assert instance.invoke(3, {"request_id": "r2"}, 30).value == 3
        assert os.getpriority(os.PRIO_PROCESS, pid) == 0  # a plain invocation: not niced
        instance.close()
    finally:
        template.close()


THREADED_GETS = """
import hashlib
from concurrent.futures import ThreadPoolExecutor
from usetl import etl
def handler(event, context):
    def fetch(url):
        return hashlib.sha256(etl.get(url).bytes()).hexdigest()
    with ThreadPoolExecutor(len(event["urls"])) as pool:
        return list(pool.map(fetch, event["urls"]))
"""


def test_a_clones_threaded_requests_go_to_the_egress_broker_side_by_side(backend, tmp_path,
                                                                        http_server):
    """A jailed clone's guest threads' etl.get reach the server at once (over channels of
    their own to the broker) and arrive whole."""
    import hashlib

    gate = http_server.gate("/together")
    body = os.urandom(3 << 20)
    whole = http_server.add("/whole", body)
    code = write_function(tmp_path / "threaded", THREADED_GETS)
    template = backend.template(FunctionSpec("t/threaded/1", code, "fn.py:handler",
                                             allow=[http_server.base]))
    try:
        instance = template.fork()
        results = []
        call = threading.Thread(target=lambda: results.append(
            instance.invoke({"urls": [gate.url] * 4 + [whole]}, {}, 60)))
        call.start()
        gate.wait_for(4)
        gate.open()
        call.join()
        out = results[0]
        assert out.error is None, (out.error, out.stderr)
        assert out.value == [hashlib.sha256(b"open").hexdigest()] * 4 + [
            hashlib.sha256(body).hexdigest()]
        instance.close()
    finally:
        template.close()
