"""The registry on a real SQLite file."""

import sqlite3
import time

import pytest

from usetl.invocation import InvocationResult, IoUsage
from usetl.platform.registry import Registry, RegistryError

VERSION = dict(
    handler="fn.py:handler", requirements=["six"], module_dirs=["/m/six"], code_dir="/c",
    memory_mib=128, timeout_s=5.0, concurrency=4, queue=0, allow=["https://example.com/"],
    env={"KEY": "secret"},
)


@pytest.fixture
def registry(tmp_path):
    r = Registry(tmp_path / "registry.db")
    yield r
    r.close()


def test_tokens_are_stored_hashed_and_resolve_to_their_tenant(registry, tmp_path):
    a, token_a = registry.add_tenant("alice")
    b, token_b = registry.add_tenant("bob")
    assert registry.tenant_for_token(token_a) == a
    assert registry.tenant_for_token(token_b) == b
    assert registry.tenant_for_token(token_a + "x") is None
    with pytest.raises(RegistryError, match="already exists"):
        registry.add_tenant("alice")
    raw = (tmp_path / "registry.db").read_bytes() + (tmp_path / "registry.db-wal").read_bytes()
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


def test_a_version_keeps_its_learned_generation_and_the_last_failure(registry, tmp_path):
    from usetl.invocation import ErrorInfo

    a, _ = registry.add_tenant("alice")
    v1 = registry.add_version(a.id, "etl", **VERSION)
    assert (v1.generation, v1.learned, v1.learn_error) == (1, [], None)
    registry.set_generation(v1.id, 2, ["fractions", "PIL.JpegImagePlugin"], None)
    failed = ErrorInfo("ImportError", "the learned import of 'x' failed", "tb", "handler")
    registry.set_generation(v1.id, 2, ["fractions", "PIL.JpegImagePlugin"], failed)
    registry.close()
    reopened = Registry(tmp_path / "registry.db")
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
        raise sqlite3.IntegrityError("boom")

    with pytest.raises(sqlite3.IntegrityError):
        registry._write(failing)
    assert [t.name for t in registry.tenants()] == ["alice"]


def test_invocations_survive_reopening_and_recover(registry, tmp_path):
    a, _ = registry.add_tenant("alice")
    v = registry.add_version(a.id, "etl", **VERSION)
    queued = registry.add_invocation(v, "async", {"x": 1}, "queued")
    running = registry.add_invocation(v, "async", {"x": 2}, "queued")
    registry.set_running(running)
    done = "d" * 32
    registry.record_invocation(
        done, v, {"x": 3}, InvocationResult(
            value={"y": 3}, stdout="out\n", total_ms=1.5, guest_cpu_ms=1.0,
            io=IoUsage(bytes_in=10), peak_memory_bytes=1000),
        time.time(),
    )
    registry.close()
    reopened = Registry(tmp_path / "registry.db")
    assert reopened.recover() == ([(queued, a.id)], [running])
    assert reopened.invocation(a.id, running)["status"] == "interrupted"
    assert reopened.queued_invocation(queued).event == {"x": 1}
    record = reopened.invocation(a.id, done)
    assert record["result"] == {"y": 3} and record["stdout"] == "out\n"
    assert record["metrics"]["bytes_in"] == 10
    b, _ = reopened.add_tenant("bob")
    assert reopened.invocation(b.id, done) is None
    assert [r["id"] for r in reopened.logs(a.id, "etl")] == [queued, running, done]
    reopened.close()


def test_a_database_from_before_schema_versions_is_migrated(tmp_path):
    import sqlite3

    from usetl.platform.registry import MIGRATIONS, SCHEMA

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
        version_now = registry.db.execute("PRAGMA user_version").fetchone()[0]
        assert version_now == len(MIGRATIONS)
    finally:
        registry.close()


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
