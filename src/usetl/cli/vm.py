"""`usetl vm run`: run Python code in a fresh USF."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from usetl.image import ImageArchive, StderrProgress, default_image
from usetl.libos.syscalls.args import s64
from usetl.usf import Usf, UsfConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    vm = subparsers.add_parser("vm", help="run code in a USF (a KVM unikernel)")
    commands = vm.add_subparsers(dest="vm_command", required=True)
    run = commands.add_parser(
        "run",
        help="start a USF, run CODE in its Python, print what it printed",
        description="Start a USF, run CODE in the guest's Python and print its output. "
        "Exits 1 with the guest's traceback if CODE raised.",
    )
    run.add_argument("--mem", type=int, default=256, metavar="MiB", help="guest RAM (default 256)")
    run.add_argument("--timeout", type=float, default=30.0, metavar="S",
                     help="stop the guest after S seconds (default 30)")
    run.add_argument("--cache", type=Path, default=None, metavar="DIR",
                     help="image cache directory (default $USETL_CACHE or ~/.cache/usetl)")
    run.add_argument("--image", type=Path, default=None, metavar="FILE",
                     help="run this image file instead of the cached default")
    run.add_argument("--json", action="store_true", help="print one JSON object")
    run.add_argument("--trace", action="store_true", help="list every syscall and its result")
    run.add_argument("code", metavar="CODE", help="Python source to run")
    run.set_defaults(func=run_code)


def run_code(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    image = ImageArchive.open(args.image or default_image(args.cache, progress=StderrProgress()))
    with Usf(image, UsfConfig(mem_mib=args.mem, trace=args.trace)) as usf:
        usf.start()
        result = usf.run_code(args.code, timeout=args.timeout)
        total_ms = (time.perf_counter() - t0) * 1e3
        syscalls = usf.startup_syscalls + result.syscalls
        if args.trace:
            assert usf.kernel is not None and usf.kernel.trace is not None
            for rec in usf.kernel.trace:
                args_text = ", ".join(hex(a) for a in rec.args)
                print(f"{rec.name}({args_text}) = {s64(rec.result & (2**64 - 1))}", file=sys.stderr)
    if args.json:
        print(json.dumps({
            "stdout": result.stdout,
            "stderr": result.stderr,
            "error": result.error,
            "startup_ms": round(usf.startup_ms, 3),
            "total_ms": round(total_ms, 3),
            "syscalls": syscalls,
        }))
        return 0 if result.ok else 1
    sys.stdout.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.write(result.stderr)
    if result.error:
        tb = result.error.get("traceback") or f"{result.error['type']}: {result.error['message']}\n"
        sys.stderr.write(tb)
    print(
        f"usetl: start-up {usf.startup_ms:.1f} ms (monitor start to agent ready), "
        f"total {total_ms:.1f} ms, {syscalls} syscalls",
        file=sys.stderr,
    )
    return 0 if result.ok else 1
