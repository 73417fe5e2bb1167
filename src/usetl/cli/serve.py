"""`usetl serve`: the whole platform in one process, with embedded defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

from usetl.platform.callbacks import CallbackConfig
from usetl.platform.learning import LEARN_AFTER


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the platform: HTTP API, registry, pools (KVM, or processes if asked)",
        description="Start the platform on one machine: the HTTP API, the SQLite registry in "
        "the state directory, the module store and the pools. Uses the KVM backend where "
        "/dev/kvm is usable; the process backend (weaker isolation) only with "
        "--backend process or where /dev/kvm is missing.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument("--backend", choices=["kvm", "process"], default=None,
                       help="sandbox backend (default: kvm if /dev/kvm is usable)")
    serve.add_argument("--state", type=Path, default=None, metavar="DIR",
                       help="state directory (default $USETL_STATE or ~/.local/state/usetl)")
    serve.add_argument("--modules", type=Path, default=None, metavar="DIR",
                       help="module store (default ~/.cache/usetl/modules)")
    serve.add_argument("--wheelhouse", type=Path, default=None, metavar="DIR",
                       help="install requirements only from the wheels in DIR, never from "
                       "the package index (default: the index pip is configured with)")
    serve.add_argument("--memory-budget", type=int, default=4096, metavar="MiB",
                       help="memory the pools may hold (default 4096)")
    serve.add_argument("--idle", type=float, default=60.0, metavar="S",
                       help="close ready instances after S idle seconds (default 60)")
    serve.add_argument("--merge-pages", action="store_true",
                       help="let the host's KSM merge identical pages of idle clones (KVM "
                       "backend; merges only while /sys/kernel/mm/ksm/run is 1; see the "
                       "README's \"Idle clones\" for what it costs)")
    serve.add_argument("--huge-heap", action="store_true",
                       help="map clones' free RAM on transparent huge pages: large fresh "
                       "allocations fault in 2 MiB at a time (KVM backend; see the README's "
                       "\"Huge pages\" for what it costs)")
    add_callback_arguments(serve)
    serve.add_argument("--learn-after", type=int, default=LEARN_AFTER, metavar="N",
                       help="build a function's next template with the modules its calls "
                       f"import lazily once N calls in a row import the same (default "
                       f"{LEARN_AFTER}; 0: never)")
    serve.set_defaults(func=run_serve)

    demo = subparsers.add_parser(
        "demo", help="start a server, deploy an ETL function, invoke it, show the timings")
    demo.add_argument("--backend", choices=["kvm", "process"], default=None,
                      help="sandbox backend (default: kvm if /dev/kvm is usable)")
    demo.set_defaults(func=run_demo)


def add_callback_arguments(parser: argparse.ArgumentParser) -> None:
    """Where async invocations' callbacks may go, and how often they are tried (`usetl
    serve`, `usetl gateway`)."""
    defaults = CallbackConfig()
    parser.add_argument("--callback-allow", action="append", default=[], metavar="URL_PREFIX",
                        help="a URL prefix async invocations' callbacks may be POSTed to "
                        "(repeatable; default none: callback URLs are refused)")
    parser.add_argument("--callback-attempts", type=int, default=defaults.attempts,
                        metavar="N",
                        help=f"attempts to deliver a callback (default {defaults.attempts})")
    parser.add_argument("--callback-backoff", type=float, default=defaults.backoff_s,
                        metavar="S", help="seconds before a callback's second attempt, "
                        f"doubled before each next one (default {defaults.backoff_s:g})")


def callback_config(args: argparse.Namespace) -> CallbackConfig:
    return CallbackConfig(allow=args.callback_allow, attempts=args.callback_attempts,
                          backoff_s=args.callback_backoff)


def run_serve(args: argparse.Namespace) -> int:
    from usetl.api.server import serve

    serve(
        host=args.host, port=args.port, backend_name=args.backend, state_dir=args.state,
        module_dir=args.modules, wheelhouse=args.wheelhouse,
        memory_budget_mib=args.memory_budget, idle_s=args.idle, learn_after=args.learn_after,
        callbacks=callback_config(args),
        announce=lambda line: print(line, flush=True), merge_pages=args.merge_pages,
        huge_heap=args.huge_heap,
    )
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from usetl.api import demo
    from usetl.platform.backends import kvm_usable

    backend = args.backend or ("kvm" if kvm_usable() else "process")
    demo.run(backend, say=lambda line: print(line, flush=True))
    return 0
