"""The syscall fuzzer: seeded chunks of hostile syscalls in USFs, on worker processes.

Each chunk is one exec request that runs `fuzz_guest.py` in a USF with the
seed "SEED:CHUNK", so any chunk can be replayed alone (--first-chunk N
--syscalls CHUNK). The guest issues raw syscalls with hostile arguments;
the monitor must answer every one. What counts as a bug, and fails the
run: a monitor-side exception (the kernel dispatcher turns one into a
MonitorError that ends the USF, and counts it in SyscallStats.monitor_errors)
or a hang (a chunk that does not come back within its deadline plus a
grace: the worker's faulthandler prints where the monitor was stuck and
exits). A guest that ends itself (a fault from its own bad pointer, a
timeout of a wait it asked for) is not a bug: a fresh USF carries on.

Workers are processes (one VM per process, as PVM wants); a worker that
dies is replaced and resumes after the chunk it died in.

    python -m usetl.bench.fuzz --syscalls 10000000 --workers 2 --seed 1
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

GUEST_SOURCE = Path(__file__).with_name("fuzz_guest.py")
HANG_GRACE = 20.0  # seconds past a chunk's deadline before it counts as a monitor hang
START_ALLOWANCE = 120.0  # a worker's silence allowed for starting a USF, on top of that
ALLOW = ["http://127.0.0.1:9/"]  # sockets exist but reach nothing (the discard port)


@dataclass
class FuzzConfig:
    seed: int = 1
    syscalls: int = 20_000  # fuzz calls to issue in all
    chunk: int = 2_000  # calls per exec request
    workers: int = 1
    first_chunk: int = 0
    chunk_timeout: float = 30.0
    restart_every: int = 25  # chunks one USF serves before a fresh one
    mem_mib: int = 512  # room for the fuzzer's 96 MiB of scratch memory

    @property
    def chunks(self) -> list[int]:
        count = -(-self.syscalls // self.chunk)
        return list(range(self.first_chunk, self.first_chunk + count))


@dataclass
class FuzzReport:
    chunks: int = 0
    issued: int = 0  # fuzz calls the guests issued (as they reported at the end of a chunk)
    served: int = 0  # syscalls the monitor served during the chunks (the fuzzer's own too)
    usfs: int = 0  # USFs started
    guest_ends: Counter = field(default_factory=Counter)  # how guests ended: error type
    monitor_errors: Counter = field(default_factory=Counter)  # "syscall: Exception" -> count
    examples: dict[str, str] = field(default_factory=dict)  # the first message of each
    hangs: list[str] = field(default_factory=list)  # worker deaths: chunk and traceback
    wall_s: float = 0.0
    resume_from: int | None = None  # the lowest chunk not yet run (--first-chunk to go on)

    @property
    def ok(self) -> bool:
        return not self.monitor_errors and not self.hangs

    def add(self, line: dict) -> None:
        self.chunks += 1
        self.issued += line["issued"]
        self.served += line["served"]
        self.usfs += line["started"]
        if line["end"]:
            self.guest_ends[line["end"]] += 1
        for key, n in line["monitor_errors"].items():
            self.monitor_errors[key] += n
            self.examples.setdefault(key, line["message"])

    def summary(self) -> str:
        rate = self.issued / self.wall_s if self.wall_s else 0.0
        return (f"fuzz: {self.issued:,} syscalls issued ({self.served:,} served) in "
                f"{self.chunks} chunks, {self.wall_s:.0f} s ({rate:,.0f}/s), {self.usfs} USFs; "
                f"monitor errors {sum(self.monitor_errors.values())}, hangs {len(self.hangs)}, "
                f"guest ends {dict(self.guest_ends)}")


# -- one worker: a process that runs chunks in USFs -----------------------------------


def _host_dir() -> str:
    """A host directory to mount at /fzhost: what a mount may hold, FIFO and socket too."""
    root = tempfile.mkdtemp(prefix="usetl-fuzz-")
    Path(root, "file").write_bytes(os.urandom(8192))
    Path(root, "dir").mkdir()
    Path(root, "dir", "inner").write_text("inner\n")
    os.mkfifo(Path(root, "fifo"))
    os.symlink("file", Path(root, "link"))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(Path(root, "sock")))
    sock.close()
    return root


def _start_usf(cfg: FuzzConfig, host_dir: str):
    from usetl.libos.hostfs import HostDirFS
    from usetl.usf import UsfConfig, start_usf

    usf = start_usf(config=UsfConfig(mem_mib=cfg.mem_mib, allow=ALLOW))
    usf.kernel.ns.mount("fzhost", HostDirFS(host_dir))
    return usf


def _chunk_code(cfg: FuzzConfig, chunk: int, source: str, numbers: list[int]) -> str:
    params = {"seed": f"{cfg.seed}:{chunk}", "count": cfg.chunk, "numbers": numbers,
              "mem_mib": cfg.mem_mib}
    return f"{source}\nmain({params!r})\n"


def _issued(error) -> int:
    """The calls a chunk issued, from the ChunkDone it ends with (0 if it ended otherwise)."""
    if error is None or error.type != "ChunkDone":
        return 0
    return int(json.loads(error.message)["issued"])


def work(cfg: FuzzConfig, chunks: list[int]) -> None:
    """Run `chunks`, one JSON line per chunk on stdout."""
    from usetl.libos.syscalls.table import TABLE

    source = GUEST_SOURCE.read_text()
    numbers = sorted(TABLE)
    host_dir = _host_dir()
    usf, used = None, 0
    try:
        for chunk in chunks:
            started = 0
            if usf is None or not usf.alive or used >= cfg.restart_every:
                if usf is not None:
                    usf.close()
                usf, used, started = _start_usf(cfg, host_dir), 0, 1
            stats = usf.kernel.stats
            count0, errors0 = stats.count, Counter(stats.monitor_errors)
            faulthandler.dump_traceback_later(cfg.chunk_timeout + HANG_GRACE, exit=True)
            r = usf.run_code(_chunk_code(cfg, chunk, source, numbers), timeout=cfg.chunk_timeout)
            faulthandler.cancel_dump_traceback_later()
            used += 1
            new = stats.monitor_errors - errors0
            line = {
                "chunk": chunk, "started": started, "served": stats.count - count0,
                "issued": _issued(r.error), "end": None if usf.alive else r.error.type,
                "monitor_errors": {f"{name}: {exc}": n for (name, exc), n in new.items()},
                "message": r.error.message if new and r.error else "",
            }
            print(json.dumps(line), flush=True)
    finally:
        if usf is not None:
            usf.close()
        shutil.rmtree(host_dir, ignore_errors=True)


# -- the runner: workers, their progress, hangs -------------------------------------------


class _Worker:
    def __init__(self, cfg: FuzzConfig, chunks: list[int], log_dir: str, n: int):
        self.chunks = chunks
        self.log = Path(log_dir, f"worker{n}.log")
        args = [sys.executable, "-m", "usetl.bench.fuzz", "--worker", ",".join(map(str, chunks)),
                *_config_args(cfg)]
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True)
        self.heard = time.monotonic()
        self.buffer = ""

    def lines(self) -> list[dict] | None:
        """The chunks reported since last time; None at the end of the worker's output."""
        assert self.proc.stdout is not None
        data = os.read(self.proc.stdout.fileno(), 1 << 16).decode()
        if not data:
            return None
        self.heard = time.monotonic()
        self.buffer += data
        *whole, self.buffer = self.buffer.split("\n")
        out = [json.loads(line) for line in whole if line.startswith("{")]
        for line in out:
            self.chunks.remove(line["chunk"])
        return out

    def tail(self) -> str:
        text = self.log.read_text(errors="replace")
        return text[-4000:]


def _config_args(cfg: FuzzConfig) -> list[str]:
    return ["--seed", str(cfg.seed), "--chunk", str(cfg.chunk),
            "--chunk-timeout", str(cfg.chunk_timeout), "--restart-every", str(cfg.restart_every),
            "--mem-mib", str(cfg.mem_mib)]


def run(cfg: FuzzConfig, progress=None) -> FuzzReport:
    """Fuzz cfg.syscalls calls on cfg.workers processes; `progress(report)` after each chunk."""
    report = FuzzReport()
    t0 = time.monotonic()
    chunks = cfg.chunks
    log_dir = tempfile.mkdtemp(prefix="usetl-fuzz-logs-")
    sel = selectors.DefaultSelector()
    workers = [_Worker(cfg, chunks[i :: cfg.workers], log_dir, i) for i in range(cfg.workers)]
    for n, w in enumerate(workers):
        sel.register(w.proc.stdout, selectors.EVENT_READ, (n, w))
    silence = cfg.chunk_timeout + HANG_GRACE + START_ALLOWANCE
    try:
        while sel.get_map():
            for key, _ in sel.select(timeout=5.0):
                n, w = key.data
                lines = w.lines()
                if lines is None:
                    sel.unregister(w.proc.stdout)
                    _finish(w, report, sel, cfg, log_dir, n)
                    continue
                for line in lines:
                    report.add(line)
                    report.wall_s = time.monotonic() - t0
                    left = [c for key in sel.get_map().values() for c in key.data[1].chunks]
                    report.resume_from = min(left, default=None)
                    if progress is not None:
                        progress(report)
            for key in list(sel.get_map().values()):
                n, w = key.data
                if time.monotonic() - w.heard > silence:
                    w.proc.kill()  # past even faulthandler's exit: collected as a death
    finally:
        for key in list(sel.get_map().values()):
            key.data[1].proc.kill()
    report.wall_s = time.monotonic() - t0
    shutil.rmtree(log_dir, ignore_errors=True)
    return report


def _finish(w: _Worker, report: FuzzReport, sel, cfg: FuzzConfig, log_dir: str, n: int) -> None:
    """A worker's stdout closed: done, or it died in its next chunk (a hang or a crash)."""
    w.proc.wait()
    if not w.chunks:
        return
    dead = w.chunks.pop(0)
    report.hangs.append(f"chunk {dead} (seed {cfg.seed}): worker exited {w.proc.returncode}\n"
                        f"{w.tail()}")
    if w.chunks:
        fresh = _Worker(cfg, w.chunks, log_dir, n)
        sel.register(fresh.proc.stdout, selectors.EVENT_READ, (n, fresh))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m usetl.bench.fuzz",
                                description=(__doc__ or "").split("\n")[0])
    p.add_argument("--syscalls", type=int, default=FuzzConfig.syscalls)
    p.add_argument("--workers", type=int, default=FuzzConfig.workers)
    p.add_argument("--seed", type=int, default=FuzzConfig.seed)
    p.add_argument("--chunk", type=int, default=FuzzConfig.chunk)
    p.add_argument("--first-chunk", type=int, default=0, help="resume here (printed as progress)")
    p.add_argument("--chunk-timeout", type=float, default=FuzzConfig.chunk_timeout)
    p.add_argument("--restart-every", type=int, default=FuzzConfig.restart_every)
    p.add_argument("--mem-mib", type=int, default=FuzzConfig.mem_mib)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    cfg = FuzzConfig(a.seed, a.syscalls, a.chunk, a.workers, a.first_chunk, a.chunk_timeout,
                     a.restart_every, a.mem_mib)
    if a.worker is not None:
        work(cfg, [int(c) for c in a.worker.split(",")])
        return 0
    last = [0.0]

    def progress(report: FuzzReport) -> None:
        if time.monotonic() - last[0] >= 10 or report.chunks == len(cfg.chunks):
            last[0] = time.monotonic()
            print(f"{report.summary()}; resume with --first-chunk {report.resume_from}",
                  flush=True)

    report = run(cfg, progress)
    print(report.summary())
    print(json.dumps({"monitor_errors": report.monitor_errors, "examples": report.examples,
                      "hangs": report.hangs}, indent=1))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
