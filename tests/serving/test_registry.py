"""The registry on a real SQLite file and on a real PostgreSQL: one suite for both."""

import sqlite3
import time

import pytest

from usetl.invocation import ErrorInfo, InvocationResult, IoUsage
from usetl.platform.database import postgres_sql
from usetl.platform.registry import MIGRATIONS, Registry, RegistryError, invocation_record
from usetl.platform.rollbacks import RollbackTimes

VERSION = dict(
    handler="fn.py:handler", requirements=["six"], module_dirs=["/m/six"], code_dir="/c",
    memory_mib=128, timeout_s=5.0, concurrency=4, queue=0, allow=["https://example.com/"],
    env={"KEY": "secret"},
)


@pytest.fixture
def where(registry_where):
    return registry_where


@pytest.fixture
def registry(where):
    r = Registry(where)
    yield r
    r.close()


def test_tokens_are_stored_hashed_and_resolve_to_their_tenant(registry, where):
    a, token_a = registry.add_tenant("alice")
    b, token_b = registry.add_tenant("bob")
    assert registry.tenant_for_token(token_a) == a
    assert registry.tenant_for_token(token_b) == b
    assert registry.tenant_for_token(token_a + "x") is None
    with pytest.raises(RegistryError, match="already exists"):
        registry.add_tenant("alice")
    stored = [list(row.values()) if isinstance(row, dict) else list(row)
              for row in registry._read("SELECT * FROM tokens")]
    assert len(stored) == 2 and token_a not in str(stored)
    if not isinstance(where, str):
        raw = where.read_bytes() + where.with_name("registry.db-wal").read_bytes()
        assert token_a.encode() not in raw


def test_versions_and_tenant_scoping(registry):
    a, _ = registry.add_tenant("alice")
    b, _ = registry.add_tenant("bob")
    v1 = registry.add_version(a.id, "etl", **VERSION)
    v2 = registry.add_version(a.id, "etl", **{**VERSION, "memory_mib": 256})
    assert (v1.version, v2.version) == (1, 2)
    assert registry.version(a.id, "etl").version == 2
    assert registry.version(a.id, "etl", 1).memory_mib == 128
    assert registry.version(b.id, "etl") is None
    assert [f.name for f in registry.functions(a.id)] == ["etl"]
    assert registry.functions(b.id) == []
    assert v2.public()["env"] == ["KEY"]
    assert [v.version for v in registry.delete_function(a.id, "etl")] == [1, 2]
    assert registry.version(a.id, "etl") is None


def test_a_version_keeps_its_learned_generation_and_the_last_failure(registry, where):
    from usetl.invocation import ErrorInfo

    a, _ = registry.add_tenant("alice")
    v1 = registry.add_version(a.id, "etl", **VERSION)
    assert (v1.generation, v1.learned, v1.learn_error) == (1, [], None)
    registry.set_generation(v1.id, 2, ["fractions", "PIL.JpegImagePlugin"], None)
    failed = ErrorInfo("ImportError", "the learned import of 'x' failed", "tb", "handler")
    registry.set_generation(v1.id, 2, ["fractions", "PIL.JpegImagePlugin"], failed)
    registry.close()
    reopened = Registry(where)
    try:
        again = reopened.version(a.id, "etl")
        assert (again.generation, again.learned) == (2, ["fractions", "PIL.JpegImagePlugin"])
        assert again.learn_error == failed
        public = again.public()
        assert public["generation"] == 2 and public["learn_error"]["type"] == "ImportError"
    finally:
        reopened.close()


def test_a_failed_write_changes_nothing(registry):
    a, _ = registry.add_tenant("alice")

    def failing(cur):
        cur.execute("INSERT INTO tenants (name, admin, created) VALUES ('x', 0, 0)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        registry._write(failing)
    assert [t.name for t in registry.tenants()] == ["alice"]


def test_invocations_survive_reopening_and_recover(registry, where):
    a, _ = registry.add_tenant("alice")
    v = registry.add_version(a.id, "etl", **VERSION)
    queued = registry.add_invocation(v, "async", {"x": 1}, "queued")
    running = registry.add_invocation(v, "async", {"x": 2}, "queued")
    registry.set_running(running)
    done = "d" * 32
    registry.record_invocation(
        done, v, {"x": 3}, InvocationResult(
            value={"y": 3}, stdout="out\n", total_ms=1.5, guest_cpu_ms=1.0,
            io=IoUsage(bytes_in=10), peak_memory_bytes=1000, exits=7, first_touches=40),
        time.time(),
    )
    registry.close()
    reopened = Registry(where)
    assert reopened.recover() == ([(queued, a.id, None)], [running])
    assert reopened.invocation(a.id, running)["status"] == "interrupted"
    assert reopened.queued_invocation(queued).event == {"x": 1}
    record = reopened.invocation(a.id, done)
    assert record["result"] == {"y": 3} and record["stdout"] == "out\n"
    assert record["metrics"]["bytes_in"] == 10
    assert (record["metrics"]["exits"], record["metrics"]["first_touches"]) == (7, 40)
    b, _ = reopened.add_tenant("bob")
    assert reopened.invocation(b.id, done) is None
    assert [r["id"] for r in reopened.logs(a.id, "etl")] == [queued, running, done]
    reopened.close()


def test_a_database_from_before_schema_versions_is_migrated(tmp_path):
    from usetl.platform.registry import SCHEMA

    old = sqlite3.connect(tmp_path / "registry.db")
    old.executescript(SCHEMA)  # the tables as the first release made them, user_version 0
    old.close()
    registry = Registry(tmp_path / "registry.db")
    try:
        tenant, _ = registry.add_tenant("a")
        version = registry.add_version(tenant.id, "f", **VERSION)
        done = registry.add_invocation(version, "async", {}, "running")
        registry.finish_invocation(done, InvocationResult(unimplemented={"statx": 1}), time.time())
        assert registry.invocation(tenant.id, done)["unimplemented"] == {"statx": 1}
        assert registry.db.schema_version() == len(MIGRATIONS)
    finally:
        registry.close()


def test_usage_sums_are_numbers_of_the_same_types(registry):
    tenant, _ = registry.add_tenant("a")
    version = registry.add_version(tenant.id, "f", **VERSION)
    for n in range(3):
        registry.record_invocation(f"{n:032d}", version, {}, InvocationResult(
            value=n, total_ms=2.5, io=IoUsage(bytes_in=5 << 30, requests=2)), time.time())
    [usage] = registry.usage(tenant.id)
    assert usage == {"function": "f", "invocations": 3, "failed": 0, "duration_ms": 7.5,
                     "guest_cpu_ms": 0.0, "io_host_cpu_s": 0.0, "io_requests": 6,
                     "bytes_in": 15 << 30, "bytes_out": 0}
    assert all(type(v) is int for k, v in usage.items() if k in ("io_requests", "bytes_in"))


def test_a_newer_schema_is_refused_and_migrating_again_changes_nothing(registry, where):
    registry.close()
    again = Registry(where)  # every step already applied: none runs twice
    assert again.db.schema_version() == len(MIGRATIONS)
    again.db.migrate([*MIGRATIONS, "CREATE TABLE later (id INTEGER PRIMARY KEY);"])
    again.close()
    with pytest.raises(RegistryError, match="newer usetl"):
        Registry(where)


def test_migrations_render_for_postgres_in_wide_types():
    sql = postgres_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, at REAL);")
    assert sql == ("CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
                   "n BIGINT, at DOUBLE PRECISION);")


def test_one_bad_record_never_costs_another_tenants_record(registry):
    a, _ = registry.add_tenant("a")
    b, _ = registry.add_tenant("b")
    va = registry.add_version(a.id, "f", **VERSION)
    vb = registry.add_version(b.id, "f", **VERSION)
    ok = InvocationResult(value=1)
    # One batch: the writer waits for this lock, which record_invocation also takes.
    with registry.pending_cond:
        registry.record_invocation("a" * 32, va, {}, ok, time.time())
        registry.record_invocation("a" * 32, va, {}, ok, time.time())  # the same id again
        registry.record_invocation("b" * 32, vb, {}, ok, time.time())
    assert registry.invocation(b.id, "b" * 32)["result"] == 1
    assert registry.invocation(a.id, "a" * 32)["result"] == 1


def test_retries_callbacks_and_secrets_keep_their_json(registry):
    """The SQLite JSON functions the registry uses (json_insert, json_set, json_extract,
    json_array_length) mean the same on both databases."""
    tenant, _ = registry.add_tenant("a")
    version = registry.add_version(tenant.id, "f", **VERSION)
    invocation_id = registry.add_invocation(version, "async", {"x": 1}, "queued",
                                            "http://example.com/hook")
    registry.set_running(invocation_id, "host1")
    due = registry.retry_invocation(invocation_id, InvocationResult.failed("Timeout", "slow"),
                                    time.time(), 30.0)
    assert registry.queued_invocation(invocation_id).attempt == 2
    assert registry.invocation(tenant.id, invocation_id)["retry_at"] == due
    assert registry.recover() == ([(invocation_id, tenant.id, due)], [])  # kept: its due time
    registry.set_running(invocation_id)
    assert registry.invocation(tenant.id, invocation_id)["retry_at"] is None
    registry.finish_invocation(invocation_id, InvocationResult(value=2), time.time())
    assert registry.pending_callbacks() == [(invocation_id, tenant.id, None)]
    registry.record_callback(invocation_id, {"status": 500}, "pending", due + 1)
    assert registry.pending_callbacks() == [(invocation_id, tenant.id, due + 1)]
    assert registry.invocation(tenant.id, invocation_id)["callback"]["retry_at"] == due + 1
    registry.record_callback(invocation_id, {"status": 200}, "delivered", None)
    assert registry.pending_callbacks() == []
    record = registry.invocation(tenant.id, invocation_id)
    assert [a["error"] and a["error"]["type"] for a in record["attempts"]] == ["Timeout", None]
    assert record["callback"]["state"] == "delivered"
    assert [a["status"] for a in record["callback"]["attempts"]] == [500, 200]
    assert registry.set_secret(tenant.id, "key", b"\x00sealed\xff") is True
    assert registry.set_secret(tenant.id, "key", b"again") is False
    assert registry.sealed_secrets(tenant.id, ["key", "none"]) == {"key": b"again"}
    assert registry.delete_secret(tenant.id, "key") and not registry.delete_secret(tenant.id, "key")


def test_pipelines_are_replaced_in_place_and_recovered(registry):
    tenant, _ = registry.add_tenant("a")
    registry.put_pipeline(tenant.id, "p", [{"function": "f"}])
    assert registry.put_pipeline(tenant.id, "p", [{"function": "g"}])["stages"] == [
        {"function": "g"}]
    assert [p["name"] for p in registry.pipelines(tenant.id)] == ["p"]
    queued = registry.add_pipeline_run(tenant.id, "p", "async", "queued", {"x": 1})
    running = registry.add_pipeline_run(tenant.id, "p", "async", "running", None)
    assert registry.recover_pipeline_runs() == ([(queued, tenant.id)], 1)
    assert registry.pipeline_run(tenant.id, running)["status"] == "interrupted"
    assert registry.delete_pipeline(tenant.id, "p") and not registry.delete_pipeline(tenant.id, "p")


@pytest.mark.parametrize("rollback_first", [True, False])
def test_a_rollback_time_reaches_the_record_whichever_comes_first(registry, rollback_first):
    a, _ = registry.add_tenant("alice")
    version = registry.add_version(a.id, "etl", **VERSION)
    times = RollbackTimes(registry)
    sync = InvocationResult(value=1, total_ms=2.0, phases={"queue_ms": 0.1, "guest_ms": 2.0})
    queued = registry.add_invocation(version, "async", 2, "queued")
    done = InvocationResult(value=2, total_ms=3.0, phases={"queue_ms": 0.2, "guest_ms": 3.0})
    if rollback_first:
        times.report("s1", 1.5)
        times.report(queued, 2.5)
    times.record("s1", sync, lambda: registry.record_invocation("s1", version, 1, sync,
                                                                time.time()))
    times.record(queued, done, lambda: registry.finish_invocation(queued, done, time.time()))
    if not rollback_first:
        times.report("s1", 1.5)
        times.report(queued, 2.5)
    assert registry.invocation(a.id, "s1")["phases"] == {
        "queue_ms": 0.1, "guest_ms": 2.0, "rollback_ms": 1.5}
    assert registry.invocation(a.id, queued)["phases"] == {
        "queue_ms": 0.2, "guest_ms": 3.0, "rollback_ms": 2.5}
    assert not times.early and not times.recorded  # nothing kept once both have come


@pytest.mark.parametrize("failed", [False, True])
def test_a_sync_call_is_answered_the_record_it_leaves(registry, failed):
    a, _ = registry.add_tenant("alice")
    version = registry.add_version(a.id, "etl", **VERSION)
    outcome = InvocationResult(
        value=None if failed else {"rows": [1, 2.5, "x"], "nested": {"ok": True, "none": None}},
        error=ErrorInfo("ValueError", "bad row", "Traceback...\n") if failed else None,
        stdout="out\n", stderr="err\n", total_ms=2.0, guest_cpu_ms=1.5, exits=3,
        first_touches=4, peak_memory_bytes=1 << 20, unimplemented={"io_uring_setup": 1},
        phases={"queue_ms": 0.1, "guest_ms": 2.0},
        io=IoUsage(requests=2, bytes_in=10, bytes_out=20, host_cpu_s=0.001))
    started = time.time()
    answered = invocation_record("s1", version, "sync", outcome, started)
    registry.record_invocation("s1", version, {"e": 1}, outcome, started)
    stored = registry.invocation(a.id, "s1")
    assert answered.keys() == stored.keys()
    assert {**answered, "finished": None} == {**stored, "finished": None}
    assert started <= answered["finished"] and started <= stored["finished"]


@pytest.mark.parametrize("written", [True, False])
def test_a_rollback_time_reaches_a_record_queued_or_written(registry, written):
    a, _ = registry.add_tenant("alice")
    version = registry.add_version(a.id, "etl", **VERSION)
    sync = InvocationResult(value=1, total_ms=2.0, phases={"guest_ms": 2.0})
    with registry.pending_cond:  # the writer waits for this lock: the record stays queued
        registry.record_invocation("s1", version, 1, sync, time.time())
        registry.record_invocation("s2", version, 2, InvocationResult(value=2), time.time())
        if not written:
            registry.set_rollback_ms("s1", 1.5)
    if written:
        registry.flush()
        registry.set_rollback_ms("s1", 1.5)
    assert registry.invocation(a.id, "s1")["phases"] == {"guest_ms": 2.0, "rollback_ms": 1.5}
    assert registry.invocation(a.id, "s2")["phases"] == {}


def test_recent_invocations_and_activity_are_the_tenants_own(registry, tmp_path):
    a, _ = registry.add_tenant("alice")
    b, _ = registry.add_tenant("bob")
    va = registry.add_version(a.id, "etl", **VERSION)
    vb = registry.add_version(b.id, "etl", **VERSION)
    now = time.time()
    for i, ms in enumerate((0.5, 30.0, 4000.0)):
        registry.record_invocation(f"a{i}", va, i, InvocationResult(value=i, total_ms=ms), now)
    registry.record_invocation("b0", vb, 0, InvocationResult(value=0, total_ms=1.0), now)
    assert [r["id"] for r in registry.recent(a.id, 10)] == ["a2", "a1", "a0"]
    assert [r["id"] for r in registry.recent(a.id, 1)] == ["a2"]
    rows = registry.finished_since(a.id, now - 1)
    assert sorted(ms for _, ms, _ in rows) == [0.5, 30.0, 4000.0]
    assert registry.finished_since(b.id, now + 3600) == []
