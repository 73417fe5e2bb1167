"""The environments a function can run in, as the experiments drive them.

A *call environment* runs the workload once per request: `before_call()`
(untimed: take a pre-started instance), `call()` (timed: request to result),
`after_call()` (untimed: discard what a call used). A *population* holds idle
instances for the memory experiments: `spawn()` returns an `Instance` whose
host processes are measured.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from usetl.bench.container import Container
from usetl.bench.errors import BenchError
from usetl.bench.stats import summary
from usetl.bench.workload import (
    EXPECTED,
    HANDLER_RESULT,
    HANDLER_SOURCE,
    IDLE_AFTER_WORK,
    SERVE_LINES,
    WORK,
    ZYGOTE,
    escape_request,
)
from usetl.image import ImageArchive
from usetl.usf import Usf, UsfConfig, start_usf


def host_python() -> str:
    """The interpreter the image carries (not a venv shim)."""
    return sys._base_executable


def check(output: str, env: str) -> None:
    if output.strip() != EXPECTED:
        raise BenchError(f"{env}: wrong result {output.strip()[:200]!r}, expected {EXPECTED!r}")


class CallEnv:
    name = ""
    label = ""

    def begin_timed(self) -> None:
        """The warm-ups are over: what extra() reports starts here."""

    def before_call(self) -> None:
        """Untimed preparation for the next call."""

    def call(self) -> str:
        raise NotImplementedError

    def after_call(self) -> None:
        """Untimed clean-up after a call."""

    def close(self) -> None:
        """Release everything the environment holds."""

    def extra(self) -> dict:
        """Numbers the environment gathered beside the call times."""
        return {}


class HostProcessPerCall(CallEnv):
    name, label = "host_process", "host process per call"

    def call(self) -> str:
        done = subprocess.run(
            [host_python(), "-I", "-S", "-c", WORK], capture_output=True, text=True, check=True
        )
        return done.stdout


class ContainerPerCall(CallEnv):
    name, label = "container", "container per call (runc)"

    def __init__(self, image: ImageArchive):
        self.image = image
        self.container: Container | None = None

    def before_call(self) -> None:
        self.container = Container(self.image, ["-I", "-S", "-c", WORK])

    def call(self) -> str:
        assert self.container is not None
        return self.container.run().decode()

    def after_call(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None

    close = after_call


class ContainerPool(CallEnv):
    """Containers started ahead of demand; each serves one request, then is discarded."""

    name, label = "container_pool", "pre-started container pool"

    def __init__(self, image: ImageArchive, batch: int = 5):
        self.image = image
        self.batch = batch
        self.ready: list[Container] = []
        self.used: Container | None = None

    def before_call(self) -> None:
        if not self.ready:
            for _ in range(self.batch):
                c = Container(self.image, ["-I", "-S", "-c", SERVE_LINES])
                self.ready.append(c)
                proc = c.start()
                assert proc.stdout is not None
                # Pre-started means ready: its interpreter is up and waiting for requests.
                if proc.stdout.readline().strip() != b"ready":
                    raise BenchError("a pooled container did not start")

    def call(self) -> str:
        c = self.used = self.ready.pop()
        assert c.proc is not None and c.proc.stdin is not None and c.proc.stdout is not None
        c.proc.stdin.write(escape_request(WORK))
        c.proc.stdin.flush()
        return c.proc.stdout.readline().decode()

    def after_call(self) -> None:
        if self.used is not None:
            self.used.close()
            self.used = None

    def close(self) -> None:
        self.after_call()
        for c in self.ready:
            c.close()
        self.ready.clear()


class Zygote:
    """A SOCK-style zygote: a Python process with the imports done, forked per request."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [host_python(), "-I", "-S", "-c", ZYGOTE, WORK],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )

    def request(self, kind: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(kind + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline()

    def hold(self) -> int:
        """Fork a child that runs the workload and stays; its pid."""
        check(self.request("hold"), "zygote child")
        assert self.proc.stdout is not None
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait()


class ZygotePerCall(CallEnv):
    name, label = "zygote", "forked Python zygote (SOCK)"

    def __init__(self) -> None:
        self.zygote = Zygote()

    def call(self) -> str:
        return self.zygote.request("call")

    def close(self) -> None:
        self.zygote.close()


def load_and_call(usf: Usf) -> None:
    """The function sent to a started USF: load its module, call its handler, check the value."""
    for result in (usf.load_function("handler", source=HANDLER_SOURCE), usf.call({})):
        if result.error:
            raise BenchError(f"USF: {result.error.type}: {result.error.message}")
    if result.value != HANDLER_RESULT:
        raise BenchError(f"USF: wrong result {result.value!r}, expected {HANDLER_RESULT!r}")


class UsfCreatePerCall(CallEnv):
    """A fresh USF per call: CPython starts inside a new VM, then loads and calls the function."""

    name, label = "usf_create", "USF created per call"

    def __init__(self, image: ImageArchive, mem_mib: int):
        self.image = image
        self.config = UsfConfig(mem_mib=mem_mib)
        self.startup_ms: list[float] = []
        self.startup_syscalls: list[int] = []

    def begin_timed(self) -> None:
        self.startup_ms.clear()
        self.startup_syscalls.clear()

    def call(self) -> None:
        with start_usf(self.image, self.config) as usf:
            self.startup_ms.append(usf.startup.ms)
            self.startup_syscalls.append(usf.startup.syscalls)
            load_and_call(usf)

    def extra(self) -> dict:
        return {
            "startup_ms": summary(self.startup_ms),
            "startup_syscalls": round(statistics.median(self.startup_syscalls)),
        }


class UsfPool(CallEnv):
    """USFs started ahead of demand (the paper's pool): the function is sent to one, loaded
    and called; each serves one request."""

    name, label = "usf_pool", "pre-started USF pool"

    def __init__(self, image: ImageArchive, mem_mib: int, batch: int = 5):
        self.image = image
        self.config = UsfConfig(mem_mib=mem_mib)
        self.batch = batch
        self.ready: list[Usf] = []
        self.used: Usf | None = None

    def before_call(self) -> None:
        if not self.ready:
            for _ in range(self.batch):
                usf = start_usf(self.image, self.config)
                self.ready.append(usf)

    def call(self) -> None:
        usf = self.used = self.ready.pop()
        load_and_call(usf)

    def after_call(self) -> None:
        if self.used is not None:
            self.used.close()
            self.used = None

    def close(self) -> None:
        self.after_call()
        for usf in self.ready:
            usf.close()
        self.ready.clear()


@dataclass
class Instance:
    """One idle instance: the host processes that exist for it, and how to end it."""

    pids: list[int]
    release: Callable[[], None] = field(repr=False)


class Population:
    name = ""
    label = ""

    def spawn(self) -> Instance:
        raise NotImplementedError

    def shared_pids(self) -> list[int]:
        """Processes every instance shares (a zygote, a template), counted once for all."""
        return []

    def close(self) -> None:
        """Release what the population itself holds (a zygote, a template)."""


def _idle_process(argv: list[str]) -> Instance:
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    if line.strip() not in (EXPECTED, "ready"):
        proc.kill()
        proc.wait()
        raise BenchError(f"{argv[-1][:40]}: instance did not start: {line.strip()[:200]!r}")

    def release() -> None:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()

    return Instance([proc.pid], release)


class HostProcesses(Population):
    name, label = "host_process", "host process"

    def spawn(self) -> Instance:
        return _idle_process([host_python(), "-I", "-S", "-c", IDLE_AFTER_WORK])


class ZygoteChildren(Population):
    name, label = "zygote", "zygote child (SOCK)"

    def __init__(self) -> None:
        self.zygote = Zygote()

    def spawn(self) -> Instance:
        pid = self.zygote.hold()
        return Instance([pid], lambda: os.kill(pid, signal.SIGKILL))

    def shared_pids(self) -> list[int]:
        return [self.zygote.proc.pid]

    def close(self) -> None:
        self.zygote.close()


class Containers(Population):
    name, label = "container", "container (runc)"

    def __init__(self, image: ImageArchive):
        self.image = image

    def spawn(self) -> Instance:
        c = Container(self.image, ["-I", "-S", "-c", IDLE_AFTER_WORK])
        proc = c.start()
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        try:
            check(line, "container")
        except BenchError:
            c.close()
            raise
        # The foreground `runc run` process stays for the container's life: count it too.
        return Instance([proc.pid, c.init_pid()], c.close)


class UsfProcesses(Population):
    """Each USF in a process of its own (usetl.bench.hold), after one invocation."""

    name, label = "usf", "USF (own process)"

    def __init__(self, mem_mib: int, kind: str = "usf"):
        self.mem_mib = mem_mib
        self.kind = kind
        if kind == "monitor":
            self.name, self.label = "usf_monitor", "USF monitor alone (no VM)"

    def spawn(self) -> Instance:
        return _idle_process(
            [sys.executable, "-m", "usetl.bench.hold", self.kind, str(self.mem_mib)]
        )
