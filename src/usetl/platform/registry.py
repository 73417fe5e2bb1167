"""The registry: the platform's durable state, in SQLite (one host) or PostgreSQL.

Tenants, their tokens (only a SHA-256 of each is stored), functions and
their versions, and invocations with their results and logs (the function's
stdout and stderr). Every write is one transaction. `Registry(path)` is a
SQLite file in WAL mode with synchronous=NORMAL: a committed row survives a
crash of the server (the case that matters for accepted asynchronous
invocations), not necessarily a power loss. `Registry("postgresql://...")` is
the same registry in PostgreSQL, for several hosts (`usetl gateway`, `usetl
worker`); the platform does not know which it has. `database.py` says which
SQL both accept.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from usetl.errors import UsetlError
from usetl.invocation import ErrorInfo, InvocationResult

from .database import SchemaTooNew, open_database

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
# Each step brings a database from its index to the next version (PRAGMA user_version in
# SQLite, the schema_version table in PostgreSQL). Steps are written in SQLite's dialect
# (INTEGER, REAL, TEXT; database.postgres_sql renders them for PostgreSQL), so a table or
# column appended here reaches both databases. The first is idempotent, so databases made
# before versions were kept start there.
MIGRATIONS = [
    SCHEMA,
    # The syscalls an invocation hit that a USF does not implement: {name: count}.
    "ALTER TABLE invocations ADD COLUMN unimplemented TEXT;",
    # The deployer's warm-up event (JSON), run once before the template is frozen.
    "ALTER TABLE versions ADD COLUMN warmup TEXT;",
    # How instances are reused: 'rollback' (the default) or 'warm'.
    "ALTER TABLE versions ADD COLUMN reuse TEXT NOT NULL DEFAULT 'rollback';",
    # Schedules (platform/schedule.py): a function fired on a cron expression with an event.
    # next_tick is the tick to fire next; a scheduler takes it by a conditional update, so
    # of several servers sharing the registry one fires it. What started an invocation
    # (JSON; NULL: an API call) is recorded with it.
    """
    CREATE TABLE schedules (
        id TEXT PRIMARY KEY,
        tenant_id INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        function_name TEXT NOT NULL,
        cron TEXT NOT NULL,
        event TEXT NOT NULL,
        created REAL NOT NULL,
        next_tick REAL NOT NULL,
        last_tick REAL
    );
    CREATE INDEX schedules_by_tick ON schedules (next_tick);
    ALTER TABLE invocations ADD COLUMN trigger TEXT;
    """,
    # Async work: per-version retries of failed async invocations with exponential back-off,
    # each failed attempt kept (JSON list); a callback URL POSTed the record when it is done,
    # its delivery attempts kept (JSON).
    """
    ALTER TABLE versions ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE versions ADD COLUMN retry_backoff_s REAL NOT NULL DEFAULT 1.0;
    ALTER TABLE invocations ADD COLUMN attempts TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE invocations ADD COLUMN callback TEXT;
    CREATE INDEX invocations_failed ON invocations (tenant_id, mode, status, finished);
    CREATE INDEX invocations_callback_pending ON invocations (finished)
        WHERE callback IS NOT NULL AND json_extract(callback, '$.state') = 'pending';
    """,
    # Secrets (platform/secrets.py): per tenant, AES-GCM under a key kept outside this file;
    # a version names the secrets its invocations are given (JSON list).
    """
    CREATE TABLE secrets (
        tenant_id INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        sealed BLOB NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (tenant_id, name)
    );
    ALTER TABLE versions ADD COLUMN secrets TEXT NOT NULL DEFAULT '[]';
    """,
    # `usetl logs -f` follows invocations by the time they finished.
    "CREATE INDEX invocations_by_finish ON invocations (tenant_id, function_name, finished);",
    # Pipelines (platform/pipeline.py): ordered stages, and runs, each with its stages' records.
    """
    CREATE TABLE IF NOT EXISTS pipelines (
        id INTEGER PRIMARY KEY,
        tenant_id INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        stages TEXT NOT NULL,
        created REAL NOT NULL,
        UNIQUE (tenant_id, name)
    );
    CREATE TABLE IF NOT EXISTS pipeline_runs (
        id TEXT PRIMARY KEY,
        tenant_id INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        pipeline TEXT NOT NULL,
        mode TEXT NOT NULL,
        status TEXT NOT NULL,
        event TEXT,
        result TEXT,
        error TEXT,
        stages TEXT NOT NULL DEFAULT '[]',
        created REAL NOT NULL,
        finished REAL
    );
    CREATE INDEX IF NOT EXISTS pipeline_runs_by_status ON pipeline_runs (status);
    """,
    # The learned template generation (platform/learning.py): its number, the modules it
    # imports beyond the function's (JSON list), and why building the next one failed.
    "ALTER TABLE versions ADD COLUMN generation INTEGER NOT NULL DEFAULT 1;"
    " ALTER TABLE versions ADD COLUMN learned TEXT NOT NULL DEFAULT '[]';"
    " ALTER TABLE versions ADD COLUMN learn_error TEXT;",
    # The worker that ran the invocation (several hosts; NULL on one).
    "ALTER TABLE invocations ADD COLUMN host TEXT;",
    # Where an invocation's time went, as the host measured it (platform/pool.py: PHASES):
    # JSON {phase: ms}; the rollback's is added after the answer.
    """
    ALTER TABLE invocations ADD COLUMN phases TEXT;
    CREATE INDEX invocations_by_tenant_finish ON invocations (tenant_id, finished);
    """,
    # What became of a schedule's last tick (JSON: {"tick", "invocation"}, or {"tick",
    # "refused": {"code", "message"}} where the function's queue was full), and how many of
    # its ticks were refused so; when a queued async invocation waiting out a retry's
    # back-off is due, and when its callback's next attempt is (NULL: at once), so that a
    # restart resumes them then; a pipeline's runs listed by pipeline.
    """
    ALTER TABLE schedules ADD COLUMN last_outcome TEXT;
    ALTER TABLE schedules ADD COLUMN refused_ticks INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE invocations ADD COLUMN retry_at REAL;
    ALTER TABLE invocations ADD COLUMN callback_retry_at REAL;
    CREATE INDEX pipeline_runs_by_pipeline ON pipeline_runs (tenant_id, pipeline, created);
    """,
    # An invocation's VM exits to the monitor and the first touches KVM fixed on its own (a
    # USF's; 0 on the process backend): counts that do not move with the host's load.
    "ALTER TABLE invocations ADD COLUMN exits INTEGER;"
    " ALTER TABLE invocations ADD COLUMN first_touches INTEGER;",
]

# Invocation states: queued (async, accepted, not started), running, succeeded, failed,
# interrupted (was running when the server stopped: it may have had effects, so it is
# not re-run).
FINISHED = ("succeeded", "failed", "interrupted")
RECORD_DELAY_S = 0.025  # a queued record waits this long for others to share its commit


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
    retries: int = 0  # of a failed async invocation (service.RETRIED_KINDS say which)
    retry_backoff_s: float = 1.0  # before the first retry; doubled before each next one
    secrets: list[str] = field(default_factory=list)  # names given to each invocation
    generation: int = 1  # the template generation serving (learned templates)
    learned: list[str] = field(default_factory=list)  # modules it imports beyond the function
    learn_error: ErrorInfo | None = None  # why the next generation could not be built

    @property
    def waiting_limit(self) -> int:
        """How many accepted async invocations may wait: as many as may wait on sync calls
        (those running and those queued behind them)."""
        return self.concurrency + self.queue

    @functools.cached_property  # read on every invocation's path
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
            "retries": self.retries,
            "retry_backoff_s": self.retry_backoff_s,
            "secrets": self.secrets,  # names only
            "generation": self.generation,
            "learned_modules": self.learned,
            "learn_error": None if self.learn_error is None else self.learn_error.as_dict(),
        }


class Registry:
    """The platform's only view of its durable state; every method is one transaction (or
    one read) in whichever database `where` names."""

    def __init__(self, where: Path | str):
        """`where`: a SQLite file's path, or a postgresql:// URL."""
        self.db = open_database(where)
        try:
            self.db.migrate(MIGRATIONS)
        except SchemaTooNew as e:
            self.db.close()
            raise RegistryError(str(e)) from e
        # Writes not made yet, in order, as (SQL, arguments): finished sync invocations (their
        # records encoded by the writer), and the rollback times that follow them; each
        # invocation's queued record.
        self.pending: list[tuple[str, tuple | _QueuedRecord]] = []
        self.pending_records: dict[str, _QueuedRecord] = {}
        self.queued = self.written = 0
        self.closing = False
        self.writer_idle = False  # waiting for a write, which then wakes it
        self.hurried = False  # a reader waits for the queue: write it now
        self.pending_cond = threading.Condition()
        self.writer = threading.Thread(target=self._write_pending, name="registry-writer",
                                       daemon=True)
        self.writer.start()

    def close(self) -> None:
        with self.pending_cond:
            self.closing = True
            self.pending_cond.notify_all()
        self.writer.join()
        self.db.close()

    def _write(self, fn, *args):
        """Run fn(cursor, *args) in one transaction."""
        return self.db.transaction(fn, *args)

    def _read(self, sql: str, args: tuple = ()) -> list:
        """Rows whose columns are read by name (row["id"]) in both databases."""
        return self.db.query(sql, args)

    # tenants and tokens

    def add_tenant(self, name: str, admin: bool = False) -> tuple[Tenant, str]:
        """A new tenant and its first token (the only time the token is seen)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)

        def add(cur):
            if cur.execute("SELECT 1 FROM tenants WHERE name = ?", (name,)).fetchone():
                raise RegistryError(f"tenant {name!r} already exists")
            tenant_id = cur.execute(
                "INSERT INTO tenants (name, admin, created) VALUES (?, ?, ?) RETURNING id",
                (name, int(admin), time.time()),
            ).fetchone()["id"]
            cur.execute(
                "INSERT INTO tokens (hash, tenant_id, created) VALUES (?, ?, ?)",
                (hash_token(token), tenant_id, time.time()),
            )
            return Tenant(tenant_id, name, admin)

        try:
            return self._write(add), token
        except self.db.integrity_error as e:  # another gateway added it meanwhile
            raise RegistryError(f"tenant {name!r} already exists") from e

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
        retries: int = 0,
        retry_backoff_s: float = 1.0,
        secrets: list[str] | None = None,
    ) -> Version:
        """Record a new version of a function (created if new) and make it the live one."""

        def add(cur):
            now = time.time()
            row = cur.execute(
                "SELECT id FROM functions WHERE tenant_id = ? AND name = ?", (tenant_id, name)
            ).fetchone()
            if row is None:
                function_id = cur.execute(
                    "INSERT INTO functions (tenant_id, name, live_version, created) "
                    "VALUES (?, ?, 0, ?) RETURNING id",
                    (tenant_id, name, now),
                ).fetchone()["id"]
            else:
                function_id = row["id"]
            number = cur.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 AS next FROM versions "
                "WHERE function_id = ?", (function_id,),
            ).fetchone()["next"]
            cur.execute(
                _ADD_VERSION_SQL,
                (
                    function_id, number, handler, json.dumps(requirements),
                    json.dumps(module_dirs), code_dir, memory_mib, timeout_s, concurrency,
                    queue, json.dumps(allow), json.dumps(env), now, warmup, reuse, retries,
                    retry_backoff_s, json.dumps(secrets or []),
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
    def _version(row: Mapping[str, Any]) -> Version:
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
            retries=row["retries"],
            retry_backoff_s=row["retry_backoff_s"],
            secrets=json.loads(row["secrets"]),
            generation=row["generation"],
            learned=json.loads(row["learned"]),
            learn_error=(None if row["learn_error"] is None
                         else ErrorInfo(**json.loads(row["learn_error"]))),
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

    def set_generation(self, version_id: int, generation: int, learned: list[str],
                       error: ErrorInfo | None) -> None:
        """Record the template generation a version serves, and a failed attempt at the next."""
        def update(cur):
            cur.execute(
                "UPDATE versions SET generation = ?, learned = ?, learn_error = ? WHERE id = ?",
                (generation, json.dumps(learned),
                 None if error is None else json.dumps(error.as_dict()), version_id),
            )

        self._write(update)

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
            cur.execute("DELETE FROM schedules WHERE tenant_id = ? AND function_name = ?",
                        (tenant_id, name))
            return [self._version(r) for r in rows]

        return self._write(delete)

    # invocations

    def add_invocation(self, version: Version, mode: str, event: Any, status: str,
                       callback_url: str | None = None) -> str:
        """A new invocation record; a callback URL is POSTed the record once it is done."""
        invocation_id = uuid.uuid4().hex
        callback = None if callback_url is None else json.dumps(
            {"url": callback_url, "state": "pending", "attempts": []})
        self._write(lambda cur: cur.execute(_ADD_SQL, (
            invocation_id, version.tenant_id, version.name, version.version, version.id,
            mode, status, json.dumps(event), time.time(), None, callback)))
        return invocation_id

    # schedules

    def add_schedule(self, tenant_id: int, function: str, cron: str, event: Any,
                     next_tick: float) -> Schedule:
        """A schedule of an existing function; RegistryError if there is no such function."""
        schedule_id = secrets.token_hex(8)
        now = time.time()

        def add(cur):
            if cur.execute("SELECT 1 FROM functions WHERE tenant_id = ? AND name = ?",
                           (tenant_id, function)).fetchone() is None:
                raise RegistryError(f"no function {function!r}")
            cur.execute(
                "INSERT INTO schedules (id, tenant_id, function_name, cron, event, created, "
                "next_tick) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (schedule_id, tenant_id, function, cron, json.dumps(event), now, next_tick))

        self._write(add)
        return Schedule(schedule_id, tenant_id, function, cron, event, now, next_tick, None)

    def schedules(self, tenant_id: int) -> list[Schedule]:
        """A tenant's schedules, oldest first."""
        rows = self._read("SELECT * FROM schedules WHERE tenant_id = ? ORDER BY created",
                          (tenant_id,))
        return [_schedule(r) for r in rows]

    def delete_schedule(self, tenant_id: int, schedule_id: str) -> bool:
        return self._write(lambda cur: cur.execute(
            "DELETE FROM schedules WHERE tenant_id = ? AND id = ?",
            (tenant_id, schedule_id)).rowcount) == 1

    def due_schedules(self, now: float) -> list[Schedule]:
        rows = self._read("SELECT * FROM schedules WHERE next_tick <= ? ORDER BY next_tick",
                          (now,))
        return [_schedule(r) for r in rows]

    def next_tick(self) -> float | None:
        """The earliest tick any schedule waits for."""
        return self._read("SELECT MIN(next_tick) AS t FROM schedules")[0]["t"]

    def claim_tick(self, schedule: Schedule, tick: float, following: float,
                   trigger: dict) -> Tick | None:
        """Take `tick` of the schedule and queue its invocation, in one transaction.

        The conditional update moves next_tick on only if no other scheduler sharing this
        registry has taken it since `schedule` was read: one of them gets the Tick, the
        others None. The invocation's id is the tick's own, so a tick is one invocation. A
        tick obeys the function's waiting limit as an async call does: with the queue full
        it is refused (no invocation), and the schedule keeps why.
        """
        invocation_id = uuid.uuid5(uuid.NAMESPACE_URL,
                                   f"usetl:schedule/{schedule.id}/{tick:.3f}").hex

        def claim(cur) -> Tick | None:
            if not cur.execute(
                    "UPDATE schedules SET next_tick = ?, last_tick = ? WHERE id = ? "
                    "AND next_tick = ?",
                    (following, tick, schedule.id, schedule.next_tick)).rowcount:
                return None
            live = cur.execute(self._VERSION_SQL + "WHERE f.tenant_id = ? AND f.name = ? AND "
                               "v.version = f.live_version",
                               (schedule.tenant_id, schedule.function)).fetchone()
            version = None if live is None else self._version(live)
            refused = _refused_tick(cur, schedule, version)
            if refused is not None:
                outcome = Tick(tick, None, refused)
                cur.execute("UPDATE schedules SET last_outcome = ?, refused_ticks = "
                            "refused_ticks + 1 WHERE id = ?",
                            (json.dumps(outcome.public()), schedule.id))
                return outcome
            assert version is not None
            cur.execute(_ADD_SQL, (
                invocation_id, version.tenant_id, version.name, version.version, version.id,
                "async", "queued", json.dumps(schedule.event), time.time(), json.dumps(trigger),
                None))
            outcome = Tick(tick, invocation_id, None)
            cur.execute("UPDATE schedules SET last_outcome = ? WHERE id = ?",
                        (json.dumps(outcome.public()), schedule.id))
            return outcome

        return self._write(claim)

    # secrets (sealed: usetl.platform.secrets encrypts and decrypts them)

    def set_secret(self, tenant_id: int, name: str, sealed: bytes) -> bool:
        """Store a sealed secret; True if it is new, False if it replaced one."""
        now = time.time()

        def store(cur):
            replaced = cur.execute(
                "UPDATE secrets SET sealed = ?, updated = ? WHERE tenant_id = ? AND name = ?",
                (sealed, now, tenant_id, name)).rowcount
            if not replaced:
                cur.execute("INSERT INTO secrets (tenant_id, name, sealed, created, updated) "
                            "VALUES (?, ?, ?, ?, ?)", (tenant_id, name, sealed, now, now))
            return not replaced

        return self._write(store)

    def secret_names(self, tenant_id: int) -> list[dict]:
        rows = self._read("SELECT name, created, updated FROM secrets WHERE tenant_id = ? "
                          "ORDER BY name", (tenant_id,))
        return [dict(r) for r in rows]

    def sealed_secrets(self, tenant_id: int, names: list[str]) -> dict[str, bytes]:
        """The sealed values of those of `names` the tenant has."""
        marks = ", ".join("?" * len(names))
        rows = self._read(f"SELECT name, sealed FROM secrets WHERE tenant_id = ? AND name IN "
                          f"({marks})", (tenant_id, *names)) if names else []
        return {r["name"]: bytes(r["sealed"]) for r in rows}

    def delete_secret(self, tenant_id: int, name: str) -> bool:
        return self._write(lambda cur: cur.execute(
            "DELETE FROM secrets WHERE tenant_id = ? AND name = ?",
            (tenant_id, name)).rowcount) == 1

    def set_running(self, invocation_id: str, host: str | None = None) -> None:
        """It has a sandbox now (on `host`, where several hosts serve)."""

        def update(cur):
            cur.execute(
                "UPDATE invocations SET status = 'running', started = ?, host = ?, "
                "retry_at = NULL WHERE id = ?",
                (time.time(), host, invocation_id),
            )

        self._write(update)

    def finish_invocation(self, invocation_id: str, outcome: InvocationResult,
                          started: float) -> None:
        """Store an async invocation's result, its last attempt."""

        def finish(cur):
            args = _finish_args(outcome, started)
            cur.execute(_FINISH_SQL, args + (invocation_id,))
            cur.execute(_ATTEMPT_SQL, (json.dumps(_attempt(outcome, started, args[2])),
                                       invocation_id))

        self._write(finish)

    def retry_invocation(self, invocation_id: str, outcome: InvocationResult,
                         started: float, backoff_s: float) -> float:
        """A failed attempt that will be retried after `backoff_s`: kept in `attempts`, the
        invocation queued again (its error is the attempt's until the next one ends) and
        due at the time answered, kept as `retry_at` so that a restart waits for it too."""
        attempt = _attempt(outcome, started, time.time())
        retry_at = attempt["finished"] + backoff_s

        def retry(cur):
            cur.execute("UPDATE invocations SET status = 'queued', started = NULL, error = ?, "
                        "retry_at = ? WHERE id = ?",
                        (json.dumps(attempt["error"]), retry_at, invocation_id))
            cur.execute(_ATTEMPT_SQL, (json.dumps(attempt), invocation_id))

        self._write(retry)
        return retry_at

    def record_callback(self, invocation_id: str, attempt: dict, state: str,
                        retry_at: float | None) -> None:
        """One delivery attempt of the invocation's callback, and where delivery stands:
        pending (to be tried again at `retry_at`), delivered or failed (attempts spent)."""
        self._write(lambda cur: cur.execute(
            "UPDATE invocations SET callback = json_set(json_insert(callback, '$.attempts[#]', "
            "json(?)), '$.state', ?), callback_retry_at = ? WHERE id = ?",
            (json.dumps(attempt), state, retry_at, invocation_id)))

    def pending_callbacks(self) -> list[tuple[str, int, float | None]]:
        """Finished invocations whose callback is not delivered yet: (id, tenant id, when
        the next attempt is due; None: the first, at once)."""
        rows = self._read(  # the partial index holds just the pending ones
            "SELECT id, tenant_id, status, callback_retry_at FROM invocations WHERE callback "
            "IS NOT NULL AND json_extract(callback, '$.state') = 'pending' ORDER BY finished")
        return [(r["id"], r["tenant_id"], r["callback_retry_at"]) for r in rows
                if r["status"] in FINISHED]

    def record_invocation(self, invocation_id: str, version: Version, event: Any,
                          outcome: InvocationResult, started: float,
                          host: str | None = None) -> None:
        """A finished synchronous invocation (its caller has the result already).

        Queued and written with others in one transaction by a writer thread: one commit
        per batch, not per invocation. Reads of invocations wait for the queue first.
        """
        record = _QueuedRecord(invocation_id, version, event, outcome, started, time.time(),
                               host)
        with self.pending_cond:
            self.pending_records[invocation_id] = record
            self._queue_write(_RECORD_SQL, record)

    def _queue_write(self, sql: str, args: tuple) -> None:
        with self.pending_cond:
            self.pending.append((sql, args))
            self.queued += 1
            if self.writer_idle:  # a busy writer looks again by itself: no wake-up to pay
                self.writer_idle = False
                self.pending_cond.notify_all()

    def _write_pending(self) -> None:
        """Each round: a moment for more writes to share a commit, then the batch. A round
        that found none leaves the writer idle, woken by the next write; while writes keep
        coming it is never woken (waking another thread is paid by the caller that queued
        the write: the API's event loop, on an invocation's path)."""
        while True:
            with self.pending_cond:
                self._delay()
                if not self.pending:
                    if self.closing:
                        return
                    self.writer_idle = True
                    while self.writer_idle and not self.closing:
                        self.pending_cond.wait()
                    continue
                batch, self.pending = self.pending, []
                self.pending_records = {}
                self.hurried = False
            self._write_batch(batch)
            with self.pending_cond:
                self.written += len(batch)
                self.pending_cond.notify_all()

    def _delay(self) -> None:
        """(The lock held.) RECORD_DELAY_S, unless closing or a reader waits: a moment for
        more writes (one commit for a burst), and for the answer that queued the first one
        to be on its way: the database's work here and in its server would compete with it
        for the CPU (on a cluster's worker, the answer still crosses NATS and a gateway)."""
        due = time.monotonic() + RECORD_DELAY_S
        while not (self.closing or self.hurried) and (left := due - time.monotonic()) > 0:
            self.pending_cond.wait(left)

    def _write_batch(self, queued: list[tuple[str, tuple | _QueuedRecord]]) -> None:
        """One transaction for the batch; if it fails, each write alone, so that one bad
        record (another tenant's, perhaps) costs only itself."""
        batch = []
        for sql, args in queued:
            try:
                batch.append((sql, args.arguments() if isinstance(args, _QueuedRecord)
                              else args))
            except (TypeError, ValueError):  # not JSON: it cannot be stored
                log.exception("lost the record of invocation %s", args.invocation_id)

        def write_all(cur):
            for sql, args in batch:
                cur.execute(sql, args)

        try:
            self._write(write_all)
            return
        except self.db.errors:
            pass
        for sql, args in batch:
            try:
                self._write(lambda cur, q, a: cur.execute(q, a), sql, args)
            except self.db.errors:
                what = "the record" if sql == _RECORD_SQL else "the rollback time"
                log.exception("lost %s of invocation %s", what, args[0 if sql == _RECORD_SQL
                                                                    else 1])

    def flush(self) -> None:
        """Wait until every recorded invocation is in the database (the writer's delay cut
        short)."""
        with self.pending_cond:
            target = self.queued
            if self.written < target:
                self.hurried = True
                self.pending_cond.notify_all()
            while self.written < target:
                self.pending_cond.wait()

    def invocation(self, tenant_id: int, invocation_id: str) -> dict | None:
        self.flush()
        rows = self._read(
            "SELECT * FROM invocations WHERE id = ? AND tenant_id = ?", (invocation_id, tenant_id)
        )
        return _invocation(rows[0]) if rows else None

    def logs(self, tenant_id: int, name: str, limit: int = 20,
             before: float | None = None, after: float | None = None) -> list[dict]:
        """The latest `limit` invocations, oldest first; `before` pages back (created < it).

        With `after`: the first `limit` invocations that finished after it, in the order they
        finished (how `usetl logs -f` follows a function).
        """
        self.flush()
        if after is not None:
            rows = self._read(
                "SELECT * FROM invocations WHERE tenant_id = ? AND function_name = ? "
                "AND finished > ? ORDER BY finished LIMIT ?", (tenant_id, name, after, limit))
            return [_invocation(r) for r in rows]
        rows = self._read(
            "SELECT * FROM invocations WHERE tenant_id = ? AND function_name = ? "
            "AND created < ? ORDER BY created DESC LIMIT ?",
            (tenant_id, name, float("inf") if before is None else before, limit),
        )
        return [_invocation(r) for r in reversed(rows)]

    def set_rollback_ms(self, invocation_id: str, ms: float) -> None:
        """The rollback that followed an invocation, measured after its record was written,
        or queued: then it goes into the queued record (no write of its own)."""
        with self.pending_cond:
            record = self.pending_records.get(invocation_id)
            if record is None:
                self._queue_write(_ROLLBACK_SQL, (json.dumps(ms), invocation_id))
            else:
                record.rollback_ms = ms

    def recent(self, tenant_id: int, limit: int = 50) -> list[dict]:
        """The tenant's latest finished invocations of every function, the latest first."""
        self.flush()
        rows = self._read(
            "SELECT * FROM invocations WHERE tenant_id = ? AND finished IS NOT NULL "
            "ORDER BY finished DESC LIMIT ?", (tenant_id, limit))
        return [_invocation(r) for r in rows]

    def finished_since(self, tenant_id: int, since: float) -> list[tuple[float, float, str]]:
        """(finished, duration_ms, status) of the tenant's invocations finished since then."""
        self.flush()
        rows = self._read(
            "SELECT finished, duration_ms, status FROM invocations WHERE tenant_id = ? AND "
            "finished >= ? ORDER BY finished", (tenant_id, since))
        return [(r["finished"], r["duration_ms"] or 0.0, r["status"]) for r in rows]

    def failed_async(self, tenant_id: int, function: str | None = None,
                     limit: int = 100) -> list[dict]:
        """The dead letters: async invocations that failed for good (retries spent, or an
        error that is not retried), the latest first."""
        rows = self._read(
            "SELECT * FROM invocations WHERE tenant_id = ? AND mode = 'async' AND status = "
            "'failed' AND (? IS NULL OR function_name = ?) ORDER BY finished DESC LIMIT ?",
            (tenant_id, function, function, limit))
        return [_invocation(r) for r in rows]

    def usage(self, tenant_id: int, since: float = 0.0) -> list[dict]:
        """Per function: what the tenant's invocations used since `since` (for billing)."""
        self.flush()
        rows = self._read(
            # PostgreSQL sums integers as NUMERIC: the casts keep them integers.
            "SELECT function_name, COUNT(*) AS invocations, "
            "CAST(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS BIGINT) AS failed, "
            "COALESCE(SUM(duration_ms), 0) AS duration_ms, "
            "COALESCE(SUM(guest_cpu_ms), 0) AS guest_cpu_ms, "
            "COALESCE(SUM(host_cpu_s), 0) AS io_host_cpu_s, "
            "CAST(COALESCE(SUM(io_requests), 0) AS BIGINT) AS io_requests, "
            "CAST(COALESCE(SUM(bytes_in), 0) AS BIGINT) AS bytes_in, "
            "CAST(COALESCE(SUM(bytes_out), 0) AS BIGINT) AS bytes_out "
            "FROM invocations WHERE tenant_id = ? AND created >= ? "
            "GROUP BY function_name ORDER BY function_name",
            (tenant_id, since),
        )
        return [{"function": r["function_name"], **{k: r[k] for k in _USAGE_COLUMNS}}
                for r in rows]

    def recover(self) -> tuple[list[tuple[str, int, float | None]], list[str]]:
        """After a restart: queued async invocations to run (id, tenant id, and when a retry
        is due: None for at once), and running ones now interrupted.

        A queued invocation never started, so running it now (or, waiting for a retry, at
        its due time) is what the caller asked for; one that was running may have had
        effects (posts), so it is marked interrupted.
        """

        def recover(cur):
            queued = [
                (r["id"], r["tenant_id"], r["retry_at"]) for r in cur.execute(
                    "SELECT id, tenant_id, retry_at FROM invocations WHERE status = 'queued' "
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

    def queued_invocation(self, invocation_id: str) -> Queued | None:
        """A queued invocation, to run now; None if it is not queued (any more)."""
        rows = self._read(
            "SELECT version_id, event, json_array_length(attempts) AS runs, "
            "callback IS NOT NULL AS callback FROM invocations WHERE id = ? AND "
            "status = 'queued'", (invocation_id,))
        if not rows:
            return None
        row = rows[0]
        return Queued(self.version_by_id(row["version_id"]), json.loads(row["event"]),
                      row["runs"] + 1, bool(row["callback"]))

    def queued_count(self, tenant_id: int, name: str) -> int:
        """Asynchronous invocations of a function accepted and not yet started."""
        return self._read(_QUEUED_COUNT_SQL, (tenant_id, name))[0]["n"]

    def fail_invocation(self, invocation_id: str, error: ErrorInfo) -> None:
        def update(cur):
            cur.execute(
                "UPDATE invocations SET status = 'failed', finished = ?, error = ? WHERE id = ?",
                (time.time(), json.dumps(error.as_dict()), invocation_id),
            )

        self._write(update)

    # pipelines

    def put_pipeline(self, tenant_id: int, name: str, stages: list[dict]) -> dict:
        """Create or replace a pipeline (its runs so far keep the stages they ran)."""

        def put(cur):
            cur.execute(
                "INSERT INTO pipelines (tenant_id, name, stages, created) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (tenant_id, name) DO UPDATE SET stages = excluded.stages, "
                "created = excluded.created",
                (tenant_id, name, json.dumps(stages), time.time()),
            )

        self._write(put)
        pipeline = self.pipeline(tenant_id, name)
        assert pipeline is not None
        return pipeline

    def pipeline(self, tenant_id: int, name: str) -> dict | None:
        rows = self._read("SELECT * FROM pipelines WHERE tenant_id = ? AND name = ?",
                          (tenant_id, name))
        return _pipeline(rows[0]) if rows else None

    def pipelines(self, tenant_id: int) -> list[dict]:
        rows = self._read("SELECT * FROM pipelines WHERE tenant_id = ? ORDER BY name",
                          (tenant_id,))
        return [_pipeline(r) for r in rows]

    def delete_pipeline(self, tenant_id: int, name: str) -> bool:
        return self._write(lambda cur: cur.execute(
            "DELETE FROM pipelines WHERE tenant_id = ? AND name = ?", (tenant_id, name)
        ).rowcount) > 0

    def add_pipeline_run(self, tenant_id: int, pipeline: str, mode: str, status: str,
                         event: Any) -> str:
        run_id = uuid.uuid4().hex
        self._write(lambda cur: cur.execute(
            "INSERT INTO pipeline_runs (id, tenant_id, pipeline, mode, status, event, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run_id, tenant_id, pipeline, mode, status, json.dumps(event), time.time())))
        return run_id

    def update_pipeline_run(self, run_id: str, status: str, stages: list[dict],
                            result: Any = None, error: dict | None = None) -> None:
        finished = time.time() if status in FINISHED else None
        self._write(lambda cur: cur.execute(
            "UPDATE pipeline_runs SET status = ?, stages = ?, result = ?, error = ?, "
            "finished = ? WHERE id = ?",
            (status, json.dumps(stages), json.dumps(result),
             None if error is None else json.dumps(error), finished, run_id)))

    def pipeline_run(self, tenant_id: int, run_id: str) -> dict | None:
        rows = self._read("SELECT * FROM pipeline_runs WHERE id = ? AND tenant_id = ?",
                          (run_id, tenant_id))
        return _pipeline_run(rows[0]) if rows else None

    def pipeline_runs(self, tenant_id: int, pipeline: str, limit: int,
                      status: str | None = None) -> list[dict]:
        """A pipeline's runs, the latest first (only those in `status` if given)."""
        where = " AND status = ?" if status is not None else ""
        rows = self._read(
            "SELECT * FROM pipeline_runs WHERE tenant_id = ? AND pipeline = ?" + where
            + " ORDER BY created DESC LIMIT ?",
            (tenant_id, pipeline, *([status] if status is not None else []), limit))
        return [_pipeline_run(r) for r in rows]

    def queued_pipeline_run(self, run_id: str) -> tuple[int, str, Any] | None:
        """A queued run's tenant id, pipeline and event (None once it has started)."""
        rows = self._read("SELECT tenant_id, pipeline, event FROM pipeline_runs "
                          "WHERE id = ? AND status = 'queued'", (run_id,))
        if not rows:
            return None
        return rows[0]["tenant_id"], rows[0]["pipeline"], json.loads(rows[0]["event"])

    def recover_pipeline_runs(self) -> tuple[list[tuple[str, int]], int]:
        """After a restart, as recover(): queued runs to start (id, tenant id), and how many
        running ones are now interrupted (a stage may have had effects: not re-run)."""

        def recover(cur):
            queued = [(r["id"], r["tenant_id"]) for r in cur.execute(
                "SELECT id, tenant_id FROM pipeline_runs WHERE status = 'queued' "
                "ORDER BY created")]
            interrupted = cur.execute(
                "UPDATE pipeline_runs SET status = 'interrupted', finished = ?, error = ? "
                "WHERE status = 'running'",
                (time.time(), json.dumps({
                    "type": "Interrupted", "stage": None,
                    "message": "the server stopped while this run ran; it was not re-run"})),
            ).rowcount
            return queued, interrupted

        return self._write(recover)


def _refused_tick(cur, schedule: Schedule, version: Version | None) -> dict | None:
    """Why a tick queues no invocation (None: it may), with the codes an async call gets."""
    if version is None:
        return {"code": "function_not_found",
                "message": f"function {schedule.function!r} has no live version"}
    waiting = cur.execute(_QUEUED_COUNT_SQL, (schedule.tenant_id, schedule.function)).fetchone()
    if waiting["n"] >= version.waiting_limit:
        return {"code": "queue_full", "message": f"function {schedule.function!r} has "
                f"{waiting['n']} invocations waiting, its limit"}
    return None


def _pipeline(row: Mapping[str, Any]) -> dict:
    return {"name": row["name"], "stages": json.loads(row["stages"]), "created": row["created"]}


def _pipeline_run(row: Mapping[str, Any]) -> dict:
    return {
        "id": row["id"], "pipeline": row["pipeline"], "mode": row["mode"],
        "status": row["status"], "event": json.loads(row["event"]),
        "result": None if row["result"] is None else json.loads(row["result"]),
        "error": None if row["error"] is None else json.loads(row["error"]),
        "stages": json.loads(row["stages"]), "created": row["created"],
        "finished": row["finished"],
    }


_ADD_VERSION_SQL = (
    "INSERT INTO versions (function_id, version, handler, requirements, module_dirs, code_dir, "
    "memory_mib, timeout_s, concurrency, queue, allow, env, created, warmup, reuse, retries, "
    "retry_backoff_s, secrets) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_ADD_SQL = (
    "INSERT INTO invocations (id, tenant_id, function_name, version, version_id, mode, status, "
    "event, created, trigger, callback) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_QUEUED_COUNT_SQL = ("SELECT COUNT(*) AS n FROM invocations WHERE tenant_id = ? AND "
                     "function_name = ? AND status = 'queued'")
_ATTEMPT_SQL = ("UPDATE invocations SET attempts = json_insert(attempts, '$[#]', json(?)) "
                "WHERE id = ?")
_USAGE_COLUMNS = ("invocations", "failed", "duration_ms", "guest_cpu_ms", "io_host_cpu_s",
                  "io_requests", "bytes_in", "bytes_out")
_RECORD_SQL = (
    "INSERT INTO invocations (id, tenant_id, function_name, version, version_id, mode, event, "
    "created, status, started, finished, result, error, stdout, stderr, duration_ms, "
    "guest_cpu_ms, host_cpu_s, io_requests, bytes_in, bytes_out, peak_memory_bytes, exits, "
    "first_touches, unimplemented, phases, host) VALUES (?, ?, ?, ?, ?, 'sync', "
    + ", ".join("?" * 21) + ")"
)
_ROLLBACK_SQL = ("UPDATE invocations SET phases = json_insert(COALESCE(phases, '{}'), "
                 "'$.rollback_ms', json(?)) WHERE id = ?")
_FINISH_SQL = (
    "UPDATE invocations SET status = ?, started = COALESCE(started, ?), finished = ?, "
    "result = ?, error = ?, stdout = ?, stderr = ?, duration_ms = ?, guest_cpu_ms = ?, "
    "host_cpu_s = ?, io_requests = ?, bytes_in = ?, bytes_out = ?, peak_memory_bytes = ?, "
    "exits = ?, first_touches = ?, unimplemented = ?, phases = ? WHERE id = ?"
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
        "exits": result.exits, "first_touches": result.first_touches,
        "unimplemented": json.dumps(result.unimplemented),
        "phases": json.dumps(result.phases),
    }


def _attempt(result: InvocationResult, started: float, finished: float) -> dict:
    """One run of an async invocation as its record's `attempts` keep it."""
    return {"started": started, "finished": finished,
            "error": None if result.error is None else result.error.as_dict()}


@dataclass
class _QueuedRecord:
    """A finished sync invocation's record, queued as it is: the writer thread encodes it,
    off the call's path (the JSON of its event, result and phases, and again of its phases
    when its rollback's time came, were about a tenth of the API's event loop's CPU per
    no-op call, py-spy says). `rollback_ms`: that time, if told while the record waits."""

    invocation_id: str
    version: Version
    event: Any
    outcome: InvocationResult
    started: float
    finished: float
    host: str | None
    rollback_ms: float | None = None

    def arguments(self) -> tuple:
        """_RECORD_SQL's."""
        v = self.version
        columns = _result_columns(self.outcome, self.started, self.finished)
        if self.rollback_ms is not None:
            columns["phases"] = json.dumps({**self.outcome.phases,
                                            "rollback_ms": self.rollback_ms})
        return (self.invocation_id, v.tenant_id, v.name, v.version, v.id,
                json.dumps(self.event), self.started, *columns.values(), self.host)


def _finish_args(result: InvocationResult, started: float) -> tuple:
    return tuple(_result_columns(result, started, time.time()).values())


def invocation_record(invocation_id: str, version: Version, mode: str,
                      result: InvocationResult, created: float, host: str | None = None) -> dict:
    """The record of a finished invocation as the API shows it (a sync call's answer): what
    _invocation() reads back from its row, made from the result itself (its values are
    JSON's already: no encoding and decoding on the call's path)."""
    io = result.io
    return {
        "id": invocation_id, "function": version.name, "version": version.version,
        "mode": mode, "status": "succeeded" if result.error is None else "failed",
        "created": created, "started": created, "finished": time.time(),
        "result": result.value,
        "error": None if result.error is None else result.error.as_dict(),
        "stdout": result.stdout, "stderr": result.stderr,
        "metrics": {
            "duration_ms": result.total_ms, "guest_cpu_ms": result.guest_cpu_ms,
            "host_cpu_s": io.host_cpu_s, "io_requests": io.requests, "bytes_in": io.bytes_in,
            "bytes_out": io.bytes_out, "peak_memory_bytes": result.peak_memory_bytes,
            "exits": result.exits, "first_touches": result.first_touches,
        },
        "unimplemented": dict(result.unimplemented), "phases": dict(result.phases),
        "trigger": None, "attempts": [], "retry_at": None, "callback": None, "host": host,
    }


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
            "exits": row["exits"],
            "first_touches": row["first_touches"],
        },
        # Syscalls the guest made that a USF does not implement (ENOSYS), by name.
        "unimplemented": json.loads(row["unimplemented"] or "{}"),
        # Where its time went, in ms, as the host measured it (platform/pool.py: PHASES).
        "phases": json.loads(row["phases"] or "{}"),
        # What started it: None for an API call, {"kind": "schedule", ...} for a tick.
        "trigger": json.loads(row["trigger"]) if row["trigger"] is not None else None,
        "attempts": json.loads(row["attempts"]),  # each run of an async invocation
        "retry_at": row["retry_at"],  # queued for a retry: when it is due (Unix time)
        # {"url", "state": pending | delivered | failed, "attempts": [...], "retry_at": when
        # a pending one is tried next}, if it has one.
        "callback": None if row["callback"] is None else {
            **json.loads(row["callback"]), "retry_at": row["callback_retry_at"]},
        "host": row["host"],  # the worker that ran it (several hosts), else None
    }


@dataclass(frozen=True)
class Queued:
    """An async invocation about to run."""

    version: Version | None  # None: deleted since it was queued
    event: Any
    attempt: int  # this run's number, from 1 (2 and more: retries)
    callback: bool  # a callback URL is to be POSTed the record once it is done


@dataclass(frozen=True)
class Schedule:
    id: str
    tenant_id: int
    function: str
    cron: str
    event: Any
    created: float
    next_tick: float  # the tick it fires next (Unix time)
    last_tick: float | None  # the tick it fired last
    last_outcome: dict | None = None  # what became of that tick (Tick.public())
    refused_ticks: int = 0  # ticks that queued no invocation (Tick.refused)

    def public(self) -> dict:
        return {"id": self.id, "function": self.function, "cron": self.cron,
                "event": self.event, "created": self.created, "next_tick": self.next_tick,
                "last_tick": self.last_tick, "last_outcome": self.last_outcome,
                "refused_ticks": self.refused_ticks}


@dataclass(frozen=True)
class Tick:
    """A tick a scheduler took: queued as `invocation`, or `refused` ({"code", "message"})."""

    tick: float
    invocation: str | None
    refused: dict | None

    def public(self) -> dict:
        if self.refused is not None:
            return {"tick": self.tick, "refused": self.refused}
        return {"tick": self.tick, "invocation": self.invocation}


def _schedule(row: Mapping[str, Any]) -> Schedule:
    outcome = row["last_outcome"]
    return Schedule(row["id"], row["tenant_id"], row["function_name"], row["cron"],
                    json.loads(row["event"]), row["created"], row["next_tick"],
                    row["last_tick"], None if outcome is None else json.loads(outcome),
                    row["refused_ticks"])
