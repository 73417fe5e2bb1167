"""Pool policy over the real process backend."""

import threading
import time

import pytest
from sandbox_files import write_function

from usetl.platform.backend import FunctionSpec
from usetl.platform.pool import ConcurrencyLimit, Pool, PoolConfig
from usetl.platform.process_backend import ProcessBackend

SLOW = """
import time
def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return event.get("n")
"""


@pytest.fixture
def function_dir(tmp_path):
    def make(source: str, sub: str = "fn"):
        return write_function(tmp_path / sub, source)

    return make


def make_pool(**config):
    return Pool(ProcessBackend(), PoolConfig(**config))


def deploy(pool, code, key, concurrency=8, queue=16):
    spec = FunctionSpec(key, code, "fn.py:handler")
    pool.add(spec, concurrency, queue, pool.start_template(spec))
    return spec


def test_ready_instances_follow_concurrency_and_scale_to_zero(function_dir):
    pool = make_pool(idle_s=1.5, recent_s=30)
    try:
        deploy(pool, function_dir(SLOW), "t/slow/1")
        threads = [threading.Thread(target=pool.invoke, args=("t/slow/1", {"sleep": 0.3}, {}))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            status = pool.status()[0]
            if status["ready"] >= 4 and status["ready"] == status["target_ready"]:
                break
            time.sleep(0.05)
        # Refilled to the observed concurrency, plus one spare while used instances
        # might still come back by rollback (until the backend says they cannot).
        assert status["ready"] == status["target_ready"] in (4, 5)
        time.sleep(2.2)
        status = pool.status()[0]
        assert status["ready"] == 0 and status["template"]  # scaled to zero, template kept
        assert pool.invoke("t/slow/1", {"n": 7}, {}).value == 7
    finally:
        pool.close()


def test_concurrency_limit_queues_then_rejects(function_dir):
    pool = make_pool()
    try:
        deploy(pool, function_dir(SLOW), "t/one/1", concurrency=1, queue=1)
        results = []
        first = threading.Thread(
            target=lambda: results.append(pool.invoke("t/one/1", {"sleep": 0.6, "n": 1}, {}))
        )
        second = threading.Thread(
            target=lambda: results.append(pool.invoke("t/one/1", {"n": 2}, {}))
        )
        first.start()
        time.sleep(0.2)
        second.start()  # waits in the queue
        time.sleep(0.1)
        with pytest.raises(ConcurrencyLimit):
            pool.invoke("t/one/1", {"n": 3}, {})
        first.join()
        second.join()
        assert sorted(r.value for r in results) == [1, 2]
        assert pool.metrics.rejected.value(function="t/one/1") == 1
    finally:
        pool.close()


def test_memory_budget_evicts_the_least_recently_used_template(function_dir):
    pool = make_pool(memory_budget_bytes=1)
    try:
        deploy(pool, function_dir(SLOW, sub="a"), "t/a/1")
        deploy(pool, function_dir(SLOW, sub="b"), "t/b/1")
        status = {s["function"]: s for s in pool.status()}
        assert not status["t/a/1"]["template"] and status["t/b/1"]["template"]
        assert pool.invoke("t/a/1", {"n": 5}, {}).value == 5  # restarted on demand
        assert pool.metrics.templates_started.value() == 3
        status = {s["function"]: s for s in pool.status()}
        assert not status["t/b/1"]["template"]  # the least recently used went first
        assert pool.metrics.evictions.value() >= 2
    finally:
        pool.close()


def test_retired_version_closes_after_its_last_invocation(function_dir):
    pool = make_pool()
    try:
        deploy(pool, function_dir(SLOW), "t/old/1")
        result = []
        t = threading.Thread(
            target=lambda: result.append(pool.invoke("t/old/1", {"sleep": 0.5, "n": 9}, {}))
        )
        t.start()
        time.sleep(0.2)
        pool.retire("t/old/1")
        assert pool.has("t/old/1")  # still serving the running invocation
        t.join()
        assert result[0].value == 9
        deadline = time.monotonic() + 5
        while pool.has("t/old/1") and time.monotonic() < deadline:
            time.sleep(0.02)  # its instance is recycled off the request's path
        assert not pool.has("t/old/1")
    finally:
        pool.close()
