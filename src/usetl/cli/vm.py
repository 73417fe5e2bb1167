"""`usetl vm run`: run Python code, or a function's handler with an event, in a fresh USF."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import msgspec

from usetl import abi
from usetl.errors import UsetlError
from usetl.image import ImageArchive, StderrProgress, default_image
from usetl.invocation import InvocationResult
from usetl.libos.syscalls.args import s64
from usetl.usf import Usf, UsfConfig, start_usf


class UsageError(UsetlError):
    """The command line asks for something that cannot be run."""


def register(subparsers: argparse._SubParsersAction) -> None:
    vm = subparsers.add_parser("vm", help="run code in a USF (a KVM unikernel)")
    commands = vm.add_subparsers(dest="vm_command", required=True)
    run = commands.add_parser(
        "run",
        help="start a USF, run CODE (or a handler) in its Python, print what it printed",
        description="Start a USF, run CODE in the guest's Python, or load --handler and "
        "call it with --event, and print its output (and the handler's return value as "
        "JSON). Exits 1 with the guest's traceback if the code raised.",
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
    run.add_argument("--allow", action="append", default=[], metavar="PREFIX",
                     help="a URL prefix the guest may GET and POST through usetl.etl "
                     "(repeatable; private and loopback addresses only when named)")
    run.add_argument("--handler", metavar="FILE:FUNCTION",
                     help="load FUNCTION from FILE (a .py file or a package directory) and "
                     "call it with the event")
    run.add_argument("--event", metavar="JSON", default="null",
                     help="the event given to --handler (default null)")
    run.add_argument("code", metavar="CODE", nargs="?", help="Python source to run")
    run.set_defaults(func=run_code)


def _handler_location(spec: str) -> tuple[Path, str]:
    """FILE:FUNCTION as the file (or package directory) and the function's name."""
    location, _, function = spec.rpartition(":")
    if not location or not function.isidentifier():
        raise UsageError(f"--handler wants FILE:FUNCTION, not {spec!r}")
    source = Path(location).resolve()
    if not source.exists():
        raise UsageError(f"{location}: no such file or directory")
    return source, function


def _event(args: argparse.Namespace) -> object:
    try:
        return json.loads(args.event)
    except json.JSONDecodeError as e:
        raise UsageError(f"--event is not JSON: {e}") from None


def _function_files(spec: str) -> tuple[dict[str, bytes], str, str]:
    """The files of FILE:FUNCTION for the guest's /tmp, the guest path to load, the function.

    A package directory goes whole (its templates and data files too), less bytecode caches.
    """
    source, function = _handler_location(spec)
    if source.is_file():
        return {f"fn/{source.name}": source.read_bytes()}, f"/tmp/fn/{source.name}", function
    files = {
        f"fn/{source.name}/{p.relative_to(source)}": p.read_bytes()
        for p in sorted(source.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }
    return files, f"/tmp/fn/{source.name}", function


def _run(usf: Usf, args: argparse.Namespace) -> InvocationResult:
    if args.handler is None:
        return usf.run_code(args.code, timeout=args.timeout)
    event = _event(args)
    files, path, function = _function_files(args.handler)
    loaded = usf.load_function(function, path=path, files=files, timeout=args.timeout)
    if not loaded.ok:
        return loaded
    called = usf.call(event, timeout=args.timeout)
    called.stdout = loaded.stdout + called.stdout
    called.stderr = loaded.stderr + called.stderr
    called.syscalls += loaded.syscalls
    return called


def run_code(args: argparse.Namespace) -> int:
    if (args.code is None) == (args.handler is None):
        raise UsageError("give either CODE or --handler FILE:FUNCTION")
    t0 = time.perf_counter()
    image = ImageArchive.open(args.image or default_image(args.cache, progress=StderrProgress()))
    if args.fork:
        return run_forked(args, image, _event(args))
    config = UsfConfig(mem_mib=args.mem, trace=args.trace, allow=tuple(args.allow))
    with start_usf(image, config) as usf:
        result = _run(usf, args)
        total_ms = (time.perf_counter() - t0) * 1e3
        syscalls = usf.startup.syscalls + result.syscalls
        if args.trace:
            assert usf.kernel.trace is not None
            for rec in usf.kernel.trace:
                args_text = ", ".join(hex(a) for a in rec.args)
                print(f"{rec.name}({args_text}) = {s64(rec.result & (2**64 - 1))}", file=sys.stderr)
    if args.json:
        print(json.dumps(msgspec.to_builtins({
            "stdout": result.stdout,
            "stderr": result.stderr,
            "error": result.error,
            "value": result.value,
            "io": result.io,
            "startup_ms": round(usf.startup.ms, 3),
            "total_ms": round(total_ms, 3),
            "syscalls": syscalls,
        })))
        return 0 if result.ok else 1
    _show(result, args.handler is not None)
    print(
        f"usetl: start-up {usf.startup.ms:.1f} ms (monitor start to agent ready), "
        f"total {total_ms:.1f} ms, {syscalls} syscalls",
        file=sys.stderr,
    )
    return 0 if result.ok else 1


def run_forked(args: argparse.Namespace, image: ImageArchive, event: object) -> int:
    """One template (with --handler: a function template), then the same request in N clones."""
    from usetl.hyperfork import Template

    if args.fork < 1 or args.trace:
        raise UsageError("--fork takes a count of at least 1, and cannot be combined with --trace")
    t0 = time.perf_counter()
    runs: list[tuple[dict, InvocationResult]] = []
    config = UsfConfig(mem_mib=args.mem, allow=tuple(args.allow))
    with Template.start(image, config=config) as base:
        template = base
        if args.handler is not None:
            source, function = _handler_location(args.handler)
            load = {"kind": abi.LOAD, "path": f"/code/{source.name}", "handler": function}
            template = base.load_function(load, mounts={"code": str(source.parent)})
        template_ms = (time.perf_counter() - t0) * 1e3
        with template:
            for _ in range(args.fork):
                with template.fork() as clone:
                    if args.handler is None:
                        result = clone.run_code(args.code, timeout=args.timeout)
                    else:
                        result = clone.invoke(event, timeout=args.timeout)
                    runs.append(({"pid": clone.pid, "instance": clone.instance,
                                  "fork_ms": round(clone.fork_ms, 3)}, result))
    ok = all(result.ok for _, result in runs)
    if args.json:
        clones = [{**info, "run_ms": round(r.total_ms, 3), "stdout": r.stdout,
                   "stderr": r.stderr, "error": r.error, "value": r.value, "io": r.io}
                  for info, r in runs]
        print(json.dumps(msgspec.to_builtins({"template_ms": round(template_ms, 3),
                                              "clones": clones})))
        return 0 if ok else 1
    for i, (info, result) in enumerate(runs):
        print(f"--- clone {i} (pid {info['pid']}): fork {info['fork_ms']:.1f} ms, "
              f"run {result.total_ms:.1f} ms", file=sys.stderr)
        _show(result, args.handler is not None)
    print(f"usetl: template ready in {template_ms:.1f} ms, {len(runs)} clones", file=sys.stderr)
    return 0 if ok else 1


def _show(result: InvocationResult, handler: bool) -> None:
    """What the guest printed, the handler's value, and its error's traceback if it raised."""
    sys.stdout.write(result.stdout)
    if handler and result.ok:
        print(json.dumps(result.value))
    sys.stdout.flush()
    sys.stderr.write(result.stderr)
    if result.error:
        sys.stderr.write(result.error.text())
