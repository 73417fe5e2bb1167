"""`usetl pipeline deploy/run/show-run/runs/ls/rm`: pipelines of deployed functions, over HTTP."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from usetl.errors import UsetlError
from usetl.platform.pipeline import read_spec

from .functions import _client, _command, _json_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    pipeline = subparsers.add_parser("pipeline", help="pipelines: functions run as stages")
    commands = pipeline.add_subparsers(dest="pipeline_command", required=True)

    deploy = _command(commands, "deploy", "create or replace a pipeline of deployed functions")
    deploy.add_argument("name")
    deploy.add_argument("functions", nargs="*", metavar="FUNCTION",
                        help="the stages, in order (or give --spec)")
    deploy.add_argument("--spec", type=Path, default=None, metavar="FILE",
                        help="a TOML file of [[stage]] tables (function, retries, fan_out), "
                        'or JSON {"stages": [...]}')
    deploy.add_argument("--retries", type=int, default=0, metavar="N",
                        help="each stage given as FUNCTION retries a failed invocation N times")
    deploy.set_defaults(func=run_deploy)

    run = _command(commands, "run", "run a pipeline on an event (waits for its result)")
    run.add_argument("name")
    run.add_argument("event", nargs="?", default="null", help="the first stage's event (JSON)")
    run.add_argument("--async", dest="is_async", action="store_true",
                     help="only queue it; print the run's id")
    run.add_argument("--json", action="store_true", help="print the whole run record")
    run.set_defaults(func=run_run)

    show = _command(commands, "show-run", "show a pipeline run (e.g. an --async one)")
    show.add_argument("id")
    show.add_argument("--wait", action="store_true", help="wait until it has finished")
    show.set_defaults(func=run_show)

    runs = _command(commands, "runs", "list a pipeline's runs, the latest first")
    runs.add_argument("name")
    runs.add_argument("--limit", type=int, default=20, metavar="N", help="at most N (20)")
    runs.add_argument("--status", default=None,
                      choices=["queued", "running", "succeeded", "failed", "interrupted"],
                      help="only runs in this state")
    runs.add_argument("--json", action="store_true", help="print the run records as JSON")
    runs.set_defaults(func=run_runs)

    ls = _command(commands, "ls", "list your pipelines")
    ls.set_defaults(func=run_ls)

    rm = _command(commands, "rm", "delete a pipeline (its functions stay)")
    rm.add_argument("name")
    rm.set_defaults(func=run_rm)


def run_deploy(args: argparse.Namespace) -> int:
    if bool(args.functions) == (args.spec is not None):
        raise UsetlError("give the stages as FUNCTION ... or as --spec FILE, one of the two")
    if args.spec is not None:
        try:
            stages = read_spec(args.spec.read_text())
        except OSError as e:
            raise UsetlError(f"cannot read {args.spec}: {e.strerror}") from e
    else:
        stages = [{"function": f, "retries": args.retries} for f in args.functions]
    pipeline = _client(args).deploy_pipeline(args.name, stages)
    print(f"deployed pipeline {pipeline['name']}: {_stages(pipeline['stages'])}")
    return 0


def run_run(args: argparse.Namespace) -> int:
    event = _json_argument(args.event, "the event")
    client = _client(args)
    if args.is_async:
        print(client.run_pipeline(args.name, event, wait=False)["id"])
        return 0
    return _print_run(client.run_pipeline(args.name, event), args.json)


def run_show(args: argparse.Namespace) -> int:
    client = _client(args)
    record = client.pipeline_run(args.id)
    while args.wait and record["status"] in ("queued", "running"):
        time.sleep(0.2)
        record = client.pipeline_run(args.id)
    return _print_run(record, as_json=True)


def _print_run(record: dict, as_json: bool) -> int:
    ok = record["status"] == "succeeded"
    if as_json:
        print(json.dumps(record, indent=2))
        return 0 if ok or record["status"] in ("queued", "running") else 1
    for stage in record["stages"]:
        handed = (f", {stage['files_in']} file(s) handed in ({stage['bytes_in']} B, "
                  f"{stage['copied_bytes']} B copied)") if stage["files_in"] else ""
        print(f"stage {stage['stage']} {stage['function']}: {stage['status']}, "
              f"{stage['attempts']} attempt(s), {stage['duration_ms']:.1f} ms{handed}",
              file=sys.stderr)
    if not ok:
        error = record["error"] or {}
        print(f"{error.get('type')}: {error.get('message')}", file=sys.stderr)
        return 1
    print(json.dumps(record["result"]))
    return 0


def run_runs(args: argparse.Namespace) -> int:
    runs = _client(args).pipeline_runs(args.name, args.limit, args.status)
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    if not runs:
        print(f"no runs of pipeline {args.name}")
        return 0
    print(f"{'ID':32} {'STATUS':11} {'MODE':5} {'CREATED (UTC)':19} {'MS':>9}  STAGES / ERROR")
    for run in runs:
        took = f"{(run['finished'] - run['created']) * 1e3:9.1f}" if run["finished"] else \
            f"{'-':>9}"
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(run["created"]))
        stages = " ".join(f"{s['function']}:{s['status']}" for s in run["stages"])
        error = f"  {run['error']['type']}: {run['error']['message']}" if run["error"] else ""
        print(f"{run['id']:32} {run['status']:11} {run['mode']:5} {created:19} {took}  "
              f"{stages}{error}")
    return 0


def run_ls(args: argparse.Namespace) -> int:
    pipelines = _client(args).pipelines()
    if not pipelines:
        print("no pipelines")
    for p in pipelines:
        print(f"{p['name']:20} {_stages(p['stages'])}")
    return 0


def _stages(stages: list[dict]) -> str:
    """'extract -> resize[] (retries 2) -> load': [] marks a fan-out stage."""
    shown = []
    for s in stages:
        retries = f" (retries {s['retries']})" if s["retries"] else ""
        shown.append(f"{s['function']}{'[]' if s['fan_out'] else ''}{retries}")
    return " -> ".join(shown)


def run_rm(args: argparse.Namespace) -> int:
    _client(args).delete_pipeline(args.name)
    print(f"deleted pipeline {args.name}")
    return 0
