"""`usetl serve` as a child process on 127.0.0.1 (for the demo, the benchmark and the tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

import usetl
from usetl.errors import UsetlError

SRC = Path(usetl.__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers_health(url: str, check_alive: Callable[[], None], timeout: float) -> bool:
    """Whether the server at `url` answers /healthz with 200 within `timeout` s, asked every
    0.1 s; check_alive() raises if its process has ended meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        check_alive()
        time.sleep(0.1)
    return False


class ServerProcess:
    """A `usetl serve` on a free port with its own state directory."""

    def __init__(self, state: Path, modules: Path | None = None, backend: str = "process",
                 *extra: str):
        self.state, self.modules, self.backend, self.extra = state, modules, backend, extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.output = ""

    def start(self, timeout: float = 60.0) -> ServerProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
        command = [sys.executable, "-m", "usetl", "serve", "--backend", self.backend,
                   "--port", str(self.port), "--state", str(self.state), *self.extra]
        if self.modules is not None:
            command += ["--modules", str(self.modules)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env=env)
        if answers_health(self.url, self._check_alive, timeout):
            return self
        self.stop(signal.SIGKILL)
        raise UsetlError(f"usetl serve did not answer /healthz in {timeout:g} s")

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise UsetlError(f"usetl serve exited: {self.process.stdout.read().strip()}")

    @property
    def admin_token(self) -> str:
        return (self.state / "admin.token").read_text().strip()

    def stop(self, sig: int = signal.SIGTERM) -> str:
        """Stop the server (SIGKILL: as a crash would); returns what it printed."""
        if self.process is None:
            return ""
        self.process.send_signal(sig)
        try:
            out, _ = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        self.process = None
        self.output += out
        return out

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
