"""Throwaway nats-server and PostgreSQL in a temporary directory: for the tests,
`make cluster-demo` and `usetl bench cluster` (never a system service).

Their files live in memory (/dev/shm, where it is there): a throwaway server's store needs
no disk, and on a busy disk making and removing PostgreSQL's thousand files took seconds.

Each starts with the credentials a cluster uses (no anonymous access): NATS users
per role (`gateway`, `worker`) and PostgreSQL roles `usetl_gateway` (owns the schema,
runs the migrations) and `usetl_worker` (reads and writes rows, changes no schema).
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from usetl.api.launcher import free_port
from usetl.errors import UsetlError

PG_BIN = Path("/usr/lib/postgresql/15/bin")
NATS_SERVER = "nats-server"
START_TIMEOUT_S = 30.0
SHM = Path("/dev/shm")


def scratch_dir(prefix: str) -> Path:
    """A new private directory for a throwaway server's files, in memory if it can be."""
    memory = SHM if SHM.is_dir() and os.access(SHM, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=memory))


class ServerError(UsetlError):
    """A throwaway server could not be started."""


def _wait_for_port(host: str, port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"{what} exited with status {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise ServerError(f"{what} did not listen on port {port} within {START_TIMEOUT_S:g} s")


@dataclass
class TemporaryPostgres:
    """initdb + pg_ctl in a temporary directory, as the `postgres` user when run as root
    (initdb refuses root)."""

    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"  # where it listens (a bridge's address for namespaced hosts)
    passwords: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dir = scratch_dir("usetl-pg-")
        self.data = self.dir / "data"
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        for role in ("usetl_admin", "usetl_gateway", "usetl_worker"):
            self.passwords[role] = secrets.token_urlsafe(16)

    def url(self, role: str = "usetl_gateway", database: str = "usetl") -> str:
        return f"postgresql://{role}:{self.passwords[role]}@{self.host}:{self.port}/{database}"

    def _as_owner(self, *argv: str) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *argv], check=True, capture_output=True, cwd=self.dir)

    def start(self) -> TemporaryPostgres:
        if os.geteuid() == 0:
            shutil.chown(self.dir, self.user)
        pwfile = self.dir / "pw"
        pwfile.write_text(self.passwords["usetl_admin"] + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, self.user)
        self._as_owner(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "usetl_admin",
                       "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync")
        pwfile.unlink()
        with open(self.data / "pg_hba.conf", "a") as hba:  # every role needs its password
            hba.write("host all all 0.0.0.0/0 scram-sha-256\n")
        options = (f"-c listen_addresses={self.host} -p {self.port} -k {self.dir} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._as_owner(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options,
                       "-l", str(self.dir / "log"), "-w", "start")
        self._roles()
        return self

    def _roles(self) -> None:
        import psycopg

        gateway, worker = self.passwords["usetl_gateway"], self.passwords["usetl_worker"]
        with psycopg.connect(self.url("usetl_admin", "postgres"), autocommit=True) as db:
            db.execute(f"CREATE ROLE usetl_gateway LOGIN PASSWORD '{gateway}'")
            db.execute(f"CREATE ROLE usetl_worker LOGIN PASSWORD '{worker}'")
            db.execute("CREATE DATABASE usetl OWNER usetl_gateway")
        with psycopg.connect(self.url("usetl_gateway"), autocommit=True) as db:
            db.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            db.execute("GRANT USAGE ON SCHEMA public TO usetl_worker")
            db.execute("ALTER DEFAULT PRIVILEGES GRANT SELECT, INSERT, UPDATE, DELETE "
                       "ON TABLES TO usetl_worker")
            db.execute("ALTER DEFAULT PRIVILEGES GRANT USAGE ON SEQUENCES TO usetl_worker")

    def stop(self) -> None:
        if self.data.exists():
            self._as_owner(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                           "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> TemporaryPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# What each role may publish and subscribe to. Both use JetStream's API, KV buckets and
# the object store; only a gateway asks for builds and pings and acknowledges callbacks;
# only a worker acknowledges invocations, answers callers (their inboxes), writes dead
# letters and hands callbacks on.
PERMISSIONS = {
    "gateway": {"publish": ["usetl.invoke.>", "usetl.build", "usetl.ping",
                            "usetl.handoff.release.>", "$JS.API.>", "$JS.ACK.USETL_CALLBACKS.>",
                            "$JS.FC.>", "$KV.>", "$O.>"],
                "subscribe": ["_INBOX.>"]},
    "worker": {"publish": ["usetl.invoke.>", "usetl.dead.>", "usetl.callback.>",
                           "usetl.handoff.fetch.>", "$JS.API.>", "$JS.ACK.USETL_INVOCATIONS.>",
                           "$JS.FC.>", "$KV.>", "$O.>", "_INBOX.>"],
               "subscribe": ["usetl.build", "usetl.ping", "usetl.handoff.>", "usetl.ring.>",
                             "_INBOX.>"]},
}


@dataclass
class TemporaryNats:
    """nats-server with JetStream, its store in a temporary directory, one user per role."""

    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    passwords: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dir = scratch_dir("usetl-nats-")
        self.proc: subprocess.Popen | None = None
        for role in ("gateway", "worker"):
            self.passwords[role] = secrets.token_urlsafe(16)

    def url(self, role: str = "gateway") -> str:
        return f"nats://{role}:{self.passwords[role]}@{self.host}:{self.port}"

    def _config(self) -> str:
        users = [{"user": role, "password": password, "permissions": PERMISSIONS[role]}
                 for role, password in self.passwords.items()]
        # nats-server's configuration accepts JSON; no anonymous user is defined.
        return json.dumps({
            "host": self.host, "port": self.port,
            "jetstream": {"store_dir": str(self.dir / "js"), "max_memory_store": 256 << 20,
                          "max_file_store": 4 << 30},
            "authorization": {"users": users},
        })

    def start(self) -> TemporaryNats:
        config = self.dir / "nats.conf"
        config.write_text(self._config())
        self.proc = subprocess.Popen([NATS_SERVER, "-c", str(config)],
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "log", "wb"))  # noqa: SIM115
        _wait_for_port(self.host, self.port, self.proc, "nats-server")
        return self

    def stop(self, keep_store: bool = False) -> None:
        """Stop the server; keep_store leaves JetStream's files for a restart."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if not keep_store:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> TemporaryNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
