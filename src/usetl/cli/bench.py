"""`usetl bench`: the experiments (`all` writes the evaluation report), `startup`, `fork`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from usetl.bench import startup
from usetl.errors import UsetlError
from usetl.image import ImageArchive, StderrProgress, default_image


def _register_clones(commands: argparse._SubParsersAction) -> None:
    """`usetl bench fork`, `usetl bench jail` and `usetl bench egress`."""
    f = commands.add_parser("fork", help="HyperFork: fork, first request, rollback, memory")
    f.add_argument("--runs", type=int, default=30, help="clones to time (default 30)")
    f.add_argument("--cache", type=Path, default=None, metavar="DIR")
    f.add_argument("--json", action="store_true", help="print the numbers as JSON")
    f.add_argument("--no-jail", action="store_true",
                   help="clones without the jail (to measure what it costs)")
    f.add_argument("--held", type=_counts, default=(1, 10, 50), metavar="N,N,...",
                   help="idle clones held at once for the memory figures (default 1,10,50)")
    f.add_argument("--merge", action="store_true",
                   help="a template whose clones KSM may merge (UsfConfig.merge_pages); "
                   "merged only where the host runs KSM")
    f.add_argument("--huge-heap", action="store_true",
                   help="a template whose clones map its free RAM on huge pages "
                   "(UsfConfig.huge_heap)")
    f.set_defaults(func=run_fork)
    j = commands.add_parser("jail", help="clone creation with and without the jail")
    j.add_argument("--runs", type=int, default=30, help="forks of each kind (default 30)")
    j.add_argument("--cache", type=Path, default=None, metavar="DIR")
    j.add_argument("--json", action="store_true", help="print the numbers as JSON")
    j.set_defaults(func=run_jail)
    e = commands.add_parser("egress", help="etl.get through the egress broker and in the monitor")
    e.add_argument("--runs", type=int, default=10, help="downloads of each size and path")
    e.add_argument("--cache", type=Path, default=None, metavar="DIR")
    e.add_argument("--json", action="store_true", help="print the numbers as JSON")
    e.set_defaults(func=run_egress)


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(n) for n in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of counts: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("counts must be 1 or more")
    return counts


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="run benchmarks (numbers, not tests)")
    commands = bench.add_subparsers(dest="bench_command", required=True)
    s = commands.add_parser("startup", help="USF start-up, syscall round trip, compute speed")
    s.add_argument("--runs", type=int, default=20, help="start-ups to time (default 20)")
    s.add_argument("--cache", type=Path, default=None, metavar="DIR")
    s.add_argument("--json", action="store_true", help="print the numbers as JSON")
    s.set_defaults(func=run_startup)
    _register_clones(commands)

    _register_threads(commands)
    _register_platform(commands)
    _register_cluster(commands)
    pl = commands.add_parser(
        "pipeline", help="a 3-stage pipeline's zero-copy hand-off against a local HTTP store")
    pl.add_argument("--mib", type=int, default=64, help="MiB handed from stage to stage")
    pl.add_argument("--runs", type=int, default=5, help="runs of each; medians (default 5)")
    pl.add_argument("--json", action="store_true", help="print the numbers as JSON")
    pl.set_defaults(func=run_pipeline)
    _register_handlers(commands)
    _register_children(commands)
    _register_imports(commands)

    m = commands.add_parser(
        "protocol", help="the controller/clone protocol: cost per message, typed vs pickle")
    m.add_argument("--runs", type=int, default=20000, help="messages to time (default 20000)")
    m.add_argument("--json", action="store_true", help="print the numbers as JSON")
    m.set_defaults(func=run_protocol)

    c = commands.add_parser(
        "cpython-tests", help="CPython's own test modules in a USF and on the host, side by side")
    c.add_argument("--module", action="append", default=None, metavar="NAME",
                   help="a test module (repeatable; default: the issue's list, e.g. "
                   "test.test_threading)")
    c.add_argument("--timeout", type=float, default=900.0, help="seconds per module and side")
    c.add_argument("--json", action="store_true", help="print the rows as JSON")
    c.set_defaults(func=run_cpython_tests)

    a = commands.add_parser(
        "all", help="run every experiment and write DIR/results.json, evaluation.md, figures"
    )
    a.add_argument("--report", type=Path, required=True, metavar="DIR",
                   help="where results.json, evaluation.md and the figures go")
    a.add_argument("--quick", action="store_true",
                   help="fewer repetitions, under 5 minutes (labelled as such in the report)")
    a.add_argument("--only", action="append", metavar="NAME",
                   help="run only this experiment (repeatable); names: " + experiment_names())
    a.add_argument("--cache", type=Path, default=None, metavar="DIR",
                   help="usetl's cache (images, module store, the container rootfs)")
    a.set_defaults(func=run_all)

    r = commands.add_parser("report", help="rewrite DIR/evaluation.md from DIR/results.json")
    r.add_argument("dir", type=Path, metavar="DIR")
    r.set_defaults(func=run_report)

    t = commands.add_parser("readme-table",
                            help="refresh README.md's comparison table from DIR/results.json")
    t.add_argument("dir", type=Path, metavar="DIR")
    t.add_argument("--readme", type=Path, default=Path("README.md"))
    t.set_defaults(func=run_readme_table)


def _register_imports(commands: argparse._SubParsersAction) -> None:
    i = commands.add_parser(
        "imports", help="import time of pandas, boto3, numpy, sklearn, PIL: USF against host")
    i.add_argument("--runs", type=int, default=3, help="fresh USFs per package and way")
    i.add_argument("--package", action="append", default=None, metavar="MODULE",
                   help="only this module (repeatable; default: all five)")
    i.add_argument("--cache", type=Path, default=None, metavar="DIR")
    i.add_argument("--json", action="store_true", help="print the numbers as JSON")
    i.set_defaults(func=run_imports)


def _register_platform(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "platform", help="the platform under sustained load: HTTP and Python API, both backends")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--seconds", type=float, default=5.0, help="timed seconds per series")
    p.add_argument("--warmup", type=float, default=2.0, help="untimed seconds first")
    p.add_argument("--backend", action="append", choices=["kvm", "process"], default=None,
                   help="backend to measure (repeatable; default both)")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.set_defaults(func=run_platform)
    e = commands.add_parser(
        "etl-platform", help="what secrets, schedules and callbacks cost, through a server")
    e.add_argument("--backend", choices=["kvm", "process"], default="process")
    e.add_argument("--invocations", type=int, default=200,
                   help="timed calls with and without secrets, and callbacks (default 200)")
    e.add_argument("--ticks", type=int, default=10, help="ticks of the schedule (default 10)")
    e.add_argument("--json", action="store_true", help="print the numbers as JSON")
    e.set_defaults(func=run_etl_platform)


def _register_handlers(commands: argparse._SubParsersAction) -> None:
    h = commands.add_parser(
        "handlers", help="real ETL handlers (Pillow, pandas, JSON, Jinja2, numpy, boto3): "
        "USF warm and new clone against a host process warm and cold")
    h.add_argument("--runs", type=int, default=10, help="timed warm calls per side (default 10)")
    h.add_argument("--clones", type=int, default=3, help="new clones timed (default 3)")
    h.add_argument("--colds", type=int, default=3, help="new host processes timed (default 3)")
    h.add_argument("--only", action="append", metavar="NAME",
                   help="only this handler (repeatable): thumbnail, groupby, reshape, render, "
                   "matmul, s3get")
    h.add_argument("--json", action="store_true", help="print the numbers as JSON")
    h.set_defaults(func=run_handlers)


def _register_children(commands: argparse._SubParsersAction) -> None:
    ch = commands.add_parser(
        "children", help="child programs and fork in a USF against the host's subprocess and fork")
    ch.add_argument("--runs", type=int, default=10, help="runs; medians shown (default 10)")
    ch.add_argument("--cache", type=Path, default=None, metavar="DIR")
    ch.add_argument("--json", action="store_true", help="print the numbers as JSON")
    ch.set_defaults(func=run_children)


def _register_cluster(commands: argparse._SubParsersAction) -> None:
    c = commands.add_parser(
        "cluster", help="several hosts (NATS, PostgreSQL, 1-3 workers) against one, side by side")
    c.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    c.add_argument("--seconds", type=float, default=3.0, help="timed seconds per series")
    c.add_argument("--warmup", type=float, default=1.0, help="untimed seconds first")
    c.add_argument("--json", action="store_true", help="print the numbers as JSON")
    c.set_defaults(func=run_cluster)


def _register_threads(commands: argparse._SubParsersAction) -> None:
    th = commands.add_parser(
        "threads", help="I/O overlap: N etl.get one after another, then on N guest threads")
    th.add_argument("--requests", type=int, default=8, help="requests (and threads; default 8)")
    th.add_argument("--size-mib", type=int, default=8, help="MiB per response (default 8)")
    th.add_argument("--delay-ms", type=int, default=50,
                    help="ms the server waits before each response (default 50)")
    th.add_argument("--runs", type=int, default=3, help="runs; the median is shown (default 3)")
    th.add_argument("--cache", type=Path, default=None, metavar="DIR")
    th.add_argument("--json", action="store_true", help="print the numbers as JSON")
    th.set_defaults(func=run_threads)


def experiment_names() -> str:
    from usetl.bench.runner import EXPERIMENTS

    return ", ".join(e.name for e in EXPERIMENTS)


def _say(msg: str) -> None:
    if sys.stderr.isatty():
        print(f"\r\033[Kbench: {msg}", end="", file=sys.stderr, flush=True)


def _report(args: argparse.Namespace, result: object, text: Callable[[Any], str]) -> int:
    """End the progress line, then print the result: as JSON with --json, else as text."""
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr)
    print(json.dumps(result, indent=2) if args.json else text(result))
    return 0


def run_startup(args: argparse.Namespace) -> int:
    image = ImageArchive.open(default_image(args.cache, progress=StderrProgress()))
    result = startup.run(image, args.runs, progress=_say)
    return _report(args, result, startup.format_report)


def run_imports(args: argparse.Namespace) -> int:
    from usetl.bench import imports

    image = ImageArchive.open(default_image(args.cache, progress=StderrProgress()))
    result = imports.run(image, args.runs, args.package, say=_say)
    return _report(args, result, imports.format_report)


def run_fork(args: argparse.Namespace) -> int:
    from usetl.bench import fork

    image = ImageArchive.open(default_image(args.cache, progress=StderrProgress()))
    result = fork.run(image, args.runs, args.held, progress=_say, jail=not args.no_jail,
                      merge=args.merge, huge_heap=args.huge_heap)
    return _report(args, result, fork.format_report)


def run_threads(args: argparse.Namespace) -> int:
    from usetl.bench import threads

    if min(args.requests, args.size_mib + 1, args.delay_ms + 1, args.runs) < 1:
        raise UsetlError("--requests and --runs must be positive, --size-mib and --delay-ms "
                         "at least 0")
    image = ImageArchive.open(default_image(args.cache, progress=StderrProgress()))
    _say("threads: running")
    result = threads.run_series(image, args.requests, args.size_mib, args.delay_ms, args.runs)
    return _report(args, result, threads.format_report)


def run_children(args: argparse.Namespace) -> int:
    from usetl.bench import children

    if args.runs < 1:
        raise UsetlError("--runs must be positive")
    image = ImageArchive.open(default_image(args.cache, progress=StderrProgress()))
    result = children.run(image, args.runs, progress=_say)
    return _report(args, result, children.format_report)


def run_all(args: argparse.Namespace) -> int:
    from usetl.bench import report, runner
    from usetl.bench.config import preset
    from usetl.image.build import CACHE_ENV

    if args.cache is not None:
        # Every process the experiments start (USF holders, usetl serve) uses the same cache.
        os.environ[CACHE_ENV] = str(args.cache.resolve())
    image = ImageArchive.open(default_image(args.cache, progress=StderrProgress()))
    results = runner.run_all(preset(args.quick), args.report, only=args.only, image=image)
    target = report.generate(args.report)
    failed = [n for n, e in results["experiments"].items() if e["status"] != "ok"]
    total = len(results["experiments"])
    print(f"usetl: wrote {target} ({total - len(failed)} of {total} experiments ok"
          + (f"; failed: {', '.join(failed)}" if failed else "") + ")")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from usetl.bench import report

    print(f"usetl: wrote {report.generate(args.dir)}")
    return 0


def run_readme_table(args: argparse.Namespace) -> int:
    from usetl.bench import readme_table

    readme_table.update(args.readme, args.dir)
    print(f"usetl: refreshed the comparison table in {args.readme} from {args.dir}")
    return 0


def run_jail(args: argparse.Namespace) -> int:
    from usetl.bench import jail

    image = ImageArchive.open(default_image(args.cache, progress=StderrProgress()))
    result = jail.run(image, args.runs, progress=_say)
    return _report(args, result, jail.format_report)


def run_protocol(args: argparse.Namespace) -> int:
    from usetl.bench import protocol

    result = protocol.run(args.runs)
    return _report(args, result, protocol.format_report)


def run_cpython_tests(args: argparse.Namespace) -> int:
    from usetl.bench import cpython_tests

    rows = cpython_tests.run(args.module or cpython_tests.MODULES, args.timeout, say=_say)
    return _report(args, rows, cpython_tests.format_table)


def run_pipeline(args: argparse.Namespace) -> int:
    from usetl.bench import pipeline

    if not 1 <= args.mib <= 64 or args.runs < 1:
        raise UsetlError("--mib must be 1..64 (the guest region's size) and --runs positive")
    result = pipeline.run(args.mib, args.runs, say=_say)
    return _report(args, result, pipeline.format_report)


def run_platform(args: argparse.Namespace) -> int:
    from usetl.bench import sustained

    result = sustained.run(args.backend or ["kvm", "process"], args.clients, args.seconds,
                           args.warmup, say=_say)
    return _report(args, result, sustained.format_report)


def run_etl_platform(args: argparse.Namespace) -> int:
    from usetl.bench import async_work

    if min(args.invocations, args.ticks) < 1:
        raise UsetlError("--invocations and --ticks must be positive")
    result = async_work.run(args.backend, args.invocations, args.ticks, say=_say)
    return _report(args, result, async_work.format_report)


def run_handlers(args: argparse.Namespace) -> int:
    from usetl.bench import handlers

    if min(args.runs, args.clones, args.colds) < 1:
        raise UsetlError("--runs, --clones and --colds must be positive")
    runs = handlers.Runs(warm=args.runs, clones=args.clones, colds=args.colds)
    result = handlers.run(runs, args.only, say=_say)
    return _report(args, result, handlers.format_report)


def run_cluster(args: argparse.Namespace) -> int:
    from usetl.bench import cluster

    result = cluster.run(args.clients, args.seconds, args.warmup, say=_say)
    return _report(args, result, cluster.format_report)


def run_egress(args: argparse.Namespace) -> int:
    from usetl.bench import egress

    image = ImageArchive.open(default_image(args.cache, progress=StderrProgress()))
    result = egress.run(image, args.runs, progress=_say)
    return _report(args, result, egress.format_report)
