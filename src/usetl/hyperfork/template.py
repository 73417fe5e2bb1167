"""Templates and clones as the caller sees them (the controller side).

    tmpl = Template.start()                    # CPython started once, paused
    fn = tmpl.load_function(source=..., handler="main")   # imported once
    clone = fn.fork()                          # a new VM, copy-on-write
    result = clone.invoke({"x": 1})
    clone.rollback()                           # back to fn's exact state
    fn.save("snap"); Template.load("snap")     # survives a restart

Each template and each clone is its own process (see worker.py); these
objects hold the socket to it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TypeVar

import usetl
from usetl import abi
from usetl.image import default_image
from usetl.image.archive import ImageArchive
from usetl.invocation import InvocationResult
from usetl.usf import UsfConfig

from .protocol import (
    Call,
    Channel,
    CloneReady,
    Close,
    Digests,
    Done,
    Fork,
    Forked,
    HyperForkError,
    Info,
    InspectClone,
    Inspected,
    InspectTemplate,
    Invoke,
    Invoked,
    LoadFunction,
    LoadSnapshot,
    Message,
    Rollback,
    RolledBack,
    SaveSnapshot,
    StartTemplate,
    TemplateReady,
    WarmUp,
)

M = TypeVar("M")


class Template:
    """A frozen, started USF that clones are forked from."""

    def __init__(self, chan: Channel, info: TemplateReady,
                 process: subprocess.Popen | None = None):
        self.chan = chan
        self.info = info
        self.pid = info.pid
        self.process = process
        self.closed = False

    # -- making templates -----------------------------------------------------------

    @classmethod
    def start(
        cls,
        image: ImageArchive | str | os.PathLike | None = None,
        mem_mib: int = 256,
        config: UsfConfig | None = None,
    ) -> Template:
        """Start CPython in a new USF and freeze it in the agent's wait: a base template."""
        config = config or UsfConfig(mem_mib=mem_mib)
        if isinstance(image, ImageArchive):
            path = str(image.path)
        else:
            path = str(image if image is not None else default_image())
        return cls._spawn(StartTemplate(path, config))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Template:
        """A template from a snapshot written by save(); its memory is mapped, not read."""
        return cls._spawn(LoadSnapshot(str(Path(directory).resolve())))

    @classmethod
    def _spawn(cls, first: Message) -> Template:
        mine, theirs = Channel.pair()
        env = dict(os.environ)
        src = os.path.dirname(os.path.dirname(os.path.abspath(usetl.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        process = subprocess.Popen(
            [sys.executable, "-m", "usetl.hyperfork.worker", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL,
        )
        theirs.close()
        try:
            reply = mine.request(first, TemplateReady)
        except HyperForkError:
            mine.close()
            process.kill()
            process.wait()
            raise
        return cls(mine, reply, process)

    def load_function(
        self,
        request: dict,
        mounts: dict[str, str] | None = None,
        timeout: float | None = 120.0,
        warmup: WarmUp | None = None,
    ) -> Template:
        """A function template: a clone that ran `request` (the agent's load) and froze again.

        `mounts` maps names to host directories shown read-only at /name (code, modules).
        With `warmup`, it also called the handler once on that event first, and froze after.
        """
        chan = self._fork_channel(Fork(LoadFunction(request, mounts or {}, timeout, warmup)))
        return Template(chan, _first_reply(chan, TemplateReady))

    def fork(self, warm: bool = True) -> Clone:
        """A new clone with its own identity, ready for one invocation at a time.

        `warm` runs a no-op request and a rollback in it first, so that its
        first real request does not pay for first-touch page faults.
        """
        t0 = time.perf_counter()
        chan = self._fork_channel(Fork(warm=warm))
        return Clone(chan, _first_reply(chan, CloneReady), (time.perf_counter() - t0) * 1e3)

    def _fork_channel(self, fork: Fork) -> Channel:
        self._check()
        mine, theirs = Channel.pair()
        try:
            self.chan.request(fork, Forked, fds=(theirs.fileno(),))
        finally:
            theirs.close()
        return mine

    # -- the rest -------------------------------------------------------------------

    def memory_bytes(self) -> int:
        self._check()
        return self.chan.request(Info(), TemplateReady).memory_bytes

    def memory_digests(self) -> dict[str, str]:
        """sha256 of each guest memory (RAM, regions) as frozen."""
        self._check()
        return self.chan.request(InspectTemplate(), Digests).sha256

    def save(self, directory: str | os.PathLike) -> None:
        self._check()
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.chan.request(SaveSnapshot(str(Path(directory).resolve())), Done)

    def _check(self) -> None:
        if self.closed:
            raise HyperForkError("this template is closed")

    def close(self) -> None:
        """End the template process; clones already made keep running."""
        if self.closed:
            return
        self.closed = True
        try:
            self.chan.request(Close(), Done)
        except HyperForkError:
            _kill(self.pid)
        self.chan.close()
        if self.process is not None:
            self.process.wait()

    def __enter__(self) -> Template:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _first_reply(chan: Channel, kind: type[M]) -> M:
    try:
        return chan.reply(kind)
    except HyperForkError:
        chan.close()
        raise


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Clone:
    """One clone VM (a process): invoke, roll back, close."""

    def __init__(self, chan: Channel, info: CloneReady, fork_ms: float):
        self.chan = chan
        self.pid = info.pid
        self.instance = info.instance
        self.timings = info.timings
        self.warm_ms = info.warm_ms
        self.fork_ms = fork_ms
        self.closed = False

    def request(self, request: dict, timeout: float | None = None) -> InvocationResult:
        """One agent request; a guest fault or timeout ends the clone's guest (result.error)."""
        if self.closed:
            raise HyperForkError("this clone is closed")
        return self.chan.request(Invoke(request, timeout), Invoked).result

    def invoke(self, event: Any, context: dict | None = None,
               timeout: float | None = None) -> InvocationResult:
        """handler(event, context) of the function the template loaded."""
        if self.closed:
            raise HyperForkError("this clone is closed")
        return self.chan.request(Call(event, context or {}, timeout), Invoked).result

    def run_code(self, code: str, timeout: float | None = None) -> InvocationResult:
        return self.request({"kind": abi.EXEC, "code": code}, timeout=timeout)

    def warm(self) -> None:
        """A no-op request, so that the next one does not pay for first touches of its path."""
        result = self.run_code("pass")
        if result.error is not None:
            raise HyperForkError(f"{result.error.type}: {result.error.message}", result.error)

    def rollback(self, fresh_identity: bool = True) -> RolledBack:
        """Reset to the template's exact state; says how many pages it restored, how fast.

        The guest then takes a fresh identity (a new instance id, reseeded
        RNGs), off the next request's path. With fresh_identity=False it
        stays byte-identical to the template (to inspect it) and the next
        request takes the identity first.
        """
        if self.closed:
            raise HyperForkError("this clone is closed")
        return self.chan.request(Rollback(fresh_identity), RolledBack)

    def inspect(self, needle: bytes | None = None) -> Inspected:
        """Digests of each guest memory, and the guest addresses where `needle` occurs."""
        if self.closed:
            raise HyperForkError("this clone is closed")
        return self.chan.request(InspectClone(needle), Inspected)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.chan.request(Close(), Done)
        except HyperForkError:
            pass
        _kill(self.pid)
        self.chan.close()

    def kill(self) -> None:
        """End the clone's process abruptly (as a crash would)."""
        _kill(self.pid)

    def __enter__(self) -> Clone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
