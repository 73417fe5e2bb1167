"""The `usetl` command: one module per command group, each with register()."""

from __future__ import annotations

import argparse
import logging
import sys

from usetl.errors import UsetlError

from . import bench, cluster, functions, image, pipelines, schedules, secrets, serve, vm

COMMAND_GROUPS = [image, vm, bench, serve, functions, schedules, secrets, pipelines, cluster]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="usetl", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except UsetlError as e:
        print(f"usetl: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
