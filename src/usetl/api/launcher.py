"""`usetl serve` as a child process on 127.0.0.1 (for the demo, the benchmark and the tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

import usetl
from usetl.errors import UsetlError

SRC = Path(usetl.__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise UsetlError(f"usetl serve exited: {self.process.stdout.read().strip()}")
            time.sleep(0.1)
        self.stop(signal.SIGKILL)
        raise UsetlError(f"usetl serve did not answer /healthz in {timeout:g} s")

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
