"""The process backend, for hosts without /dev/kvm: SOCK-style zygotes.

A template is a zygote process that has imported the function (zygote.py);
an instance is a child it forks. Isolation, weaker than a USF's: the zygote
and its children run in their own mount, PID, IPC and UTS namespaces, and in
an empty network namespace unless the function has a URL allow-list (then
they share the host's network, and the allow-list is NOT enforced on their
sockets); the filesystem is read-only except a private tmpfs /tmp shared by
the instances of one function version; they run as uid 65534 without
capabilities, under RLIMIT_AS. They share the host's kernel, and one
function version's instances can signal each other.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from . import zygote as wire
from .backend import (
    BackendError,
    FunctionLoadError,
    FunctionSpec,
    Outcome,
    RollbackImpossible,
    empty_io,
)

ZYGOTE_START_TIMEOUT = 60.0
ISOLATION = (
    "process backend: functions run in forked processes with Linux namespaces, "
    "a read-only filesystem, uid 65534 and memory limits; they share the host kernel "
    "(weaker isolation than KVM USFs)"
)


def _describe_load_error(error: dict) -> str:
    if error["type"] == "SyntaxError":
        return f"SyntaxError: {error['message']}"
    return f"{error['type']}: {error['message']}"


class ProcessInstance:
    def __init__(self, template: ProcessTemplate, sock: socket.socket, pid: int):
        self.template = template
        self.sock = sock
        self.pid = pid  # in the zygote's PID namespace
        self.closed = False

    def invoke(self, event: Any, context: dict, timeout: float) -> Outcome:
        if self.closed:
            raise BackendError("this instance is closed")
        t0 = time.perf_counter()
        try:
            wire.send_msg(self.sock, {"event": event, "context": context})
            reply = self._receive(t0 + timeout)
        except (OSError, EOFError) as e:
            self.close()
            return Outcome(
                None,
                {"type": "InstanceDied", "message": f"the function's process died: {e}",
                 "traceback": ""},
                "", "", (time.perf_counter() - t0) * 1e3, 0.0, empty_io(),
            )
        if reply is None:
            self.close()
            return Outcome(
                None,
                {"type": "Timeout", "message": f"the invocation ran longer than {timeout:g} s",
                 "traceback": ""},
                "", "", (time.perf_counter() - t0) * 1e3, 0.0, empty_io(),
            )
        return Outcome(
            value=reply["value"],
            error=reply["error"],
            stdout=reply["stdout"],
            stderr=reply["stderr"],
            duration_ms=reply["duration_ms"],
            guest_cpu_ms=reply["guest_cpu_ms"],
            io=empty_io(),
            peak_memory_bytes=reply["peak_memory_bytes"],
        )

    def _receive(self, deadline: float) -> dict | None:
        """The reply, or None if the deadline passed first."""
        header = self._read(wire.HEADER, deadline)
        if header is None:
            return None
        body = self._read(int.from_bytes(header, "little"), deadline)
        return None if body is None else json.loads(body)

    def _read(self, n: int, deadline: float) -> bytes | None:
        chunks = []
        while n:
            left = deadline - time.perf_counter()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return None
            chunk = self.sock.recv(min(n, 1 << 20))
            if not chunk:
                raise EOFError("the function's process exited")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def rollback(self) -> None:
        # A used process cannot be reset to the zygote's state; a fresh fork is the rollback.
        self.close()
        raise RollbackImpossible("a process instance cannot be rolled back")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.sock.close()
        self.template.kill(self.pid)


class ProcessTemplate:
    def __init__(self, spec: FunctionSpec, isolate: bool, hide: list[Path]):
        self.spec = spec
        self.lock = threading.Lock()
        self.control, theirs = socket.socketpair()
        message = {
            "code_dir": str(spec.code_dir.resolve()),
            "handler": spec.handler,
            "module_dirs": [str(d.resolve()) for d in spec.module_dirs],
            "env": spec.env,
            "memory_mib": spec.memory_mib,
            "allow": spec.allow,
            "isolate": isolate,
            "hide": [str(d) for d in hide],
        }
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", wire.__file__, str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={},
        )
        theirs.close()
        self.closed = False
        try:
            wire.send_msg(self.control, message)
            self.control.settimeout(ZYGOTE_START_TIMEOUT)
            reply = wire.recv_msg(self.control)
            self.control.settimeout(None)
        except (OSError, EOFError) as e:
            stderr = self._stderr()
            self.close()
            raise BackendError(f"the function's zygote did not start: {e}{stderr}") from e
        if "error" in reply:
            self.close()
            raise FunctionLoadError(_describe_load_error(reply["error"]), reply["error"])
        self.memory_bytes = reply["rss"] * 1024

    def _stderr(self) -> str:
        try:
            self.process.kill()
            err = self.process.communicate(timeout=5)[1].decode(errors="replace").strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return f"; {err[-2000:]}" if err else ""

    def fork(self) -> ProcessInstance:
        with self.lock:
            if self.closed:
                raise BackendError("this template is closed")
            try:
                wire.send_msg(self.control, {"kind": "fork"})
                _, fds, _, _ = socket.recv_fds(self.control, 1, 1)
                if not fds:
                    raise EOFError("the zygote exited")
                pid = wire.recv_msg(self.control)["pid"]
            except (OSError, EOFError) as e:
                raise BackendError(f"the function's zygote could not fork: {e}") from e
        return ProcessInstance(self, socket.socket(fileno=fds[0]), pid)

    def kill(self, pid: int) -> None:
        with self.lock:
            if self.closed:
                return
            try:
                wire.send_msg(self.control, {"kind": "kill", "pid": pid})
            except OSError:
                pass

    def save(self, directory: Path) -> None:
        raise NotImplementedError("process templates have no snapshot")

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.control.close()
        # The zygote exits on EOF; as PID 1 of its namespace it takes its children with it.
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


class ProcessBackend:
    name = "process"
    instance_bytes = 4 << 20  # a forked child's private pages after one invocation, rounded up

    def __init__(self, isolate: bool | None = None, hide: list[Path] | None = None):
        """`hide`: directories the functions must not see (the server's state and caches)."""
        self.hide = [p.resolve() for p in hide or []]
        # Namespaces need root (CAP_SYS_ADMIN); elsewhere children are plain processes.
        self.isolate = os.geteuid() == 0 if isolate is None else isolate
        self.isolation = ISOLATION if self.isolate else (
            "process backend WITHOUT namespaces (not root): functions run as plain "
            "processes of this user, with memory limits only"
        )

    def template(self, spec: FunctionSpec) -> ProcessTemplate:
        return ProcessTemplate(spec, self.isolate, self.hide)

    def restore(self, spec: FunctionSpec, directory: Path) -> ProcessTemplate:
        raise NotImplementedError("process templates have no snapshot")
