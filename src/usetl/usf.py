"""One USF: a VM running the image's CPython on the libos, with its agent.

`Usf.start()` boots nothing: it loads CPython into guest memory, runs it
until the agent waits for work, and reports the start-up time.
`Usf.invoke()` hands the agent one request and runs the VM until the
agent waits again; `load_function()` and `call()` are the function
requests on top of it (import the handler once, then call it per event).

Each USF has the ETL device (/dev/etl) with its two regions above guest RAM:
the host region (read-only to the guest) at HOST_REGION_GPA and the guest
region right after it. All its state is plain Python objects (`Usf.etl`)
and memfd-backed `vm.regions`, reset at the start of every invocation.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from usetl.errors import UsetlError
from usetl.etl.accounting import IoAccount
from usetl.etl.errors import EtlError
from usetl.etl.policy import UrlPolicy
from usetl.image import default_image
from usetl.image.archive import ImageArchive
from usetl.libos.devices import AgentChannel, console_node, makedev, standard_devices
from usetl.libos.errors import LibosError
from usetl.libos.etl_device import ETL_DEVICE, HOST_REGION_GPA, EtlDevice
from usetl.libos.files import O_RDONLY, NullFile, OutputFile
from usetl.libos.fs import Namespace
from usetl.libos.kernel import Kernel
from usetl.libos.loader import load_program
from usetl.libos.vdso import VdsoClock, tsc_usable
from usetl.vm import GuestFault, GuestTimeout, Stop, Vm, VmError
from usetl.vm.layout import HUGE_PAGE, PD_COUNT, VDSO_ADDR
from usetl.vm.machine import RegionSpec

log = logging.getLogger(__name__)

GUEST_ENV = ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "TMPDIR=/tmp"]
INLINE_EVENT = 64 << 10  # a larger event goes to the host region as a file
EVENT_FILE = "event.json"


class UsfError(UsetlError):
    """The USF could not start, or is no longer usable."""


@dataclass
class InvocationResult:
    stdout: str
    stderr: str
    error: dict | None
    total_ms: float
    syscalls: int
    syscall_ms: float
    stdout_truncated: bool = False
    value: object = None  # what the handler returned (invoke)
    io: dict = field(default_factory=dict)  # the ETL requests' IoAccount.as_dict()
    extra: dict = field(default_factory=dict)  # the rest of the agent's reply (guest_ms, ...)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class ProgramResult:
    status: int
    stdout: bytes
    stderr: bytes
    syscalls: int


@dataclass
class UsfConfig:
    mem_mib: int = 256
    tmpfs_mib: int = 64
    output_limit: int = 16 << 20
    start_timeout: float = 60.0
    trace: bool = False
    vdso: bool = True  # clock_gettime in the guest without an exit (needs an invariant TSC)
    host_region_mib: int = 256  # downloads and the event (a memfd: unused space costs nothing)
    guest_region_mib: int = 64  # files the function writes
    allow: Sequence[str] = ()  # URL prefixes the function may GET and POST
    allow_private: bool = False  # let allowed names resolve to private/loopback addresses
    etl_timeout: float = 30.0  # seconds each network wait of an ETL request may take

    def regions(self) -> list[RegionSpec]:
        host, guest = self.host_region_mib << 20, self.guest_region_mib << 20
        if self.mem_mib << 20 > HOST_REGION_GPA:
            raise UsfError(f"guest memory is at most {HOST_REGION_GPA >> 20} MiB with ETL regions")
        for size, name in ((host, "host"), (guest, "guest")):
            if size <= 0 or size % HUGE_PAGE:
                raise UsfError(f"the {name} region must be a positive even number of MiB")
        if HOST_REGION_GPA + host + guest > (PD_COUNT << 30) - HUGE_PAGE:
            raise UsfError("the ETL regions are too large together (at most 2046 MiB)")
        return [
            RegionSpec("host", HOST_REGION_GPA, host, guest_writable=False),
            RegionSpec("guest", HOST_REGION_GPA + host, guest, guest_writable=True),
        ]


_clock: VdsoClock | None = None


def _shared_clock() -> VdsoClock | None:
    """One TSC calibration per monitor process, refined at every anchor."""
    global _clock
    if _clock is None and tsc_usable():
        _clock = VdsoClock()
    return _clock


class Usf:
    def __init__(self, image: ImageArchive | None = None, config: UsfConfig | None = None):
        self.config = config or UsfConfig()
        self.image = image or ImageArchive.open(default_image())
        self.channel = AgentChannel()
        self.executable = self.image.meta["executable"]
        self.clock = _shared_clock() if self.config.vdso else None
        self.vm: Vm | None = None
        self.kernel: Kernel | None = None
        self.etl: EtlDevice | None = None
        self.alive = False
        self.startup_ms = 0.0
        self.startup_syscalls = 0
        self.startup_syscall_ms = 0.0

    def boot(self, path: str, argv: list[str], files: dict[str, bytes] | None = None) -> None:
        """Create the VM and its kernel and load the program at `path` (no code runs yet).

        `files` are put in the tmpfs first (keys are paths under /tmp).
        """
        cfg = self.config
        try:
            policy = UrlPolicy(cfg.allow, cfg.allow_private)
        except EtlError as e:
            raise UsfError(f"bad allow-list entry {e.url!r}: {e.reason}") from e
        self.vm = Vm(cfg.mem_mib, cfg.regions())
        self.etl = EtlDevice(
            self.vm.regions["host"], self.vm.regions["guest"], policy, cfg.etl_timeout
        )
        devices = standard_devices(self.channel)
        devices[ETL_DEVICE] = self.etl.node(15, makedev(10, 243))
        ns = Namespace(self.image, cfg.tmpfs_mib << 20, devices, self.executable)
        k = self.kernel = Kernel(self.vm, ns, cfg.output_limit)
        # One policy for both paths: etl.get/post and the guest's own sockets.
        k.allow_sockets(policy if cfg.allow else None)
        if cfg.trace:
            k.trace = []
        null = ns.dev.entries["null"]
        k.fds.install_at(0, NullFile(null, O_RDONLY, "/dev/null"))
        k.fds.install_at(1, OutputFile(console_node(20), "stdout", cfg.output_limit))
        k.fds.install_at(2, OutputFile(console_node(21), "stderr", cfg.output_limit))
        for name, data in (files or {}).items():
            ns.tmp.add_file(name, data)
        vdso = None
        if self.clock is not None:
            self.clock.install(self.vm.ram)
            vdso = VDSO_ADDR
        try:
            prog = load_program(
                k.mm, self.vm.ram.view, ns, path, argv, GUEST_ENV,
                (k.identity.uid, k.identity.gid), vdso,
            )
        except LibosError as e:
            raise UsfError(f"cannot load {path}: {e}") from e
        self.vm.enter_user(prog.entry, prog.stack_pointer)

    def start(self) -> float:
        """Load CPython and run it until the agent waits; returns milliseconds taken."""
        t0 = time.perf_counter()
        cfg = self.config
        self.boot(self.executable, [self.executable, "-I", "-S", self.image.meta["agent"]])
        assert self.vm is not None and self.kernel is not None
        k = self.kernel
        try:
            stop = self.vm.run(k, timeout=cfg.start_timeout)
        except VmError as e:
            raise UsfError(f"the guest crashed while starting Python: {e}{self._tail()}") from e
        if stop.reason != "pause":
            raise UsfError(
                f"the guest's Python exited with status {stop.status} while starting{self._tail()}"
            )
        self.alive = True
        self.startup_ms = (time.perf_counter() - t0) * 1e3
        self.startup_syscalls = k.stats.count
        self.startup_syscall_ms = k.stats.seconds * 1e3
        self._take_output()
        return self.startup_ms

    def _tail(self) -> str:
        if self.kernel is None:
            return ""
        err = self.kernel.output(2).take()[0].decode(errors="replace").strip()
        return f"; guest stderr: {err[-2000:]}" if err else ""

    def _take_output(self) -> tuple[bytes, bytes, bool]:
        assert self.kernel is not None
        out, t1 = self.kernel.output(1).take()
        err, t2 = self.kernel.output(2).take()
        return out, err, t1 or t2

    def invoke(
        self,
        request: dict,
        timeout: float | None = None,
        host_files: dict[str, bytes] | None = None,
    ) -> InvocationResult:
        """Run one request in the agent; a guest fault or timeout ends this USF.

        The ETL regions start empty, then hold `host_files` (name -> bytes)
        in the host region.
        """
        if not self.alive or self.vm is None or self.kernel is None or self.etl is None:
            raise UsfError("this USF is not running (it was never started, or its guest died)")
        k, vm = self.kernel, self.vm
        count0, secs0 = k.stats.count, k.stats.seconds
        t0 = time.perf_counter()
        self.etl.reset(deadline=time.monotonic() + timeout if timeout is not None else None)
        k.net_account = IoAccount()
        for name, data in (host_files or {}).items():
            try:
                self.etl.put_host_file(name, data)
            except EtlError as e:
                raise UsfError(f"{name} does not fit in the host region: {e.reason}") from e
        self.channel.post(json.dumps(request).encode())
        if self.clock is not None:
            self.clock.anchor(vm.ram)
        error = None
        reply = None
        try:
            stop = k.resume(vm.regs)
            vm.mark_regs_dirty()
            if stop is None:
                stop = vm.run(k, timeout=timeout)
            if stop.reason == "pause":
                raw = self.channel.take_reply()
                reply = json.loads(raw) if raw is not None else None
                if reply is None:
                    error = {"type": "AgentError", "message": "the agent waited without replying"}
            else:
                self.alive = False
                error = self._exit_error(stop)
        except GuestTimeout as e:
            self.alive = False
            error = {"type": "Timeout", "message": str(e)}
        except GuestFault as e:
            self.alive = False
            error = {"type": "GuestFault", "message": str(e)}
        except VmError as e:
            self.alive = False
            error = {"type": "GuestCrash", "message": str(e)}
        value = None
        if reply is not None:
            error = reply.pop("error", None)
            value = reply.pop("value", None)
        out, err, truncated = self._take_output()
        return InvocationResult(
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
            error=error,
            total_ms=(time.perf_counter() - t0) * 1e3,
            syscalls=k.stats.count - count0,
            syscall_ms=(k.stats.seconds - secs0) * 1e3,
            stdout_truncated=truncated,
            value=value,
            io=self._io(),
            extra=reply or {},
        )

    def _io(self) -> dict:
        """The invocation's I/O: ETL requests plus the socket path, as one bill."""
        assert self.kernel is not None
        total = IoAccount()
        total.add(self.etl.account)
        total.add(self.kernel.net_account)
        return total.as_dict()

    def _exit_error(self, stop: Stop) -> dict:
        assert self.kernel is not None
        if self.kernel.term_signal is not None:
            name = signal.Signals(self.kernel.term_signal).name
            return {"type": "GuestExit", "message": f"the guest was killed by {name}"}
        return {"type": "GuestExit", "message": f"the guest exited with status {stop.status}"}

    def run_code(self, code: str, timeout: float | None = None) -> InvocationResult:
        return self.invoke({"kind": "exec", "code": code}, timeout=timeout)

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
        assert self.kernel is not None
        for name, data in (files or {}).items():
            self.kernel.ns.tmp.add_file(name, data, 0o644)
        request: dict = {"kind": "load", "handler": handler, "sys_path": list(sys_path)}
        if source is not None:
            request.update(source=source, filename=filename)
        else:
            request["path"] = path
        return self.invoke(request, timeout=timeout)

    def call(
        self, event: object, context: dict | None = None, timeout: float | None = None
    ) -> InvocationResult:
        """Call the loaded handler with event (JSON) and a context; .value is its return."""
        ctx = {
            "request_id": uuid.uuid4().hex,
            "deadline": time.time() + timeout if timeout is not None else None,
            "memory_mib": self.config.mem_mib,
            **(context or {}),
        }
        try:
            data = json.dumps(event).encode()
        except (TypeError, ValueError) as e:
            raise UsfError(f"the event is not JSON-serialisable: {e}") from e
        if len(data) <= INLINE_EVENT:
            return self.invoke({"kind": "invoke", "event": event, "context": ctx}, timeout)
        request = {"kind": "invoke", "event_file": EVENT_FILE, "context": ctx}
        return self.invoke(request, timeout, host_files={EVENT_FILE: data})

    def run_program(self, timeout: float | None = None) -> ProgramResult:
        """Run a program loaded by boot() to its exit (for programs other than the agent)."""
        assert self.vm is not None and self.kernel is not None
        stop = self.vm.run(self.kernel, timeout=timeout)
        out, err, _ = self._take_output()
        if stop.reason != "exit":
            raise UsfError("the program waited on the agent channel instead of exiting")
        return ProgramResult(stop.status, out, err, self.kernel.stats.count)

    # -- what templates and clones need ------------------------------------------

    def externals(self) -> dict[str, object]:
        """Objects bound to this process, left out of a pickled monitor state by name."""
        from usetl.libos.syscalls.table import HANDLERS

        assert self.vm is not None and self.kernel is not None
        objects: dict[str, object] = {
            "vm": self.vm, "image": self.image, "imagefs": self.kernel.ns.image,
            "clock": self.clock, "handlers": HANDLERS,
        }
        for name, mem in self.vm.memory().items():
            objects[f"mem:{name}"] = mem
            objects[f"view:{name}"] = mem.view
        return objects

    def attach(self, vm: Vm) -> None:
        """Run this USF's monitor state on another VM with the same memory (a clone's)."""
        assert self.kernel is not None
        self.vm = vm
        self.kernel.vm = vm
        self.alive = True

    def refresh_identity(self, instance_id: str) -> InvocationResult:
        """Give the guest a unique identity: fresh seeds for its RNGs and an instance id.

        This also warms the agent's request path in a fresh clone.
        """
        seed = os.urandom(32).hex()
        return self.invoke({"kind": "identity", "instance": instance_id, "seed": seed})

    def close(self) -> None:
        self.etl = None
        if self.vm is not None:
            self.vm.close()
            self.vm = None
        self.alive = False

    def __enter__(self) -> Usf:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
