"""`usetl schedule add/ls/rm`: invoke a function on a cron expression (over HTTP)."""

from __future__ import annotations

import argparse
import json
import time

from .functions import _client, _command, _json_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    schedule = subparsers.add_parser(
        "schedule", help="invoke a function on a cron expression",
        description="Cron expressions are in UTC: 5 fields (minute hour day month weekday), "
        "6 with seconds first ('*/10 * * * * *'), or @hourly, @daily, ... Each tick is one "
        "async invocation, fired once even with several servers; of ticks missed while no "
        "server ran, the latest fires once and the older ones are skipped.")
    commands = schedule.add_subparsers(dest="schedule_command", required=True)
    add = _command(commands, "add", "add a schedule; prints its id")
    add.add_argument("name", help="the function")
    add.add_argument("cron", help="e.g. '0 * * * *' (hourly) or '*/10 * * * * *'")
    add.add_argument("--event", default="null", metavar="JSON", help="the event of each tick")
    add.set_defaults(func=run_add)
    ls = _command(commands, "ls", "list your schedules")
    ls.set_defaults(func=run_ls)
    rm = _command(commands, "rm", "remove a schedule")
    rm.add_argument("id")
    rm.set_defaults(func=run_rm)


def run_add(args: argparse.Namespace) -> int:
    event = _json_argument(args.event, "--event")
    added = _client(args).add_schedule(args.name, args.cron, event)
    print(added["id"])
    return 0


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) if t is not None else "-"


def run_ls(args: argparse.Namespace) -> int:
    schedules = _client(args).schedules()
    if not schedules:
        print("no schedules")
        return 0
    print(f"{'ID':16} {'FUNCTION':20} {'CRON':18} {'NEXT (UTC)':19} {'LAST (UTC)':19} "
          f"{'LAST TICK':20} {'REFUSED':7} EVENT")
    for s in schedules:
        print(f"{s['id']:16} {s['function']:20} {s['cron']:18} {_when(s['next_tick']):19} "
              f"{_when(s['last_tick']):19} {_outcome(s['last_outcome']):20} "
              f"{s['refused_ticks']:<7} {json.dumps(s['event'])}")
    return 0


def _outcome(outcome: dict | None) -> str:
    """What became of the last tick: queued, or refused and why (its code)."""
    if outcome is None:
        return "-"
    refused = outcome.get("refused")
    return "queued" if refused is None else f"refused: {refused['code']}"


def run_rm(args: argparse.Namespace) -> int:
    _client(args).delete_schedule(args.id)
    print(f"removed schedule {args.id}")
    return 0
