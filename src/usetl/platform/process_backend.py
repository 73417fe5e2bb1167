"""The process backend, for hosts without /dev/kvm: SOCK-style zygotes.

A template is a zygote process that has imported the function (zygote.py);
an instance is a child it forks. Isolation, weaker than a USF's: the zygote
and its children run in their own mount, PID, IPC, UTS and (empty) network
namespaces; the filesystem is read-only except /tmp, a tmpfs of each
instance's own (in a user namespace of the same uid, where the host allows
them; else one shared by a version's instances); the server's state and the homes
are hidden; they run as uid 65534 without capabilities, under RLIMIT_AS.
They share the host's kernel (its whole syscall surface), and one function
version's instances can signal each other.

The function's I/O is `usetl.etl` as in a USF: etl.get and etl.post are
requests to the host on the instance's socket, carried out here by the ETL
API's HTTP client under the function's URL policy and accounted to the
invocation. Files (downloads, what the function writes) live in the
instance's own memory rather than in shared regions.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from usetl.etl import EtlError, HttpClient, IoAccount, UrlPolicy
from usetl.invocation import INSTANCE_DIED, TIMEOUT, ErrorInfo, InvocationResult, IoUsage

from . import zygote as wire
from .backend import BackendError, FunctionLoadError, FunctionSpec, RollbackImpossible

log = logging.getLogger(__name__)
ZYGOTE_START_TIMEOUT = 60.0
SANDBOX_LIB = Path(__file__).resolve().parent / "sandbox_lib"
MAX_ETL_BODY = 256 << 20  # a download or a response body, at most
ISOLATION = (
    "process backend: functions run in forked processes with Linux namespaces, "
    "a read-only filesystem, uid 65534 and memory limits; they share the host kernel "
    "(weaker isolation than KVM USFs)"
)


class ProcessInstance:
    def __init__(self, template: ProcessTemplate, sock: socket.socket, pid: int):
        self.template = template
        self.sock = sock
        self.pid = pid  # in the zygote's PID namespace
        self.closed = False

    def invoke(self, event: Any, context: dict, timeout: float) -> InvocationResult:
        if self.closed:
            raise BackendError("this instance is closed")
        t0 = time.perf_counter()
        account = IoAccount()
        try:
            wire.send_msg(self.sock, {"event": event, "context": context})
            while True:
                reply = self._receive(t0 + timeout)
                if reply is None or reply[0]["kind"] == "result":
                    break
                self._etl(reply[0], reply[1], account, t0 + timeout)
        except (OSError, EOFError) as e:
            self.close()
            return InvocationResult.failed(INSTANCE_DIED, f"the function's process died: {e}",
                                           (time.perf_counter() - t0) * 1e3)
        if reply is None:
            self.close()
            return InvocationResult.failed(TIMEOUT, f"the invocation ran longer than {timeout:g} s",
                                           (time.perf_counter() - t0) * 1e3)
        result = reply[0]
        error = result["error"]
        return InvocationResult(
            value=result["value"],
            error=ErrorInfo(**error) if error is not None else None,
            stdout=result["stdout"],
            stderr=result["stderr"],
            total_ms=result["duration_ms"],
            guest_cpu_ms=result["guest_cpu_ms"],
            io=IoUsage(**account.as_dict()),
            peak_memory_bytes=result["peak_memory_bytes"],
        )

    def _etl(self, request: dict, payload: bytes, account: IoAccount, deadline: float) -> None:
        """Carry out one etl.get or etl.post for the function, under its URL policy."""
        url = str(request.get("url"))
        dest = self.template.etl_buffer()
        try:
            client = self.template.http_client()
            if request["op"] == "get":
                transfer = client.get(url, dest, deadline=_monotonic(deadline))
            elif request["op"] == "post":
                transfer = client.post(url, payload, dest, str(request["content_type"]),
                                       deadline=_monotonic(deadline))
            else:
                raise EtlError(url, f"unknown ETL operation {request['op']!r}", "invalid")
        except EtlError as e:
            wire.send_msg(self.sock, {"error": {"url": e.url, "reason": e.reason,
                                                "kind": e.kind, "status": e.status}})
            return
        account.add(transfer.account)
        wire.send_msg(self.sock, {"status": transfer.status, "headers": transfer.headers},
                      dest[: transfer.size])

    def _receive(self, deadline: float) -> tuple[dict, bytes] | None:
        """The next message and its payload, or None if the deadline passed first."""
        header = self._read(wire.HEADER, deadline)
        if header is None:
            return None
        body = self._read(int.from_bytes(header, "little"), deadline)
        if body is None:
            return None
        message = json.loads(body)
        size = message.get("payload", 0)
        payload = self._read(size, deadline) if size else b""
        return None if payload is None else (message, payload)

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

    def warm(self) -> None:
        pass  # a fresh fork has nothing to warm

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.sock.close()
        self.template.kill(self.pid)


class ProcessTemplate:
    def __init__(self, spec: FunctionSpec, isolate: bool, hide: list[Path]):
        if spec.warmup is not None:
            raise BackendError("the process backend does not run warm-up events; "
                               "deploy without one, or use the kvm backend")
        self.spec = spec
        self.warmup = None
        self.lock = threading.Lock()
        self.control, theirs = socket.socketpair()
        message = {
            "code_dir": str(spec.code_dir.resolve()),
            "handler": spec.handler,
            "module_dirs": [str(d.resolve()) for d in spec.module_dirs],
            "env": spec.env,
            "memory_mib": spec.memory_mib,
            "isolate": isolate,
            "hide": [str(d) for d in hide],
            "lib_dir": str(SANDBOX_LIB),
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
        self._http: HttpClient | None = None
        self._buffers = threading.local()
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
            raise FunctionLoadError(ErrorInfo(**reply["error"]))
        self.memory_bytes = reply["rss"] * 1024
        if isolate and not reply["private_tmp"]:
            log.warning("no user namespaces here: the instances of %s share /tmp", spec.key)

    def _stderr(self) -> str:
        try:
            self.process.kill()
            err = self.process.communicate(timeout=5)[1].decode(errors="replace").strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return f"; {err[-2000:]}" if err else ""

    def http_client(self) -> HttpClient:
        """The ETL client under this function's URL policy (made on first use)."""
        with self.lock:
            if self._http is None:
                self._http = HttpClient(UrlPolicy(self.spec.allow))
            return self._http

    def etl_buffer(self) -> memoryview:
        """Where a response body lands: anonymous memory, touched only as far as it is written."""
        buffer = getattr(self._buffers, "memory", None)
        if buffer is None:
            buffer = self._buffers.memory = memoryview(mmap.mmap(-1, MAX_ETL_BODY))
        return buffer

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
        if self._http is not None:
            self._http.close()
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

    def overhead_bytes(self) -> int:
        return 0  # every zygote belongs to a template

    def close(self) -> None:
        pass  # every zygote belongs to a template


def _monotonic(perf_deadline: float) -> float:
    """A time.perf_counter() deadline as a time.monotonic() one (the ETL client's clock)."""
    return time.monotonic() + (perf_deadline - time.perf_counter())
