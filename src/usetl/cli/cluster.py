"""`usetl gateway`, `usetl worker`, `usetl host`: the platform on several hosts."""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
from pathlib import Path

from usetl.cluster import config as cluster_config
from usetl.cluster.bus import ACK_WAIT_S, PULL_WAIT_S, SWITCH_INTERVAL_S
from usetl.errors import UsetlError

from .serve import add_callback_arguments, callback_config


def register(subparsers: argparse._SubParsersAction) -> None:
    gateway = subparsers.add_parser(
        "gateway", help="run a stateless HTTP API gateway for several hosts",
        description="Serve the HTTP API over the PostgreSQL registry, dispatching invocations "
        "to workers through NATS JetStream. Several gateways may serve the same cluster.")
    cluster_config.add_arguments(gateway)
    gateway.add_argument("--host", default="127.0.0.1", help="address to listen on")
    gateway.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    gateway.add_argument("--max-runs", type=int, default=3, metavar="N",
                         help="deliveries of an async invocation to workers that die before "
                         "it is dead-lettered (set on a function's first deploy; default 3)")
    gateway.add_argument("--ack-wait", type=float, default=ACK_WAIT_S, metavar="S",
                         help="a worker silent this long about an invocation it runs is taken "
                         "for dead and the invocation redelivered (set on a function's first "
                         f"deploy; default {ACK_WAIT_S:g})")
    add_callback_arguments(gateway)
    _state_arguments(gateway)
    gateway.set_defaults(func=run_gateway)

    worker = subparsers.add_parser(
        "worker", help="run this host's worker: templates, clones, invocations",
        description="Hold templates and clones on this host and run the invocations it pulls "
        "from NATS JetStream; heartbeats in the usetl_hosts bucket.")
    cluster_config.add_arguments(worker)
    worker.add_argument("--name", default=socket.gethostname(),
                        help="this host's name in the cluster (default: the host name)")
    worker.add_argument("--backend", choices=["kvm", "process"], default=None,
                        help="sandbox backend (default: kvm if /dev/kvm is usable)")
    worker.add_argument("--slots", type=int, default=2,
                        help="invocations run at once on this host (default 2)")
    worker.add_argument("--memory-budget", type=int, default=4096, metavar="MiB",
                        help="memory the pools may hold (default 4096)")
    worker.add_argument("--pull-wait", type=float, default=PULL_WAIT_S, metavar="S",
                        help="how long a pull request waits at NATS for a message: longer "
                        "means fewer requests from an idle host, and a drain that takes up "
                        f"to that long to finish (default {PULL_WAIT_S:g})")
    _state_arguments(worker)
    worker.set_defaults(func=run_worker)

    host = subparsers.add_parser("host", help="the cluster's workers")
    host_sub = host.add_subparsers(dest="host_command", required=True)
    ls = host_sub.add_parser("ls", help="workers whose heartbeat is within its TTL")
    cluster_config.add_arguments(ls, database=False)
    ls.add_argument("--json", action="store_true", help="one JSON list")
    ls.set_defaults(func=run_host_ls)
    drain = host_sub.add_parser("drain", help="a host finishes what it runs, takes nothing new")
    cluster_config.add_arguments(drain, database=False)
    drain.add_argument("name")
    drain.add_argument("--undo", action="store_true", help="let it take work again")
    drain.set_defaults(func=run_host_drain)


def _state_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", type=Path, default=None, metavar="DIR",
                        help="this host's state directory (default $USETL_STATE or "
                        "~/.local/state/usetl)")
    parser.add_argument("--modules", type=Path, default=None, metavar="DIR",
                        help="module store (default ~/.cache/usetl/modules)")


def run_gateway(args: argparse.Namespace) -> int:
    from usetl.api.server import ensure_admin, run_api
    from usetl.cluster.gateway import Gateway
    from usetl.image.modstore import ModuleStore
    from usetl.platform.registry import ADMIN_TOKEN_FILE, state_root

    config = cluster_config.from_arguments(args)
    state = state_root(args.state)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    if args.max_runs < 1:
        raise UsetlError("--max-runs must be at least 1")
    if args.ack_wait <= 0:
        raise UsetlError("--ack-wait must be more than 0 seconds")
    gateway = Gateway(config, state, ModuleStore(args.modules), name=f"gateway-{args.port}",
                      max_runs=args.max_runs, callbacks=callback_config(args),
                      ack_wait_s=args.ack_wait)
    token = ensure_admin(gateway)
    if token is not None:
        print(f"usetl: admin token (saved in {state / ADMIN_TOKEN_FILE}): {token}", flush=True)
    print(f"usetl: gateway on http://{args.host}:{args.port}", flush=True)
    run_api(gateway, args.host, args.port, loop=gateway.bus.loop)
    return 0


def run_worker(args: argparse.Namespace) -> int:
    from usetl.cluster.membership import check_host_name
    from usetl.cluster.worker import Worker
    from usetl.platform.registry import state_root

    config = cluster_config.from_arguments(args)
    if args.pull_wait <= 0:
        raise UsetlError("--pull-wait must be more than 0 seconds")
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    worker = Worker(config, check_host_name(args.name), state_root(args.state),
                    args.backend, args.slots, args.memory_budget, args.modules, args.pull_wait)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: worker.stop())
    print(f"usetl: worker {args.name} ({worker.platform.backend.name}, {args.slots} slots)",
          flush=True)
    try:
        worker.serve()
    finally:
        worker.close()
    return 0


def _bus(args: argparse.Namespace):
    from usetl.cluster.bus import Bus

    return Bus(cluster_config.from_arguments(args, database=False), "usetl-cli")


def run_host_ls(args: argparse.Namespace) -> int:
    from usetl.cluster.membership import hosts

    bus = _bus(args)
    try:
        found = bus.run(hosts(bus))
    finally:
        bus.close()
    if args.json:
        print(json.dumps(found))
        return 0
    print(f"{'HOST':<20} {'RUNNING':>7} {'SLOTS':>5} {'FREE MiB':>9} {'WARM':>5}  STATE")
    for h in found:
        print(f"{h['host']:<20} {h['running']:>7} {h['slots']:>5} "
              f"{h['free_memory_bytes'] >> 20:>9} {len(h['warm']):>5}  "
              f"{'draining' if h['draining'] else 'up'}")
    return 0


def run_host_drain(args: argparse.Namespace) -> int:
    from usetl.cluster.membership import drain

    bus = _bus(args)
    try:
        bus.run(drain(bus, args.name, args.undo))
    finally:
        bus.close()
    print(f"usetl: {args.name} {'takes work again' if args.undo else 'is draining'}")
    return 0
