"""Gateways and workers as processes (for the tests, `make cluster-demo` and the bench),
each with its own state directory, optionally in a network namespace (`netns`: run
through `ip netns exec`, as a separate host would be)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from usetl.api.launcher import answers_health, free_port
from usetl.errors import UsetlError

SRC = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90.0


class ClusterProcess:
    """One `usetl gateway` or `usetl worker`."""

    def __init__(self, argv: list[str], state: Path, env: dict[str, str],
                 netns: str | None = None):
        self.argv, self.state, self.netns = argv, state, netns
        self.env = {**os.environ, **env}
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
        self.process: subprocess.Popen | None = None
        self.output = ""
        self.log = state.parent / f"{state.name}.log"

    def start(self) -> ClusterProcess:
        self.state.mkdir(parents=True, exist_ok=True)
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        command = [*prefix, sys.executable, "-m", "usetl", *self.argv,
                   "--state", str(self.state)]
        # Its own session: kill_host() ends it and every process it started, as a crash of
        # the whole host would.
        self.process = subprocess.Popen(command, stdout=open(self.log, "w"),  # noqa: SIM115
                                        stderr=subprocess.STDOUT, text=True, env=self.env,
                                        start_new_session=True)
        return self

    def check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            raise UsetlError(f"usetl {self.argv[0]} exited: {self.log.read_text()[-2000:]}")

    def kill_host(self) -> None:
        """SIGKILL to it and everything it started (its sandboxes, its egress broker)."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.stop(signal.SIGKILL)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGKILL: as a crash would)."""
        if self.process is None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        self.output += self.log.read_text()


def stop_all(processes: list[ClusterProcess]) -> None:
    """Stop them all at once: each winds down (its pool, its sandboxes) in parallel."""
    with ThreadPoolExecutor(max(len(processes), 1)) as stopping:
        list(stopping.map(ClusterProcess.stop, processes))


def gateway(state: Path, nats_url: str, database_url: str, host: str = "127.0.0.1",
            port: int | None = None, netns: str | None = None,
            *options: str) -> GatewayProcess:
    return GatewayProcess(state, nats_url, database_url, host, port or free_port(), netns,
                          *options)


class GatewayProcess(ClusterProcess):
    def __init__(self, state: Path, nats_url: str, database_url: str, host: str, port: int,
                 netns: str | None, *options: str):
        super().__init__(["gateway", "--host", host, "--port", str(port), *options], state,
                         {"USETL_NATS_URL": nats_url, "USETL_DATABASE_URL": database_url},
                         netns)
        self.url = f"http://{host}:{port}"

    def start(self) -> GatewayProcess:
        super().start()
        if answers_health(self.url, self.check_alive, START_TIMEOUT_S):
            return self
        self.stop(signal.SIGKILL)
        raise UsetlError(f"usetl gateway did not answer /healthz in {START_TIMEOUT_S:g} s")

    @property
    def admin_token(self) -> str:
        return (self.state / "admin.token").read_text().strip()


def worker(state: Path, name: str, nats_url: str, database_url: str, backend: str | None = None,
           slots: int = 2, netns: str | None = None,
           options: tuple[str, ...] = ()) -> ClusterProcess:
    argv = ["worker", "--name", name, "--slots", str(slots), *options]
    if backend is not None:
        argv += ["--backend", backend]
    return ClusterProcess(argv, state, {"USETL_NATS_URL": nats_url,
                                        "USETL_DATABASE_URL": database_url}, netns)


def wait_for_hosts(nats_url: str, names: set[str], processes: list[ClusterProcess],
                   timeout: float = START_TIMEOUT_S) -> list[dict]:
    """Wait until every named worker heartbeats (its processes checked alive meanwhile)."""
    from .bus import Bus
    from .config import ClusterConfig
    from .membership import hosts

    bus = Bus(ClusterConfig(nats_url, ""), "usetl-launcher")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = bus.run(hosts(bus))
            if names <= {h["host"] for h in found}:
                return found
            for process in processes:
                process.check_alive()
            time.sleep(0.1)
    finally:
        bus.close()
    raise UsetlError(f"workers {sorted(names)} did not heartbeat within {timeout:g} s")
