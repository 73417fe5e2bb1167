"""`python -m usetl.bench.corpus [NAME ...] [--quick] [--json FILE]`: pass or fail per
function and the pass rate (`make corpus`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from usetl.bench.corpus import CORPUS, by_name
from usetl.bench.corpus.run import format_summary, run
from usetl.image import ImageArchive, StderrProgress, default_image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m usetl.bench.corpus", description=__doc__)
    parser.add_argument("names", nargs="*", help="functions to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="the test suite's fast subset")
    parser.add_argument("--json", metavar="FILE", help="also write the outcomes as JSON")
    args = parser.parse_args(argv)
    functions = by_name(args.names) if args.names else CORPUS
    if args.quick:
        functions = [f for f in functions if f.quick]
    image = ImageArchive.open(default_image(progress=StderrProgress()))
    outcomes = run(image, functions, say=lambda line: print(line, flush=True))
    print(format_summary(outcomes))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dataclasses.asdict(o) for o in outcomes], f, indent=1)
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
