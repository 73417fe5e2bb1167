"""A running USF: a VM executing the image's CPython on the libos, and its agent's client.

`invoke()` hands the agent one request and runs the VM until the agent
waits again; `load_function()` and `call()` are the function requests on
top of it (import the handler once, then call it per event). A `Usf` is
made by builder.py (`start_usf`, `boot_usf`): every part of it exists.

Each USF has the ETL device (/dev/etl) with its two regions above guest RAM:
the host region (read-only to the guest) and the guest region right after
it. All its state is plain Python objects (`Usf.etl`) and memfd-backed
`vm.regions`, reset at the start of every invocation.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from usetl import abi
from usetl.etl.accounting import IoAccount
from usetl.etl.errors import EtlError
from usetl.image.archive import ImageArchive, ImageError
from usetl.invocation import (
    AGENT_ERROR,
    GUEST_CRASH,
    GUEST_EXIT,
    GUEST_FAULT,
    MONITOR_ERROR,
    TIMEOUT,
    ErrorInfo,
    InvocationResult,
    IoUsage,
    ModuleNames,
    invocation_context,
)
from usetl.libos import sharedtmp
from usetl.libos.archivefs import ModuleRegion, mount_archive
from usetl.libos.devices import AgentChannel
from usetl.libos.errors import LibosError, MonitorError
from usetl.libos.etl_device import EtlDevice
from usetl.libos.handoff import HandOff, HandOffError
from usetl.libos.hostfs import HostDirFS
from usetl.libos.kernel import Kernel
from usetl.vm import GuestFault, GuestTimeout, Stop, Vm, VmError
from usetl.vm.memory import GuestMemoryError

from .config import UsfConfig, UsfError

INLINE_EVENT = 64 << 10  # a larger event goes to the host region as a file
EVENT_FILE = "event.json"


def request_body(request: dict, encoded: dict[str, bytes] | None) -> bytes:
    """The request's JSON, with the `encoded` fields (values that are JSON already) added."""
    body = abi.dumps(request).encode()
    if not encoded:
        return body
    fields = b"".join(b", " + abi.dumps(name).encode() + b": " + value
                      for name, value in encoded.items())
    return body[:-1] + fields + b"}"  # a request is an object with a kind: never {}


class AgentReply(msgspec.Struct):
    """The guest agent's reply, decoded and checked (the guest is not trusted)."""

    value: Any = None
    error: ErrorInfo | None = None
    guest_ms: float = 0.0
    guest_cpu_ms: float = 0.0
    import_ms: float | None = None  # a load request's
    modules: int | None = None  # a load request's: len(sys.modules)
    imported: ModuleNames = msgspec.field(default_factory=list)  # an invoke's new modules

    def extra(self) -> dict[str, Any]:
        return {name: value for name, value in (("import_ms", self.import_ms),
                                                 ("modules", self.modules)) if value is not None}


@dataclass
class ProgramResult:
    status: int
    stdout: bytes
    stderr: bytes
    syscalls: int


@dataclass
class Startup:
    """What starting CPython cost (zero for a program that was only booted)."""

    ms: float = 0.0
    syscalls: int = 0
    syscall_ms: float = 0.0


class Usf:
    def __init__(self, config: UsfConfig, image: ImageArchive, vm: Vm, kernel: Kernel,
                 etl: EtlDevice, modules: ModuleRegion, channel: AgentChannel):
        self.config = config
        self.image = image
        self.vm = vm
        self.kernel = kernel
        self.etl = etl
        self.modules = modules
        self.channel = channel
        self.startup = Startup()
        self.alive = False  # the agent waits for work
        # A fresh identity the next request carries (abi.IDENTITY): a clone's, after its
        # fork or a rollback.
        self.identity_due: dict[str, str] | None = None

    def mount(self, name: str, host_path: str) -> None:
        """Show a host directory, or a packed archive (see libos.archivefs), read-only at /name.

        An archive is also placed in the module region, for the guest's importer.
        """
        try:
            if os.path.isdir(host_path):
                self.kernel.ns.mount(name, HostDirFS(host_path))
            else:
                mount_archive(self.kernel.ns, self.modules, name, host_path)
        except (ImageError, LibosError, OSError) as e:
            raise UsfError(f"cannot mount {host_path} at /{name}: {e}") from e

    def stderr_tail(self) -> str:
        """What the guest wrote to stderr, for an error message ("" if nothing)."""
        err = self.kernel.output(2).take()[0].decode(errors="replace").strip()
        return f"; guest stderr: {err[-2000:]}" if err else ""

    def take_output(self) -> tuple[bytes, bytes, bool]:
        """stdout and stderr captured since the last take, and whether either was truncated."""
        out, t1 = self.kernel.output(1).take()
        err, t2 = self.kernel.output(2).take()
        return out, err, t1 or t2

    def invoke(
        self,
        request: dict,
        timeout: float | None = None,
        host_files: dict[str, bytes] | None = None,
        handoff: HandOff | None = None,
        encoded: dict[str, bytes] | None = None,
    ) -> InvocationResult:
        """Run one request in the agent; a guest fault or timeout ends this USF.

        The ETL regions start empty, then hold `host_files` (name -> bytes) in the host
        region, and the files of `handoff` (a previous pipeline stage's, mapped in place for
        this request only). `encoded`: more fields, each value JSON already (call()'s event).
        """
        if not self.alive:
            raise UsfError("this USF is not running (it was never started, or its guest died)")
        k = self.kernel
        count0, secs0, exits0 = k.stats.count, k.stats.seconds, self.vm.exits
        touches0 = self._first_touches()
        t0 = time.perf_counter()
        # Billed CPU is what the host measured: this thread runs the vCPU (KVM_RUN) and serves
        # its syscalls. The agent's own figure is the guest's word, so it is not used.
        # The ETL requests this thread carried out are billed as I/O (io.host_cpu_s) instead.
        cpu0 = time.thread_time()
        k.deadline = time.monotonic() + timeout if timeout is not None else None
        self.etl.reset(deadline=k.deadline)
        k.net_account = IoAccount()
        unimplemented0 = dict(k.stats.unimplemented)
        try:
            reply, error = self._run_with(request, timeout, host_files or {}, handoff, encoded)
        finally:
            self.etl.end_transfers()  # none writes into the region after its invocation
        k.children.end_all(k)  # no child outlives its invocation; their output is in by now
        # Its children's monitors' CPU time too (wait4's, the host's figure): theirs is the
        # function's work.
        cpu_ms = (time.thread_time() - cpu0 + k.children.take_cpu()) * 1e3
        out, err, truncated = self.take_output()
        io = self._io()
        result = InvocationResult(
            error=error,
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
            stdout_truncated=truncated,
            total_ms=(time.perf_counter() - t0) * 1e3,
            syscalls=k.stats.count - count0,
            syscall_ms=(k.stats.seconds - secs0) * 1e3,
            exits=self.vm.exits - exits0,
            first_touches=self._first_touches() - touches0,
            # ETL requests served on host threads (a threaded guest's) are not in cpu_ms.
            guest_cpu_ms=max(0.0, cpu_ms - (io.host_cpu_s - self.etl.off_vcpu_cpu_s) * 1e3),
            io=io,
            unimplemented=self._unimplemented_since(unimplemented0),
        )
        if reply is not None:
            result.value = reply.value
            result.error = reply.error
            result.guest_ms = reply.guest_ms
            result.extra = reply.extra()
            result.imported = reply.imported
        return result

    def _run_with(self, request: dict, timeout: float | None, host_files: dict[str, bytes],
                  handoff: HandOff | None, encoded: dict[str, bytes] | None
                  ) -> tuple[AgentReply | None, ErrorInfo | None]:
        """Put the files in the host region, post the request and run it; handed-in files
        are mapped for this request only."""
        try:
            if handoff is not None:
                self.etl.hand_in(handoff)
            for name, data in host_files.items():
                self.etl.put_host_file(name, data)
        except EtlError as e:
            self.etl.give_back()
            raise UsfError(f"{e.url} does not fit in the host region: {e.reason}") from e
        except (HandOffError, GuestMemoryError) as e:
            self.etl.give_back()
            raise UsfError(f"the previous stage's files cannot be handed in: {e}") from e
        if self.identity_due is not None:
            request = {**request, abi.IDENTITY: self.identity_due}
            self.identity_due = None
        try:
            self.channel.post(request_body(request, encoded))
            self.kernel.clock.anchor()
            return self._run_request(timeout)
        finally:
            self.etl.give_back()

    def _run_request(self, timeout: float | None) -> tuple[AgentReply | None, ErrorInfo | None]:
        """Run the guest until the agent waits again: its reply, or why there is none."""
        k, vm = self.kernel, self.vm
        try:
            stop = k.resume(vm.regs)
            vm.mark_regs_dirty()
            if stop is None:
                stop = vm.run(k, timeout=timeout)
        except GuestTimeout as e:
            return self._ended(TIMEOUT, str(e))
        except GuestFault as e:
            return self._ended(GUEST_FAULT, str(e))
        except MonitorError as e:
            return self._ended(MONITOR_ERROR, str(e))
        except VmError as e:
            return self._ended(GUEST_CRASH, str(e))
        if stop.reason != "pause":
            self.alive = False
            return None, self._exit_error(stop)
        try:
            raw = self.channel.take_reply()
        except abi.ProtocolError as e:
            return self._ended(AGENT_ERROR, f"the agent broke the protocol: {e}")
        if raw is None:
            return None, ErrorInfo(AGENT_ERROR, "the agent waited without replying")
        try:
            return msgspec.json.decode(raw, type=AgentReply), None
        except msgspec.DecodeError as e:  # ValidationError is one: a reply of the wrong shape
            return self._ended(AGENT_ERROR, f"the agent's reply is malformed: {e}")

    def _ended(self, type_: str, message: str) -> tuple[None, ErrorInfo]:
        """The guest cannot serve again after this error."""
        self.alive = False
        return None, ErrorInfo(type_, message)

    def _unimplemented_since(self, before: dict[str, int]) -> dict[str, int]:
        """The unimplemented syscalls (ENOSYS) the guest made since `before`, by name."""
        return {name: n - before.get(name, 0) for name, n in self.kernel.stats.unimplemented.items()
                if n > before.get(name, 0)}

    def _first_touches(self) -> int:
        """The guest page faults KVM has fixed on this vCPU so far (its pf_fixed counter)."""
        return self.vm.vcpu.stats().counter("pf_fixed")

    def _io(self) -> IoUsage:
        """The invocation's I/O: ETL requests plus the socket path, as one bill."""
        etl, net = self.etl.account, self.kernel.net_account
        return IoUsage(**{name: getattr(etl, name) + getattr(net, name)
                          for name in IoUsage.__struct_fields__})

    def _exit_error(self, stop: Stop) -> ErrorInfo:
        if self.kernel.term_signal is not None:
            name = signal.Signals(self.kernel.term_signal).name
            return ErrorInfo(GUEST_EXIT, f"the guest was killed by {name}")
        return ErrorInfo(GUEST_EXIT, f"the guest exited with status {stop.status}")

    def run_code(self, code: str, timeout: float | None = None) -> InvocationResult:
        return self.invoke({"kind": abi.EXEC, "code": code}, timeout=timeout)

    def load_function(
        self,
        handler: str,
        *,
        source: str | None = None,
        filename: str = "function.py",
        path: str | None = None,
        sys_path: Sequence[str] = (),
        files: dict[str, bytes] | None = None,
        timeout: float | None = None,
    ) -> InvocationResult:
        """Import the function's module in the guest once and keep `handler` for call().

        Give `source` (its module is named after `filename`), or the guest
        `path` of a .py file or package directory; `files` (paths relative to
        /tmp) are put in the guest's /tmp first. extra holds import_ms and
        modules (len(sys.modules) in the guest).
        """
        if (source is None) == (path is None):
            raise UsfError("load_function needs either source or path")
        for name, data in (files or {}).items():
            self.kernel.ns.tmp.add_file(name, data, 0o644)
        request: dict = {"kind": abi.LOAD, "handler": handler, "sys_path": list(sys_path)}
        if source is not None:
            request.update(source=source, filename=filename)
        else:
            request["path"] = path
        return self.invoke(request, timeout=timeout)

    def call(
        self, event: object, context: dict | None = None, timeout: float | None = None,
        handoff: HandOff | None = None,
    ) -> InvocationResult:
        """Call the loaded handler with event (JSON) and a context; .value is its return.

        `context` is the platform's (invocation_context); fields missing from it are made
        here the same way, for a USF used on its own.
        """
        ctx = {**invocation_context(self.config.mem_mib, timeout), **(context or {})}
        try:
            data = abi.dumps(event).encode()
        except (TypeError, ValueError) as e:
            raise UsfError(f"the event is not JSON-serialisable: {e}") from e
        if len(data) <= INLINE_EVENT:
            return self.invoke({"kind": abi.INVOKE, "context": ctx}, timeout, handoff=handoff,
                               encoded={"event": data})
        request = {"kind": abi.INVOKE, "event_file": EVENT_FILE, "context": ctx}
        return self.invoke(request, timeout, host_files={EVENT_FILE: data}, handoff=handoff)

    def run_program(self, timeout: float | None = None) -> ProgramResult:
        """Run a program loaded by boot_usf() to its exit (for programs other than the agent)."""
        stop = self.vm.run(self.kernel, timeout=timeout)
        out, err, _ = self.take_output()
        if stop.reason != "exit":
            raise UsfError("the program waited on the agent channel instead of exiting")
        return ProgramResult(stop.status, out, err, self.kernel.stats.count)

    # -- what templates and clones need ------------------------------------------

    def attach(self, vm: Vm) -> None:
        """Run this USF's monitor state on another VM with the same memory (a clone's)."""
        self.vm = vm
        self.kernel.vm = vm
        self.kernel.restored()
        self.alive = True

    def renew_identity(self, instance_id: str) -> None:
        """Have the next request give the guest a unique identity first: fresh seeds for its
        RNGs and an instance id (no run of the guest of its own)."""
        self.identity_due = {"instance": instance_id, "seed": os.urandom(32).hex()}

    def close(self) -> None:
        """Release the VM (idempotent); the USF cannot run again."""
        self.vm.close()
        sharedtmp.discard(self.kernel)  # an invocation that died with children left it
        self.alive = False

    def __enter__(self) -> Usf:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
