"""The processes behind templates and clones (this module's code runs in them).

A template process holds a paused USF whose VM is closed: guest memory
(memfds), the captured vCPU state and the monitor state, all frozen. For
each clone it forks a child that maps the memory copy-on-write, creates a
new VM with the captured state and serves invocations on its own socket.
A function template is such a child that loaded a function and then became
a template process itself.

    python -m usetl.hyperfork.worker FD    # FD: the controller's socket
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import logging
import os
import resource
import signal
import sys
import time
import uuid
from dataclasses import asdict

from usetl.image.archive import ImageArchive
from usetl.libos.hostfs import HostDirFS
from usetl.usf import Usf, UsfConfig
from usetl.vm import GuestMemory, RegionSpec, Vm
from usetl.vm.memory import data_ranges
from usetl.vm.vcpu_state import VcpuState

from . import monitor_state
from .ipc import Channel, ChannelClosed

log = logging.getLogger(__name__)


class Frozen:
    """A paused USF captured for cloning: monitor state, vCPU state and guest memory.

    `usf` is the monitor state as live objects (clones inherit it by fork);
    `state` is the same pickled (rollback and snapshots read it).
    """

    def __init__(self, usf: Usf, vcpu: VcpuState, state: bytes,
                 memory: dict[str, GuestMemory], specs: list[RegionSpec]):
        self.usf = usf
        self.vcpu = vcpu
        self.state = state
        self.memory = memory
        self.specs = specs
        # What the memory files hold when frozen, before any clone touched them.
        self.data = {name: data_ranges(m.fd, m.size) for name, m in memory.items()}

    @classmethod
    def capture(cls, usf: Usf) -> Frozen:
        """Freeze a USF paused in the agent's wait; its VM is closed, its memory kept."""
        vm = usf.vm
        assert vm is not None
        vm.settle()
        frozen = cls(usf, vm.save_state(), monitor_state.dumps(usf), vm.memory(), vm.specs)
        vm.release()
        return frozen

    def trim(self) -> None:
        """Give back the zero pages clones' faults added to the memory files (see trim_outside)."""
        for name, mem in self.memory.items():
            keep = self.data[name]
            if _resident(mem.fd) > sum(n for _, n in keep) + TRIM_SLACK:
                mem.trim_outside(keep)

    def info(self) -> dict:
        return {
            "pid": os.getpid(),
            "startup_ms": self.usf.startup_ms,
            "memory_bytes": sum(_resident(m.fd) for m in self.memory.values()),
            "state_bytes": len(self.state),
        }


PR_SET_NO_NEW_PRIVS = 38

# How far a template's memory file may grow with clones' zero pages before it is trimmed.
TRIM_SLACK = 16 << 20


def _resident(fd: int) -> int:
    return os.fstat(fd).st_blocks * 512


# Compiles and runs code, as most requests do: the agent's whole request path.
WARM_REQUEST = {"kind": "exec", "code": "pass"}


class CloneProcess:
    """One clone: a new VM over a private view of the template's memory."""

    def __init__(self, frozen: Frozen):
        t0 = time.perf_counter()
        self.frozen = frozen
        usf = frozen.usf
        for mem in frozen.memory.values():
            mem.make_private()
        t1 = time.perf_counter()
        self.vm = Vm(usf.config.mem_mib, frozen.specs, memory=frozen.memory)
        t2 = time.perf_counter()
        self.vm.restore_state(frozen.vcpu)
        usf.attach(self.vm)
        self.usf = usf
        self.instance = uuid.uuid4().hex
        self.needs_identity = False
        t3 = time.perf_counter()
        self.timings = {"map_ms": (t1 - t0) * 1e3, "vm_ms": (t2 - t1) * 1e3,
                        "restore_ms": (t3 - t2) * 1e3}

    def refresh(self) -> dict:
        t0 = time.perf_counter()
        result = self.usf.refresh_identity(self.instance)
        if not result.ok:
            raise RuntimeError(f"the clone's guest did not take its identity: {result.error}")
        self.timings["identity_ms"] = (time.perf_counter() - t0) * 1e3
        self.timings["identity_syscalls"] = result.syscalls
        return {"pid": os.getpid(), "instance": self.instance, "timings": self.timings}

    def warm(self) -> dict:
        """Run a no-op request and roll back, ahead of demand.

        A fresh clone's first request pays for first touches of many pages
        (copy-on-write on the host, shadow page faults in KVM); a clone that
        has run once and been rolled back keeps those pages mapped.
        """
        t0 = time.perf_counter()
        result = self.usf.invoke(WARM_REQUEST)
        if not result.ok:
            raise RuntimeError(f"the clone's warm-up request failed: {result.error}")
        self.rollback()
        return {"ms": (time.perf_counter() - t0) * 1e3}

    def rollback(self, fresh_identity: bool = True) -> dict:
        """Back to the template's exact state: dirtied pages, vCPU, monitor.

        Then, unless told not to, the guest takes a fresh identity at once,
        so that the next request does not pay for it.
        """
        t0 = time.perf_counter()
        pages = 0
        for mem in self.vm.memory().values():
            ranges = mem.written_ranges()
            mem.revert(ranges)
            pages += sum(length for _, length in ranges) // 4096
        self.vm.restore_state(self.frozen.vcpu)
        externals = self.usf.externals()
        self.usf = monitor_state.loads(self.frozen.state, externals)
        self.usf.attach(self.vm)
        restore_ms = (time.perf_counter() - t0) * 1e3
        self.needs_identity = True  # taken by the next request if not now
        if fresh_identity:
            self.refresh()
            self.needs_identity = False
        return {"pages": pages, "restore_ms": restore_ms, "ms": (time.perf_counter() - t0) * 1e3}

    def invoke(self, request: dict, timeout: float | None) -> dict:
        if self.needs_identity:
            self.refresh()
            self.needs_identity = False
        return asdict(self.usf.invoke(request, timeout=timeout))

    def inspect(self, needle: bytes | None) -> dict:
        """Digests of guest memory and where `needle` occurs in it (for checking isolation)."""
        memory = self.vm.memory()
        found = []
        for mem in memory.values() if needle else ():
            data = bytes(mem.view)
            at = data.find(needle)
            while at >= 0:
                found.append(mem.gpa + at)
                at = data.find(needle, at + 1)
        return {"sha256": _digests(memory), "found": found}

    def serve(self, chan: Channel) -> None:
        while True:
            msg, _ = chan.recv()
            op = msg[0]
            try:
                if op == "invoke":
                    reply = ("ok", self.invoke(msg[1], msg[2]))
                elif op == "rollback":
                    if not self.usf.alive:
                        raise RuntimeError("the clone's guest died; it cannot be rolled back")
                    reply = ("ok", self.rollback(msg[1]))
                elif op == "inspect":
                    reply = ("ok", self.inspect(msg[1]))
                elif op == "close":
                    chan.send(("ok", None))
                    return
                else:
                    reply = ("error", f"unknown clone request {op!r}")
            except Exception as e:
                log.exception("clone request %s failed", op)
                reply = ("error", f"{type(e).__name__}: {e}")
            chan.send(reply)


def _digests(memory: dict[str, GuestMemory]) -> dict[str, str]:
    return {name: hashlib.sha256(mem.view).hexdigest() for name, mem in memory.items()}


class TemplateProcess:
    def __init__(self, frozen: Frozen, chan: Channel):
        self.frozen = frozen
        self.chan = chan

    def serve(self) -> None:
        # Forked clones are never waited for; ignoring SIGCHLD reaps them.
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        gc.collect()
        gc.freeze()
        while True:
            try:
                msg, fds = self.chan.recv()
            except ChannelClosed:
                return
            op = msg[0]
            if op == "fork":
                self._fork(fds[0], msg[1], msg[2])
            elif op == "info":
                self.chan.send(("ok", self.frozen.info()))
            elif op == "inspect":
                self.chan.send(("ok", {"sha256": _digests(self.frozen.memory)}))
            elif op == "save":
                try:
                    from .snapshot import save

                    save(self.frozen, msg[1])
                    self.chan.send(("ok", None))
                except Exception as e:
                    log.exception("saving the template failed")
                    self.chan.send(("error", f"cannot save the template: {e}"))
            elif op == "close":
                self.chan.send(("ok", None))
                return
            else:
                self.chan.send(("error", f"unknown template request {op!r}"))
            for fd in fds[1:]:
                os.close(fd)

    def _fork(self, fd: int, load: dict | None, warm: bool = False) -> None:
        pid = os.fork()
        if pid:
            os.close(fd)
            self.chan.send(("ok", pid))
            self.frozen.trim()
            return
        chan = Channel.from_fd(fd)
        status = 0
        try:
            self.chan.sock.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            clone = CloneProcess(self.frozen)
            if load is None:
                info = clone.refresh()
                if warm:
                    info["warm"] = clone.warm()
                chan.send(("ok", info))
                clone.serve(chan)
            else:
                become_function_template(clone, load, chan)
        except ChannelClosed:
            pass
        except BaseException as e:
            log.exception("clone failed")
            try:
                chan.send(("error", f"{type(e).__name__}: {e}"))
            except ChannelClosed:
                pass
            status = 1
        finally:
            os._exit(status)


def become_function_template(clone: CloneProcess, load: dict, chan: Channel) -> None:
    """Run the load request in this clone, then freeze it as a template of its own."""
    usf = clone.usf
    assert usf.kernel is not None
    for name, host_dir in load["mounts"].items():
        usf.kernel.ns.mount(name, HostDirFS(host_dir))
    t0 = time.perf_counter()
    result = usf.invoke(load["request"], timeout=load.get("timeout"))
    if not result.ok:
        error = result.error or {}
        text = error.get("traceback") or error.get("message") or str(error)
        chan.send(("error", f"loading the function failed: {text}"))
        return
    usf.startup_ms = (time.perf_counter() - t0) * 1e3
    assert usf.vm is not None
    for mem in usf.vm.memory().values():
        mem.copy_to_new_file()
    frozen = Frozen.capture(usf)
    info = frozen.info()
    info["load"] = asdict(result)
    chan.send(("ok", info))
    TemplateProcess(frozen, chan).serve()


def start_template(chan: Channel, image_path: str, config: UsfConfig) -> None:
    try:
        usf = Usf(ImageArchive.open(image_path), config)
        usf.start()
        frozen = Frozen.capture(usf)
    except Exception as e:
        log.exception("the template did not start")
        chan.send(("error", f"{type(e).__name__}: {e}"))
        return
    chan.send(("ok", frozen.info()))
    TemplateProcess(frozen, chan).serve()


def load_template(chan: Channel, directory: str) -> None:
    from .snapshot import load

    try:
        frozen = load(directory)
    except Exception as e:
        log.debug("snapshot refused", exc_info=True)
        chan.send(("error", str(e)))
        return
    chan.send(("ok", frozen.info()))
    TemplateProcess(frozen, chan).serve()


def confine() -> None:
    """What a template process and its clones may not do, inherited by every fork.

    No new privileges through exec (they never exec), and no core dumps: a
    crashed monitor must not write guest memory to disk.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        log.warning("PR_SET_NO_NEW_PRIVS refused: %s", os.strerror(ctypes.get_errno()))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main(argv: list[str]) -> None:
    logging.basicConfig(level=os.environ.get("USETL_LOG", "WARNING"), stream=sys.stderr)
    confine()
    chan = Channel.from_fd(int(argv[1]))
    msg, _ = chan.recv()
    if msg[0] == "start":
        start_template(chan, msg[1], msg[2])
    elif msg[0] == "load":
        load_template(chan, msg[1])
    else:
        chan.send(("error", f"unknown first request {msg[0]!r}"))


if __name__ == "__main__":
    main(sys.argv)


