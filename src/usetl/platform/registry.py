"""The registry: the platform's durable state in one SQLite file.

Tenants, their tokens (only a SHA-256 of each is stored), functions and
their versions, and invocations with their results and logs (the function's
stdout and stderr). Every write is one transaction. The database runs in WAL
mode with synchronous=NORMAL: a committed row survives a crash of the server
(the case that matters for accepted asynchronous invocations), not
necessarily a power loss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from usetl.errors import UsetlError
from usetl.invocation import ErrorInfo, InvocationResult

log = logging.getLogger(__name__)
STATE_ENV = "USETL_STATE"
TOKEN_PREFIX = "usetl_"
ADMIN_TOKEN_FILE = "admin.token"

SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    admin INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS functions (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    live_version INTEGER NOT NULL,
    created REAL NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE TABLE IF NOT EXISTS versions (
    id INTEGER PRIMARY KEY,
    function_id INTEGER NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    handler TEXT NOT NULL,
    requirements TEXT NOT NULL,
    module_dirs TEXT NOT NULL,
    code_dir TEXT NOT NULL,
    memory_mib INTEGER NOT NULL,
    timeout_s REAL NOT NULL,
    concurrency INTEGER NOT NULL,
    queue INTEGER NOT NULL,
    allow TEXT NOT NULL,
    env TEXT NOT NULL,
    created REAL NOT NULL,
    UNIQUE (function_id, version)
);
CREATE TABLE IF NOT EXISTS invocations (
    id TEXT PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    function_name TEXT NOT NULL,
    version INTEGER NOT NULL,
    version_id INTEGER NOT NULL,
    mode TEXT NOT NULL,
    status TEXT NOT NULL,
    event TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    result TEXT,
    error TEXT,
    stdout TEXT NOT NULL DEFAULT '',
    stderr TEXT NOT NULL DEFAULT '',
    duration_ms REAL,
    guest_cpu_ms REAL,
    host_cpu_s REAL,
    io_requests INTEGER,
    bytes_in INTEGER,
    bytes_out INTEGER,
    peak_memory_bytes INTEGER
);
CREATE INDEX IF NOT EXISTS invocations_by_function
    ON invocations (tenant_id, function_name, created);
CREATE INDEX IF NOT EXISTS invocations_by_status ON invocations (status);
"""
# Each step brings a database from its index to the next version (PRAGMA user_version).
# The first is idempotent, so databases made before versions were kept start there.
MIGRATIONS = [
    SCHEMA,
    # The syscalls an invocation hit that a USF does not implement: {name: count}.
    "ALTER TABLE invocations ADD COLUMN unimplemented TEXT;",
    # The deployer's warm-up event (JSON), run once before the template is frozen.
    "ALTER TABLE versions ADD COLUMN warmup TEXT;",
    # How instances are reused: 'rollback' (the default) or 'warm'.
    "ALTER TABLE versions ADD COLUMN reuse TEXT NOT NULL DEFAULT 'rollback';",
]

# Invocation states: queued (async, accepted, not started), running, succeeded, failed,
# interrupted (was running when the server stopped: it may have had effects, so it is
# not re-run).
FINISHED = ("succeeded", "failed", "interrupted")


class RegistryError(UsetlError):
    """A registry operation was refused (the message says why)."""


def state_root(state_dir: Path | None = None) -> Path:
    """The state directory: the argument, else $USETL_STATE, else ~/.local/state/usetl."""
    if state_dir is not None:
        return Path(state_dir)
    env = os.environ.get(STATE_ENV)
    if env:
        return Path(env)
    return Path.home() / ".local" / "state" / "usetl"


def admin_token_file(state_dir: Path | None = None) -> Path:
    """Where `usetl serve` saves the admin tenant's token (mode 0600)."""
    return state_root(state_dir) / ADMIN_TOKEN_FILE


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Tenant:
    id: int
    name: str
    admin: bool


def version_key(tenant_id: int, name: str, version: int, code_dir: str) -> str:
    return f"{tenant_id}/{name}/{version}-{Path(code_dir).name[:8]}"


@dataclass(frozen=True)
class Version:
    id: int
    function_id: int
    tenant_id: int
    name: str
    version: int
    handler: str
    requirements: list[str]
    module_dirs: list[str]
    code_dir: str
    memory_mib: int
    timeout_s: float
    concurrency: int
    queue: int
    allow: list[str]
    env: dict[str, str]
    created: float
    warmup: str | None = None  # JSON of the warm-up event; None: frozen after the import
    reuse: str = "rollback"  # or "warm": instances keep their state between calls

    @property
    def key(self) -> str:
        """Unique for ever: a function deleted and deployed again restarts at version 1."""
        return version_key(self.tenant_id, self.name, self.version, self.code_dir)

    def public(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "handler": self.handler,
            "requirements": self.requirements,
            "memory_mib": self.memory_mib,
            "timeout_s": self.timeout_s,
            "concurrency": self.concurrency,
            "queue": self.queue,
            "allow": self.allow,
            "env": sorted(self.env),  # names only: values may be secrets
            "created": self.created,
            "warm": self.warmup is not None,  # frozen after a warm-up run of the handler
            "reuse": self.reuse,
        }


class Registry:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.lock = threading.Lock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        with self.lock:
            self._migrate()
        self.pending: list[tuple] = []  # finished sync invocations not yet written
        self.queued = self.written = 0
        self.closing = False
        self.pending_cond = threading.Condition()
        self.writer = threading.Thread(target=self._write_pending, name="registry-writer",
                                       daemon=True)
        self.writer.start()

    def close(self) -> None:
        with self.pending_cond:
            self.closing = True
            self.pending_cond.notify_all()
        self.writer.join()
        with self.lock:
            self.db.close()

    def _write(self, fn, *args):
        """Run fn(cursor, *args) in one transaction."""
        with self.lock:
            cur = self.db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                result = fn(cur, *args)
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
            return result

    def _read(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    # tenants and tokens

    def add_tenant(self, name: str, admin: bool = False) -> tuple[Tenant, str]:
        """A new tenant and its first token (the only time the token is seen)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)

        def add(cur):
            if cur.execute("SELECT 1 FROM tenants WHERE name = ?", (name,)).fetchone():
                raise RegistryError(f"tenant {name!r} already exists")
            cur.execute(
                "INSERT INTO tenants (name, admin, created) VALUES (?, ?, ?)",
                (name, int(admin), time.time()),
            )
            tenant_id = cur.lastrowid
            cur.execute(
                "INSERT INTO tokens (hash, tenant_id, created) VALUES (?, ?, ?)",
                (hash_token(token), tenant_id, time.time()),
            )
            return Tenant(tenant_id, name, admin)

        return self._write(add), token

    def tenant_for_token(self, token: str) -> Tenant | None:
        rows = self._read(
            "SELECT t.id, t.name, t.admin FROM tokens k JOIN tenants t ON t.id = k.tenant_id "
            "WHERE k.hash = ?",
            (hash_token(token),),
        )
        return Tenant(rows[0]["id"], rows[0]["name"], bool(rows[0]["admin"])) if rows else None

    def tenants(self) -> list[Tenant]:
        rows = self._read("SELECT id, name, admin FROM tenants ORDER BY id")
        return [Tenant(r["id"], r["name"], bool(r["admin"])) for r in rows]

    # functions and versions

    def add_version(
        self,
        tenant_id: int,
        name: str,
        *,
        handler: str,
        requirements: list[str],
        module_dirs: list[str],
        code_dir: str,
        memory_mib: int,
        timeout_s: float,
        concurrency: int,
        queue: int,
        allow: list[str],
        env: dict[str, str],
        warmup: str | None = None,
        reuse: str = "rollback",
    ) -> Version:
        """Record a new version of a function (created if new) and make it the live one."""

        def add(cur):
            now = time.time()
            row = cur.execute(
                "SELECT id FROM functions WHERE tenant_id = ? AND name = ?", (tenant_id, name)
            ).fetchone()
            if row is None:
                cur.execute(
                    "INSERT INTO functions (tenant_id, name, live_version, created) "
                    "VALUES (?, ?, 0, ?)",
                    (tenant_id, name, now),
                )
                function_id = cur.lastrowid
            else:
                function_id = row["id"]
            number = cur.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE function_id = ?",
                (function_id,),
            ).fetchone()[0]
            cur.execute(
                "INSERT INTO versions (function_id, version, handler, requirements, module_dirs, "
                "code_dir, memory_mib, timeout_s, concurrency, queue, allow, env, created, "
                "warmup, reuse) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    function_id, number, handler, json.dumps(requirements),
                    json.dumps(module_dirs), code_dir, memory_mib, timeout_s, concurrency,
                    queue, json.dumps(allow), json.dumps(env), now, warmup, reuse,
                ),
            )
            cur.execute(
                "UPDATE functions SET live_version = ? WHERE id = ?", (number, function_id)
            )
            return number

        number = self._write(add)
        version = self.version(tenant_id, name, number)
        assert version is not None
        return version

    _VERSION_SQL = (
        "SELECT v.*, f.tenant_id, f.name FROM versions v JOIN functions f "
        "ON f.id = v.function_id "
    )

    @staticmethod
    def _version(row: sqlite3.Row) -> Version:
        return Version(
            id=row["id"],
            function_id=row["function_id"],
            tenant_id=row["tenant_id"],
            name=row["name"],
            version=row["version"],
            handler=row["handler"],
            requirements=json.loads(row["requirements"]),
            module_dirs=json.loads(row["module_dirs"]),
            code_dir=row["code_dir"],
            memory_mib=row["memory_mib"],
            timeout_s=row["timeout_s"],
            concurrency=row["concurrency"],
            queue=row["queue"],
            allow=json.loads(row["allow"]),
            env=json.loads(row["env"]),
            created=row["created"],
            warmup=row["warmup"],
            reuse=row["reuse"],
        )

    def version(self, tenant_id: int, name: str, number: int | None = None) -> Version | None:
        """A function's version (the live one by default), or None."""
        if number is None:
            rows = self._read(
                self._VERSION_SQL + "WHERE f.tenant_id = ? AND f.name = ? "
                "AND v.version = f.live_version",
                (tenant_id, name),
            )
        else:
            rows = self._read(
                self._VERSION_SQL + "WHERE f.tenant_id = ? AND f.name = ? AND v.version = ?",
                (tenant_id, name, number),
            )
        return self._version(rows[0]) if rows else None

    def version_by_id(self, version_id: int) -> Version | None:
        rows = self._read(self._VERSION_SQL + "WHERE v.id = ?", (version_id,))
        return self._version(rows[0]) if rows else None

    def functions(self, tenant_id: int) -> list[Version]:
        """The live version of each of the tenant's functions."""
        rows = self._read(
            self._VERSION_SQL + "WHERE f.tenant_id = ? AND v.version = f.live_version "
            "ORDER BY f.name",
            (tenant_id,),
        )
        return [self._version(r) for r in rows]

    def versions(self, tenant_id: int, name: str) -> list[Version]:
        rows = self._read(
            self._VERSION_SQL + "WHERE f.tenant_id = ? AND f.name = ? ORDER BY v.version",
            (tenant_id, name),
        )
        return [self._version(r) for r in rows]

    def delete_function(self, tenant_id: int, name: str) -> list[Version]:
        """Remove a function and its versions (invocation records stay); returns the versions."""

        def delete(cur):
            rows = cur.execute(
                self._VERSION_SQL + "WHERE f.tenant_id = ? AND f.name = ?", (tenant_id, name)
            ).fetchall()
            cur.execute("DELETE FROM functions WHERE tenant_id = ? AND name = ?", (tenant_id, name))
            return [self._version(r) for r in rows]

        return self._write(delete)

    # invocations

    def add_invocation(self, version: Version, mode: str, event: Any, status: str,
                       invocation_id: str | None = None) -> str:
        invocation_id = invocation_id or uuid.uuid4().hex

        def add(cur):
            cur.execute(
                "INSERT INTO invocations (id, tenant_id, function_name, version, version_id, "
                "mode, status, event, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    invocation_id, version.tenant_id, version.name, version.version, version.id,
                    mode, status, json.dumps(event), time.time(),
                ),
            )

        self._write(add)
        return invocation_id

    def _migrate(self) -> None:
        """Bring the schema to the newest version, one step at a time (called locked)."""
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise RegistryError(f"{self.path} has schema version {version}; this usetl knows "
                                f"up to {len(MIGRATIONS)} (a newer usetl made it)")
        for step in range(version, len(MIGRATIONS)):
            self.db.executescript(f"BEGIN; {MIGRATIONS[step]} PRAGMA user_version = {step + 1};"
                                  " COMMIT;")

    def set_running(self, invocation_id: str) -> None:
        def update(cur):
            cur.execute(
                "UPDATE invocations SET status = 'running', started = ? WHERE id = ?",
                (time.time(), invocation_id),
            )

        self._write(update)

    def finish_invocation(self, invocation_id: str, outcome: InvocationResult,
                          started: float) -> None:
        """Store an invocation's result."""
        self._write(lambda cur: cur.execute(_FINISH_SQL, _finish_args(outcome, started)
                                            + (invocation_id,)))

    def record_invocation(self, invocation_id: str, version: Version, event: Any,
                          outcome: InvocationResult, started: float) -> None:
        """A finished synchronous invocation (its caller has the result already).

        Queued and written with others in one transaction by a writer thread: one commit
        per batch, not per invocation. Reads of invocations wait for the queue first.
        """
        row = (invocation_id, version.tenant_id, version.name, version.version, version.id,
               json.dumps(event), started, *_finish_args(outcome, started))
        with self.pending_cond:
            self.pending.append(row)
            self.queued += 1
            self.pending_cond.notify_all()

    def _write_pending(self) -> None:
        while True:
            with self.pending_cond:
                while not self.pending and not self.closing:
                    self.pending_cond.wait()
                if not self.pending:
                    return
                batch, self.pending = self.pending, []
            self._write_batch(batch)
            with self.pending_cond:
                self.written += len(batch)
                self.pending_cond.notify_all()

    def _write_batch(self, batch: list[tuple]) -> None:
        """One transaction for the batch; if it fails, each record alone, so that one bad
        record (another tenant's, perhaps) costs only itself."""
        try:
            self._write(lambda cur, rows: cur.executemany(_RECORD_SQL, rows), batch)
            return
        except sqlite3.Error:
            pass
        for row in batch:
            try:
                self._write(lambda cur, r: cur.execute(_RECORD_SQL, r), row)
            except sqlite3.Error:
                log.exception("lost the record of invocation %s", row[0])

    def flush(self) -> None:
        """Wait until every recorded invocation is in the database."""
        with self.pending_cond:
            target = self.queued
            while self.written < target:
                self.pending_cond.wait()

    def invocation(self, tenant_id: int, invocation_id: str) -> dict | None:
        self.flush()
        rows = self._read(
            "SELECT * FROM invocations WHERE id = ? AND tenant_id = ?", (invocation_id, tenant_id)
        )
        return _invocation(rows[0]) if rows else None

    def logs(self, tenant_id: int, name: str, limit: int = 20,
             before: float | None = None) -> list[dict]:
        """The latest `limit` invocations, oldest first; `before` pages back (created < it)."""
        self.flush()
        rows = self._read(
            "SELECT * FROM invocations WHERE tenant_id = ? AND function_name = ? "
            "AND created < ? ORDER BY created DESC LIMIT ?",
            (tenant_id, name, float("inf") if before is None else before, limit),
        )
        return [_invocation(r) for r in reversed(rows)]

    def usage(self, tenant_id: int, since: float = 0.0) -> list[dict]:
        """Per function: what the tenant's invocations used since `since` (for billing)."""
        self.flush()
        rows = self._read(
            "SELECT function_name, COUNT(*) AS invocations, "
            "SUM(status = 'failed') AS failed, "
            "COALESCE(SUM(duration_ms), 0) AS duration_ms, "
            "COALESCE(SUM(guest_cpu_ms), 0) AS guest_cpu_ms, "
            "COALESCE(SUM(host_cpu_s), 0) AS io_host_cpu_s, "
            "COALESCE(SUM(io_requests), 0) AS io_requests, "
            "COALESCE(SUM(bytes_in), 0) AS bytes_in, COALESCE(SUM(bytes_out), 0) AS bytes_out "
            "FROM invocations WHERE tenant_id = ? AND created >= ? "
            "GROUP BY function_name ORDER BY function_name",
            (tenant_id, since),
        )
        return [{"function": r["function_name"], **{k: r[k] for k in r.keys()[1:]}}
                for r in rows]

    def recover(self) -> tuple[list[tuple[str, int]], list[str]]:
        """After a restart: queued async invocations to re-run (id, tenant id), and running
        ones now interrupted.

        A queued invocation never started, so running it now is what the caller asked for;
        one that was running may have had effects (posts), so it is marked interrupted.
        """

        def recover(cur):
            queued = [
                (r["id"], r["tenant_id"]) for r in cur.execute(
                    "SELECT id, tenant_id FROM invocations WHERE status = 'queued' "
                    "ORDER BY created"
                )
            ]
            running = [
                r["id"] for r in cur.execute("SELECT id FROM invocations WHERE status = 'running'")
            ]
            cur.execute(
                "UPDATE invocations SET status = 'interrupted', finished = ?, error = ? "
                "WHERE status = 'running'",
                (time.time(), json.dumps({
                    "type": "Interrupted",
                    "message": "the server stopped while this invocation ran; it was not re-run",
                    "traceback": "",
                })),
            )
            return queued, running

        return self._write(recover)

    def queued_invocation(self, invocation_id: str) -> tuple[Version | None, Any] | None:
        """A queued invocation's version (None if it was deleted since) and event."""
        rows = self._read(
            "SELECT version_id, event FROM invocations WHERE id = ? AND status = 'queued'",
            (invocation_id,),
        )
        if not rows:
            return None
        return self.version_by_id(rows[0]["version_id"]), json.loads(rows[0]["event"])

    def queued_count(self, tenant_id: int, name: str) -> int:
        """Asynchronous invocations of a function accepted and not yet started."""
        return self._read(
            "SELECT COUNT(*) AS n FROM invocations WHERE tenant_id = ? AND function_name = ? "
            "AND status = 'queued'", (tenant_id, name))[0]["n"]

    def fail_invocation(self, invocation_id: str, error: ErrorInfo) -> None:
        def update(cur):
            cur.execute(
                "UPDATE invocations SET status = 'failed', finished = ?, error = ? WHERE id = ?",
                (time.time(), json.dumps(error.as_dict()), invocation_id),
            )

        self._write(update)


_RECORD_SQL = (
    "INSERT INTO invocations (id, tenant_id, function_name, version, version_id, mode, event, "
    "created, status, started, finished, result, error, stdout, stderr, duration_ms, "
    "guest_cpu_ms, host_cpu_s, io_requests, bytes_in, bytes_out, peak_memory_bytes, "
    "unimplemented) VALUES (?, ?, ?, ?, ?, 'sync', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
    "?, ?)"
)
_FINISH_SQL = (
    "UPDATE invocations SET status = ?, started = COALESCE(started, ?), finished = ?, "
    "result = ?, error = ?, stdout = ?, stderr = ?, duration_ms = ?, guest_cpu_ms = ?, "
    "host_cpu_s = ?, io_requests = ?, bytes_in = ?, bytes_out = ?, peak_memory_bytes = ?, "
    "unimplemented = ? WHERE id = ?"
)


def _result_columns(result: InvocationResult, started: float, finished: float) -> dict:
    """The invocations table's columns for a finished result, in _FINISH_SQL's order."""
    io = result.io
    return {
        "status": "succeeded" if result.error is None else "failed",
        "started": started, "finished": finished, "result": json.dumps(result.value),
        "error": None if result.error is None else json.dumps(result.error.as_dict()),
        "stdout": result.stdout, "stderr": result.stderr, "duration_ms": result.total_ms,
        "guest_cpu_ms": result.guest_cpu_ms, "host_cpu_s": io.host_cpu_s,
        "io_requests": io.requests, "bytes_in": io.bytes_in, "bytes_out": io.bytes_out,
        "peak_memory_bytes": result.peak_memory_bytes,
        "unimplemented": json.dumps(result.unimplemented),
    }


def _finish_args(result: InvocationResult, started: float) -> tuple:
    return tuple(_result_columns(result, started, time.time()).values())


def invocation_record(invocation_id: str, version: Version, mode: str,
                      result: InvocationResult, created: float) -> dict:
    """The record of a finished invocation as the API shows it (a sync call's answer)."""
    row = _result_columns(result, created, time.time())
    row.update(id=invocation_id, function_name=version.name, version=version.version,
               mode=mode, created=created)
    return _invocation(row)


def _invocation(row: Mapping[str, Any]) -> dict:
    return {
        "id": row["id"],
        "function": row["function_name"],
        "version": row["version"],
        "mode": row["mode"],
        "status": row["status"],
        "created": row["created"],
        "started": row["started"],
        "finished": row["finished"],
        "result": json.loads(row["result"]) if row["result"] is not None else None,
        "error": json.loads(row["error"]) if row["error"] is not None else None,
        "stdout": row["stdout"],
        "stderr": row["stderr"],
        "metrics": {
            "duration_ms": row["duration_ms"],
            "guest_cpu_ms": row["guest_cpu_ms"],
            "host_cpu_s": row["host_cpu_s"],
            "io_requests": row["io_requests"],
            "bytes_in": row["bytes_in"],
            "bytes_out": row["bytes_out"],
            "peak_memory_bytes": row["peak_memory_bytes"],
        },
        # Syscalls the guest made that a USF does not implement (ENOSYS), by name.
        "unimplemented": json.loads(row["unimplemented"] or "{}"),
    }
