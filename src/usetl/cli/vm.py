"""`usetl vm run`: run Python code in a fresh USF."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from usetl.errors import UsetlError
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
    run.add_argument("--fork", type=int, default=0, metavar="N",
                     help="start one template and run CODE in N copy-on-write clones of it")
    run.add_argument("code", metavar="CODE", help="Python source to run")
    run.set_defaults(func=run_code)


def run_code(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    image = ImageArchive.open(args.image or default_image(args.cache, progress=StderrProgress()))
    if args.fork:
        return run_forked(args, image)
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


def run_forked(args: argparse.Namespace, image: ImageArchive) -> int:
    from usetl.hyperfork import Template

    if args.fork < 1 or args.trace:
        raise UsetlError("--fork takes a count of at least 1, and cannot be combined with --trace")
    t0 = time.perf_counter()
    clones = []
    with Template.start(image, config=UsfConfig(mem_mib=args.mem)) as template:
        template_ms = (time.perf_counter() - t0) * 1e3
        for _ in range(args.fork):
            with template.fork() as clone:
                result = clone.run_code(args.code, timeout=args.timeout)
                clones.append({
                    "pid": clone.pid, "instance": clone.instance,
                    "fork_ms": round(clone.fork_ms, 3), "run_ms": round(result.total_ms, 3),
                    "stdout": result.stdout, "stderr": result.stderr, "error": result.error,
                })
    ok = all(c["error"] is None for c in clones)
    if args.json:
        print(json.dumps({"template_ms": round(template_ms, 3), "clones": clones}))
        return 0 if ok else 1
    for i, c in enumerate(clones):
        print(f"--- clone {i} (pid {c['pid']}): fork {c['fork_ms']:.1f} ms, "
              f"run {c['run_ms']:.1f} ms", file=sys.stderr)
        sys.stdout.write(c["stdout"])
        sys.stdout.flush()
        sys.stderr.write(c["stderr"])
        if c["error"]:
            sys.stderr.write(c["error"].get("traceback") or f"{c['error']['message']}\n")
    print(f"usetl: template started in {template_ms:.1f} ms, {len(clones)} clones", file=sys.stderr)
    return 0 if ok else 1
