"""Pool policy over the real process backend."""

import threading

import pytest
from sandbox_files import write_function

from usetl.platform.backend import FunctionSpec
from usetl.platform.pool import ConcurrencyLimit, Pool, PoolConfig
from usetl.platform.process_backend import ProcessBackend
from waiting import wait_until

# Waits at the test's gate, if the event names one: it is running until the test opens it.
SLOW = """
from usetl import etl
def handler(event, context):
    if event.get("gate"):
        etl.get(event["gate"])
    return event.get("n")
"""


@pytest.fixture
def function_dir(tmp_path):
    def make(source: str, sub: str = "fn"):
        return write_function(tmp_path / sub, source)

    return make


def make_pool(**config):
    return Pool(ProcessBackend(), PoolConfig(**config))


def deploy(pool, code, key, concurrency=8, queue=16, allow=()):
    spec = FunctionSpec(key, code, "fn.py:handler", allow=list(allow))
    pool.add(spec, concurrency, queue, pool.start_template(spec))
    return spec


def test_ready_instances_follow_concurrency_and_scale_to_zero(function_dir, http_server):
    pool = make_pool(idle_s=3, recent_s=30)
    gate = http_server.gate("/four")
    try:
        deploy(pool, function_dir(SLOW), "t/slow/1", allow=[http_server.base])
        threads = [threading.Thread(target=pool.invoke,
                                    args=("t/slow/1", {"gate": gate.url}, {}))
                   for _ in range(4)]
        for t in threads:
            t.start()
        gate.wait_for(4)  # four at once: the concurrency the pool observes
        gate.open()
        for t in threads:
            t.join()

        def refilled():
            status = pool.status()[0]
            return status["ready"] >= 4 and status["ready"] == status["target_ready"] and status

        status = wait_until(refilled, "the pool to refill its ready instances")
        # Refilled to the observed concurrency, plus one spare while used instances
        # might still come back by rollback (until the backend says they cannot).
        assert status["ready"] == status["target_ready"] in (4, 5)

        def scaled_to_zero():
            status = pool.status()[0]
            return status["ready"] == 0 and status

        status = wait_until(scaled_to_zero, "idle instances to close after idle_s")
        assert status["ready"] == 0 and status["template"]  # scaled to zero, template kept
        assert pool.invoke("t/slow/1", {"n": 7}, {}).value == 7
    finally:
        pool.close()


def test_concurrency_limit_queues_then_rejects(function_dir, http_server):
    pool = make_pool()
    gate = http_server.gate("/one")
    try:
        deploy(pool, function_dir(SLOW), "t/one/1", concurrency=1, queue=1,
               allow=[http_server.base])
        results = []
        first = threading.Thread(
            target=lambda: results.append(pool.invoke("t/one/1", {"gate": gate.url, "n": 1}, {}))
        )
        second = threading.Thread(
            target=lambda: results.append(pool.invoke("t/one/1", {"n": 2}, {}))
        )
        first.start()
        gate.wait_for(1)
        second.start()
        wait_until(lambda: pool.status()[0]["queued"] == 1, "the second call to queue")
        with pytest.raises(ConcurrencyLimit):
            pool.invoke("t/one/1", {"n": 3}, {})
        gate.open()
        first.join()
        second.join()
        assert sorted(r.value for r in results) == [1, 2]
        assert pool.metrics.rejected.value(function="t/one/1") == 1
    finally:
        pool.close()


def test_memory_budget_evicts_the_least_recently_used_template(function_dir):
    pool = make_pool(max_ready=0)  # no ready instances: the templates alone fill the budget

    def templates() -> dict[str, bool]:
        return {s["function"]: s["template"] for s in pool.status()}

    try:
        deploy(pool, function_dir(SLOW, sub="a"), "t/a/1")
        one = pool.memory_bytes()
        pool.config.memory_budget_bytes = one + one // 2  # room for one template, not two
        deploy(pool, function_dir(SLOW, sub="b"), "t/b/1")
        assert templates() == {"t/a/1": False, "t/b/1": True}
        assert pool.invoke("t/a/1", {"n": 5}, {}).value == 5  # restarted on demand
        assert pool.metrics.templates_started.value() == 3
        # The least recently used goes first.
        wait_until(lambda: templates() == {"t/a/1": True, "t/b/1": False}
                   and pool.metrics.evictions.value() == 2, "the template of t/b/1 to be evicted")
    finally:
        pool.close()


def test_retired_version_closes_after_its_last_invocation(function_dir, http_server):
    pool = make_pool()
    gate = http_server.gate("/old")
    try:
        deploy(pool, function_dir(SLOW), "t/old/1", allow=[http_server.base])
        result = []
        t = threading.Thread(
            target=lambda: result.append(pool.invoke("t/old/1", {"gate": gate.url, "n": 9}, {}))
        )
        t.start()
        gate.wait_for(1)
        pool.retire("t/old/1")
        assert pool.has("t/old/1")  # still serving the running invocation
        gate.open()
        t.join()
        assert result[0].value == 9
        # Its instance is recycled off the request's path, then the version goes.
        wait_until(lambda: not pool.has("t/old/1"), "the retired version to close")
    finally:
        pool.close()
