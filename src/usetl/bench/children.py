"""Child processes: what a child costs in a USF against the same on the host, side by side.

Four series, each timed inside its caller (the guest's clock is the host's):
a `/bin/true`-like static program (an ELF of three instructions, made here),
the same through the shell (`subprocess.run(path, shell=True)`: /bin/sh,
which execs it in place) and a Python child (`python -c pass`), each run
with subprocess.run in a HyperFork clone, that is in a sibling VM, and by
the host's subprocess.run; and fork to the child running (the child writes
its clock on a pipe) in the clone, a copy of its VM, against os.fork on the
host.
"""

from __future__ import annotations

import json
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from usetl.bench.errors import BenchError
from usetl.hyperfork import Template
from usetl.image import ImageArchive

TRUE_NAME = "true"
# A static x86-64 program that exits 0: mov eax, 60; xor edi, edi; syscall.
TRUE_CODE = bytes.fromhex("b83c000000" "31ff" "0f05")
ELF_BASE = 0x400000
SERIES = ("true", "shell", "python", "fork")

FORK_TO_RUNNING = """
import os, time
r, w = os.pipe()
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.write(w, repr(time.perf_counter()).encode())
    os._exit(0)
running = float(os.read(r, 64))
os.waitpid(pid, 0)
os.close(r); os.close(w)
ms = (running - t0) * 1e3
"""
GUEST = """import json, subprocess, sys, time
def timed(argv, shell=False):
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, shell=shell)
    return (time.perf_counter() - t0) * 1e3
out = {{"true": timed([{true!r}]), "shell": timed({true!r}, shell=True),
        "python": timed([sys.executable, "-c", "pass"])}}
""" + FORK_TO_RUNNING + """out["fork"] = ms
print(json.dumps(out))
"""


def true_program() -> bytes:
    """An ELF executable with one PT_LOAD segment holding TRUE_CODE."""
    header_size, phdr_size = 64, 56
    entry = ELF_BASE + header_size + phdr_size
    size = header_size + phdr_size + len(TRUE_CODE)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, entry, header_size, 0, 0,
                                 header_size, phdr_size, 1, 0, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, ELF_BASE, ELF_BASE, size, size, 0x1000)
    return header + phdr + TRUE_CODE


def _host_series(true_path: str) -> dict[str, float]:
    def timed(argv: list[str] | str, shell: bool = False) -> float:
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, shell=shell)
        return (time.perf_counter() - t0) * 1e3

    scope: dict = {}
    exec(FORK_TO_RUNNING, scope)
    return {"true": timed([true_path]), "shell": timed(true_path, shell=True),
            "python": timed([sys.executable, "-c", "pass"]), "fork": scope["ms"]}


def run(image: ImageArchive, runs: int = 10, progress=lambda msg: None) -> dict:
    """Medians (ms) of each series in a clone and on the host, alternated run by run."""
    with tempfile.TemporaryDirectory(prefix="usetl-children-") as tmp:
        exe = Path(tmp) / TRUE_NAME
        exe.write_bytes(true_program())
        exe.chmod(0o755)
        Path(tmp).chmod(0o755)
        usf: dict[str, list[float]] = {name: [] for name in SERIES}
        host: dict[str, list[float]] = {name: [] for name in SERIES}
        code = GUEST.format(true=f"/bin_dir/{TRUE_NAME}")
        with Template.start(image.path) as base:
            load = {"kind": "exec", "code": "pass"}
            with base.load_function(load, mounts={"bin_dir": tmp}) as template:
                for i in range(-1, runs):  # run -1 is a warm-up of both sides
                    progress(f"children: run {i + 2} of {runs + 1}")
                    with template.fork() as clone:
                        r = clone.run_code(code, timeout=120)
                    if r.error is not None:
                        raise BenchError(f"{r.error.type}: {r.error.message} {r.stderr[-500:]}")
                    got, mine = json.loads(r.stdout), _host_series(str(exe))
                    if i >= 0:
                        for name in usf:
                            usf[name].append(got[name])
                            host[name].append(mine[name])
    out: dict = {"runs": runs}
    for name in usf:
        u, h = statistics.median(usf[name]), statistics.median(host[name])
        out[name] = {"usf_ms": u, "host_ms": h, "ratio": u / h}
    return out


def format_report(result: dict) -> str:
    labels = {"true": "a /bin/true-like static program (subprocess.run)",
              "shell": "the same through /bin/sh (shell=True)",
              "python": "python -c pass (subprocess.run)",
              "fork": "fork to the child running"}
    lines = [f"children: medians of {result['runs']} runs, in a clone vs on the host"]
    for name, label in labels.items():
        s = result[name]
        lines.append(f"  {label}: {s['usf_ms']:.1f} ms in a USF, {s['host_ms']:.2f} ms on "
                     f"the host ({s['ratio']:.1f}x)")
    return "\n".join(lines)


def run_experiment(cfg, ctx) -> dict:
    """The `children` experiment of `usetl bench all`."""
    return run(ctx.image, cfg.children_runs, ctx.say)

