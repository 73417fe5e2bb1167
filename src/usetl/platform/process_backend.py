"""The process backend, for hosts without /dev/kvm: SOCK-style zygotes.

A template is a zygote process that has imported the function (zygote.py);
an instance is a child it forks. Isolation, weaker than a USF's: the zygote
and its children run in their own mount, PID, IPC, UTS and (empty) network
namespaces; the filesystem is read-only except /tmp, a tmpfs of each
instance's own (in a user namespace of the same uid, where the host allows
them; else one shared by a version's instances); the server's state and the homes
are hidden; they run as a uid of their own (one per zygote, from usetl.jail's range)
without capabilities, under RLIMIT_AS.
They share the host's kernel (its whole syscall surface), and one function
version's instances can signal each other.

The guest runtime is a USF's (usetl.guest, with usetl.abi), the transport
being the only difference: the agent loop runs on the instance's socket, and
usetl.etl's requests come to the host on it, answered here by an EtlDevice
(the one a USF's monitor has) under the function's URL policy and accounted
to the invocation. Its two regions are memory files made for the instance
and sent to it with the first info reply: downloads stream into the host
region, which the sandbox maps read-only, as in a USF.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from usetl import abi, hostmm
from usetl.abi import etl as etl_abi
from usetl.etl import UrlPolicy
from usetl.image import guest_lib
from usetl.invocation import (
    SANDBOX_ERROR,
    ErrorInfo,
    InvocationResult,
    IoUsage,
    ModuleNames,
    invocation_context,
)
from usetl.jail.ids import shared_range
from usetl.libos.children import ProcessSlots
from usetl.libos.etl_device import EtlDevice, RegionFull
from usetl.libos.handoff import HandOff, HandOffError
from usetl.procmem import descendants_private_bytes, process_memory, resident_bytes
from usetl.vm.memory import GuestMemory

from .backend import (
    WARMUP_REQUEST_ID,
    BackendError,
    FunctionLoadError,
    FunctionSpec,
    RollbackImpossible,
)

log = logging.getLogger(__name__)
ZYGOTE = Path(__file__).resolve().parent / "zygote.py"
ZYGOTE_START_TIMEOUT = 60.0
HOST_REGION_BYTES = 256 << 20  # downloads and response bodies (a memfd: unused space is free)
GUEST_REGION_BYTES = 64 << 20  # files the function writes
F_SEAL_FUTURE_WRITE = 0x0010  # linux/fcntl.h: no new writable mappings, no write()
ISOLATION = (
    "process backend: functions run in forked processes with Linux namespaces, "
    "a read-only filesystem, a uid per function and memory limits; they share the host kernel "
    "(weaker isolation than KVM USFs)"
)


def _error_info(error: object) -> ErrorInfo:
    try:
        return msgspec.convert(error, ErrorInfo)
    except msgspec.ValidationError as e:
        raise abi.ProtocolError(f"a malformed error ({e}): {error!r:.200}") from None


def _reply_error(reply: dict) -> ErrorInfo | None:
    """The reply's error, once the reply is checked against the protocol (the sandbox runs
    the function's code: nothing it sends is believed unchecked)."""
    numbers = (int, float)
    checks = [(reply.get("stdout"), str), (reply.get("stderr"), str),
              (reply.get("guest_ms"), numbers), (reply.get("guest_cpu_ms"), numbers),
              (reply.get("peak_memory_bytes"), int)]
    if not all(isinstance(value, types) for value, types in checks):
        raise abi.ProtocolError("a reply lacks its output, times or memory")
    unknown = set(reply) - abi.REPLY_FIELDS - {"kind"}
    if unknown:
        raise abi.ProtocolError(f"unknown fields in a reply: {sorted(unknown)!r:.200}")
    error = reply.get("error")
    return None if error is None else _error_info(error)


def _imported(reply: dict) -> list[str]:
    """The reply's imported modules, checked as a USF's are (a hint, bounded in size)."""
    try:
        return msgspec.convert(reply.get("imported", []), ModuleNames)
    except msgspec.ValidationError as e:
        raise abi.ProtocolError(f"malformed imported modules ({e})") from None


def _read_only_region(name: str, size: int) -> GuestMemory:
    """A region the host writes through its own mapping and the sandbox can only read.

    The seal comes after the host's mapping: the sandbox, which gets the file's
    descriptor, can map it for reading only (a USF's host region is a read-only
    memslot). Emptying it then zeroes in place, as punching holes is refused.
    """
    fd = os.memfd_create(f"usetl-{name}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    memory = GuestMemory(name, 0, size, fd)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                F_SEAL_FUTURE_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
    return memory


class ProcessInstance:
    def __init__(self, template: ProcessTemplate, sock: socket.socket, pid: int | None):
        self.template = template
        self.sock = sock
        self.pid = pid  # in the zygote's PID namespace; None: the zygote's own warm-up
        self.instance_id = uuid.uuid4().hex
        self.closed = False
        self.announced = False  # the agent's ready message was read and checked
        self.etl: EtlDevice | None = None  # made at the instance's first ETL request
        self.keep_files = False  # the last invocation was a pipeline stage's that hands on
        self.etl_deadline: float | None = None

    def invoke(self, event: Any, context: dict, timeout: float, files: HandOff | None = None,
               keep_files: bool = False, slots: ProcessSlots | None = None,
               rollback: bool = False) -> InvocationResult:
        # `slots` is not used: the sandbox's children are host processes of its own, which
        # the platform does not see; nor is `rollback`: a process is not rolled back.
        if self.closed:
            raise BackendError("this instance is closed")
        t0 = time.perf_counter()
        self.etl_deadline = time.monotonic() + timeout
        if self.etl is not None:
            self.etl.reset(self.etl_deadline)
        self.keep_files = keep_files
        if files is not None:
            try:
                self._device().hand_in(files)  # copied: the sandbox maps the region itself
            except (HandOffError, RegionFull) as e:
                return InvocationResult.failed(
                    SANDBOX_ERROR, f"the previous stage's files cannot be handed in: {e}")
        try:
            abi.send(self.sock, {"kind": abi.INVOKE, "event": event, "context": context})
            reply = self._serve_until_reply(t0 + timeout)
            error = None if reply is None else _reply_error(reply)
            imported = [] if reply is None else _imported(reply)
        except (OSError, EOFError) as e:
            reply, error = None, ErrorInfo(abi.INSTANCE_DIED, f"the function's process died: {e}")
        except abi.ProtocolError as e:
            reply, error = None, ErrorInfo(abi.AGENT_ERROR, f"the sandbox broke the protocol: {e}")
        if reply is None and error is None:
            error = ErrorInfo(abi.TIMEOUT, f"the invocation ran longer than {timeout:g} s")
        total_ms = (time.perf_counter() - t0) * 1e3
        io = IoUsage(**self.etl.account.as_dict()) if self.etl is not None else IoUsage()
        if reply is None or error is not None and error.kind != abi.HANDLER:
            self.close()
            return InvocationResult(error=error, total_ms=total_ms, io=io)
        return InvocationResult(
            value=reply.get("value"),
            error=error,
            stdout=reply["stdout"],
            stderr=reply["stderr"],
            total_ms=total_ms,
            guest_ms=reply["guest_ms"],
            guest_cpu_ms=reply["guest_cpu_ms"],
            io=io,
            peak_memory_bytes=reply["peak_memory_bytes"],
            imported=imported,
        )

    async def invoke_async(self, event: Any, context: dict, timeout: float,
                           slots: ProcessSlots | None = None,
                           rollback: bool = False) -> InvocationResult:
        # The sandbox's ETL requests are served while it runs: a thread waits for it.
        return await asyncio.to_thread(self.invoke, event, context, timeout)

    async def rolled_back_async(self) -> None:
        self.rollback()

    def _serve_until_reply(self, deadline: float) -> dict | None:
        """Answer the sandbox's ETL requests until its reply; None if the deadline passed."""
        while True:
            received = self._receive(deadline)
            if received is None:
                return None
            message = received[0]
            kind = message.get("kind")
            if kind == abi.READY and not self.announced:
                if message.get("protocol") != abi.PROTOCOL_VERSION:
                    raise abi.ProtocolError(
                        f"the sandbox's runtime speaks protocol {message.get('protocol')!r}, "
                        f"the host {abi.PROTOCOL_VERSION}")
                self.announced = True
            elif kind == abi.ETL and self.announced:
                self._etl(message)
            elif kind == abi.REPLY and self.announced:
                return message
            else:
                raise abi.ProtocolError(f"unexpected message kind {kind!r}")

    def _etl(self, request: dict) -> None:
        """Answer one usetl.etl request as a USF's /dev/etl does, under the function's policy."""
        device = self._device()
        if request.get("op") == etl_abi.INFO:
            socket.send_fds(self.sock, [b"\0"], [device.host.memory.fd, device.guest.memory.fd])
        abi.send(self.sock, device.answer(request, None))

    def _device(self) -> EtlDevice:
        if self.etl is None:
            self.etl = EtlDevice(
                _read_only_region("etl-host", HOST_REGION_BYTES),
                GuestMemory("etl-guest", 0, GUEST_REGION_BYTES),
                self.template.policy, self.template.spec.etl_timeout_s, remappable=False,
            )
            self.etl.reset(self.etl_deadline)
        return self.etl

    def _receive(self, deadline: float) -> tuple[dict, bytes] | None:
        """The next message and its payload, or None if the deadline passed first."""
        header = self._read(abi.FRAME_HEADER_SIZE, deadline)
        if header is None:
            return None
        body = self._read(abi.body_length(header), deadline)
        if body is None:
            return None
        message = abi.decode(body)
        size = message.get(abi.PAYLOAD, 0)
        if not isinstance(size, int) or not 0 <= size <= abi.MAX_MESSAGE:
            raise abi.ProtocolError(f"bad payload length {size!r}")
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

    def take_files(self) -> HandOff | None:
        if not self.keep_files or self.closed:
            return None
        self.keep_files = False
        return self._device().take_guest_files()[0]

    def rollback(self) -> None:
        # A used process cannot be reset to the zygote's state; a fresh fork is the rollback.
        self.close()
        raise RollbackImpossible("a process instance cannot be rolled back")

    def _process_pid(self) -> int | None:
        """The sandbox process's host pid (None for the zygote's own warm-up, whose memory is
        the template's, or a process that is gone)."""
        return None if self.pid is None else _host_pid(self.template.process.pid, self.pid)

    def own_bytes(self) -> int | None:
        host_pid = self._process_pid()
        try:
            return None if host_pid is None else hostmm.anonymous_bytes(host_pid)
        except OSError:
            return None

    def resident_bytes(self) -> int | None:
        host_pid = self._process_pid()
        try:
            return None if host_pid is None else resident_bytes(host_pid)
        except OSError:
            return None

    def memory(self) -> dict[str, int] | None:
        host_pid = self._process_pid()
        try:
            return None if host_pid is None else {"own": hostmm.anonymous_bytes(host_pid),
                                                  **process_memory([host_pid])}
        except OSError:
            return None

    def children_bytes(self) -> int:
        """The sandbox's own child processes'."""
        host_pid = None if self.pid is None else _host_pid(self.template.process.pid, self.pid)
        return 0 if host_pid is None else descendants_private_bytes(host_pid)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.sock.close()
        if self.pid is not None:
            self.template.kill(self.pid)
        if self.etl is not None:
            self.etl.host.memory.close()
            self.etl.guest.memory.close()


def _host_pid(zygote: int, pid: int) -> int | None:
    """The host's pid of the zygote's descendant that is `pid` in its own PID namespace."""
    pending = [zygote]
    while pending:
        parent = pending.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            continue
        for child in children:
            try:
                with open(f"/proc/{child}/status") as f:
                    ns_pids = next(line for line in f if line.startswith("NSpid:")).split()[1:]
            except (OSError, StopIteration):
                continue
            if int(ns_pids[-1]) == pid and child != zygote:
                return child
            pending.append(child)
    return None


class ProcessTemplate:
    def __init__(self, spec: FunctionSpec, isolate: bool, hide: list[Path], lib_dir: Path):
        self.spec = spec
        self.warmup = None
        self.policy = UrlPolicy(spec.allow)
        self.lock = threading.Lock()
        self.control, theirs = socket.socketpair()
        message = {
            "code_dir": str(spec.code_dir.resolve()),
            "handler": spec.handler,
            "imports": spec.learned,
            "module_dirs": [str(d.resolve()) for d in spec.module_dirs],
            "env": spec.env,
            "memory_mib": spec.memory_mib,
            "isolate": isolate,
            "hide": [str(d) for d in hide],
            "lib_dir": str(lib_dir),
            "uid": shared_range().take(),
        }
        self.process = subprocess.Popen(
            # Isolated as -I but for -E (the environment is empty here): its children
            # honour the PYTHONPATH the zygote gives them.
            [sys.executable, "-s", "-S", "-P", "-B", str(ZYGOTE), str(theirs.fileno()),
             str(lib_dir)],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={},
        )
        theirs.close()
        self.closed = False
        try:
            abi.send(self.control, message)
            self.control.settimeout(ZYGOTE_START_TIMEOUT)
            reply, _ = abi.recv(self.control)
            self.control.settimeout(None)
        except (OSError, EOFError, abi.ProtocolError) as e:
            stderr = self._stderr()
            self.close()
            raise BackendError(f"the function's zygote did not start: {e}{stderr}") from e
        if "error" in reply:
            self.close()
            try:
                error = _error_info(reply["error"])
            except abi.ProtocolError as e:
                raise BackendError(f"the function's zygote broke the protocol: {e}") from e
            raise FunctionLoadError(error)
        self.memory_bytes = reply["rss"] * 1024
        if isolate and not reply["private_tmp"]:
            log.warning("no user namespaces here: the instances of %s share /tmp", spec.key)
        if spec.warmup is not None:
            self.warmup = self._warm_up()
        self._freeze()

    def _stderr(self) -> str:
        try:
            self.process.kill()
            err = self.process.communicate(timeout=5)[1].decode(errors="replace").strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return f"; {err[-2000:]}" if err else ""

    def _warm_up(self) -> InvocationResult:
        """Run the handler on the deployer's warm-up event in the zygote, before any fork."""
        try:
            with self.lock:
                abi.send(self.control, {"kind": "warmup"})
                _, fds, _, _ = socket.recv_fds(self.control, 1, 1)
            if not fds:
                raise EOFError("the zygote exited")
        except (OSError, EOFError) as e:
            self.close()
            raise BackendError(f"the function's zygote could not warm up: {e}") from e
        instance = ProcessInstance(self, socket.socket(fileno=fds[0]), None)
        context = invocation_context(self.spec.memory_mib, self.spec.timeout_s, WARMUP_REQUEST_ID)
        try:
            result = instance.invoke(json.loads(self.spec.warmup), context, self.spec.timeout_s)
        finally:
            instance.close()
        if result.error is not None:
            self.close()
            e = result.error
            raise FunctionLoadError(ErrorInfo(e.type, f"the warm-up invocation failed: "
                                                      f"{e.message}", e.traceback, e.kind))
        return result

    def _freeze(self) -> None:
        """The function's before-freeze hooks, in the zygote, before its first fork."""
        try:
            with self.lock:
                abi.send(self.control, {"kind": abi.FREEZE})
                reply, _ = abi.recv(self.control)
            error = reply["error"]
            info = None if error is None else _error_info(error)
        except (OSError, EOFError, abi.ProtocolError, KeyError, TypeError) as e:
            self.close()
            raise BackendError(f"the function's zygote did not freeze: {e}") from e
        if info is not None:
            self.close()
            raise FunctionLoadError(ErrorInfo(info.type, f"a before-freeze hook failed: "
                                                         f"{info.message}", info.traceback,
                                              info.kind))

    def fork(self) -> ProcessInstance:
        with self.lock:
            if self.closed:
                raise BackendError("this template is closed")
            try:
                abi.send(self.control, {"kind": "fork"})
                _, fds, _, _ = socket.recv_fds(self.control, 1, 1)
                if not fds:
                    raise EOFError("the zygote exited")
                pid = abi.recv(self.control)[0]["pid"]
            except (OSError, EOFError, abi.ProtocolError, KeyError) as e:
                raise BackendError(f"the function's zygote could not fork: {e}") from e
        return ProcessInstance(self, socket.socket(fileno=fds[0]), pid)

    def kill(self, pid: int) -> None:
        with self.lock:
            if self.closed:
                return
            try:
                abi.send(self.control, {"kind": "kill", "pid": pid})
            except OSError:
                pass

    def save(self, directory: Path) -> None:
        raise NotImplementedError("process templates have no snapshot")

    def prepare_restore(self) -> None:
        pass  # no snapshots to restore

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
        return ProcessTemplate(spec, self.isolate, self.hide, guest_lib())

    def restore(self, spec: FunctionSpec, directory: Path) -> ProcessTemplate:
        raise NotImplementedError("process templates have no snapshot")

    def prepare_restore(self) -> None:
        pass  # no snapshots to restore

    def overhead_bytes(self) -> int:
        return 0  # every zygote belongs to a template

    def close(self) -> None:
        pass  # every zygote belongs to a template
