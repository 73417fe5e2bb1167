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


def run_startup(args: argparse.Namespace) -> int:
    image = ImageArchive.open(default_image(args.cache, progress=StderrProgress()))

    def say(msg: str) -> None:
        if sys.stderr.isatty():
            print(f"\r\033[Kbench: {msg}", end="", file=sys.stderr, flush=True)

    result = startup.run(image, args.runs, progress=say)
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr)
    print(json.dumps(result, indent=2) if args.json else startup.format_report(result))
    return 0
