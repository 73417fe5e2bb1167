"""`usetl bench startup`: the USF's start-up, syscall and compute numbers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from usetl.bench import startup
from usetl.image import ImageArchive, StderrProgress, default_image


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="run benchmarks (numbers, not tests)")
    commands = bench.add_subparsers(dest="bench_command", required=True)
    s = commands.add_parser("startup", help="USF start-up, syscall round trip, compute speed")
    s.add_argument("--runs", type=int, default=20, help="start-ups to time (default 20)")
    s.add_argument("--cache", type=Path, default=None, metavar="DIR")
    s.add_argument("--json", action="store_true", help="print the numbers as JSON")
    s.set_defaults(func=run_startup)
    f = commands.add_parser("fork", help="HyperFork: fork, first request, rollback, memory")
    f.add_argument("--runs", type=int, default=30, help="clones to time (default 30)")
    f.add_argument("--cache", type=Path, default=None, metavar="DIR")
    f.add_argument("--json", action="store_true", help="print the numbers as JSON")
    f.set_defaults(func=run_fork)


def _say(msg: str) -> None:
    if sys.stderr.isatty():
        print(f"\r\033[Kbench: {msg}", end="", file=sys.stderr, flush=True)


def _done() -> None:
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr)


def run_startup(args: argparse.Namespace) -> int:
    image = ImageArchive.open(default_image(args.cache, progress=StderrProgress()))
    result = startup.run(image, args.runs, progress=_say)
    _done()
    print(json.dumps(result, indent=2) if args.json else startup.format_report(result))
    return 0


def run_fork(args: argparse.Namespace) -> int:
    from usetl.bench import fork

    image = ImageArchive.open(default_image(args.cache, progress=StderrProgress()))
    result = fork.run(image, args.runs, progress=_say)
    _done()
    print(json.dumps(result, indent=2) if args.json else fork.format_report(result))
    return 0
