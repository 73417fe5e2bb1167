"""The client commands: deploy, invoke, ls, logs, usage, rm, tenant add, stats (over HTTP).

The server is --url, else $USETL_URL, else the config file, else
http://127.0.0.1:8080; the token is --token, else $USETL_TOKEN, else the
config file (`usetl tenant add` writes it), else, for a local server, the
admin token `usetl serve` saved in the state directory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from usetl.api.client import TOKEN_ENV, Client, load_config, read_requirements, save_config
from usetl.errors import UsetlError
from usetl.image import StderrProgress
from usetl.platform.registry import admin_token_file


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_deploy(subparsers)

    invoke = _command(subparsers, "invoke", "invoke a function (waits for the result)")
    invoke.add_argument("name")
    invoke.add_argument("event", nargs="?", default="null", help="the event as JSON")
    invoke.add_argument("--async", dest="is_async", action="store_true",
                        help="only queue it; print the invocation id")
    invoke.add_argument("--json", action="store_true", help="print the whole invocation record")
    invoke.add_argument("--callback", default=None, metavar="URL",
                        help="with --async: POST the invocation record to URL once it is done "
                        "(the server's --callback-allow must cover it)")
    invoke.set_defaults(func=run_invoke)
    _register_failed(subparsers)

    show = _command(subparsers, "invocation", "show an invocation (e.g. an --async one)")
    show.add_argument("id")
    show.add_argument("--wait", action="store_true", help="wait until it has finished")
    show.set_defaults(func=run_invocation)

    ls = _command(subparsers, "ls", "list your functions")
    ls.set_defaults(func=run_ls)

    logs = _command(subparsers, "logs", "recent invocations of a function with their output")
    logs.add_argument("name")
    logs.add_argument("-n", "--limit", type=int, default=20)
    logs.add_argument("--before", type=float, default=None, metavar="UNIX_TIME",
                      help="older invocations: those created before this time (a page back)")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="then print each invocation as it finishes, until Ctrl-C")
    logs.add_argument("--interval", type=float, default=1.0, metavar="S",
                      help="with -f: how often to ask the server (default 1)")
    logs.set_defaults(func=run_logs)

    usage = _command(subparsers, "usage", "what your invocations used, per function (billing)")
    usage.add_argument("--hours", type=float, default=None, help="only the last N hours")
    usage.set_defaults(func=run_usage)

    rm = _command(subparsers, "rm", "delete a function (all its versions)")
    rm.add_argument("name")
    rm.set_defaults(func=run_rm)

    tenant = subparsers.add_parser("tenant", help="manage tenants (admin)")
    tenant_commands = tenant.add_subparsers(dest="tenant_command", required=True)
    add = _command(tenant_commands, "add", "add a tenant; print its token and save it")
    add.add_argument("tenant_name", metavar="NAME")
    add.add_argument("--no-save", action="store_true",
                     help="do not write the token into the config file")
    add.set_defaults(func=run_tenant_add)

    stats = _command(subparsers, "stats", "live view of pools, latency and memory")
    stats.add_argument("--interval", type=float, default=1.0, metavar="S")
    stats.add_argument("--once", action="store_true", help="print one view and exit")
    stats.set_defaults(func=run_stats)


def _register_failed(subparsers: argparse._SubParsersAction) -> None:
    failed = _command(subparsers, "invocations", "list invocations: the dead letters")
    failed.add_argument("--failed", action="store_true", required=True,
                        help="async invocations that failed for good (retries spent)")
    failed.add_argument("--function", default=None, metavar="NAME", help="only this function's")
    failed.add_argument("-n", "--limit", type=int, default=100)
    failed.add_argument("--json", action="store_true", help="print the whole records")
    failed.set_defaults(func=run_failed)


def _register_deploy(subparsers: argparse._SubParsersAction) -> None:
    deploy = _command(subparsers, "deploy", "deploy a function (a new version)")
    deploy.add_argument("name", help="function name")
    deploy.add_argument("path", type=Path, help="a .py file, or a directory (a package)")
    deploy.add_argument("--handler", default=None,
                        help="FILE.py:FUNCTION, or Lambda's MODULE.FUNCTION "
                        "(default: <file>:handler, or main.py:handler)")
    deploy.add_argument("-r", "--requirement", action="append", default=None, metavar="REQ",
                        help="a pip requirement, or a requirements file (as pip's -r: "
                        "--hash options are checked); repeatable; default: the directory's "
                        "requirements.txt")
    deploy.add_argument("--memory", type=int, default=None, metavar="MiB")
    deploy.add_argument("--timeout", type=float, default=None, metavar="S")
    deploy.add_argument("--concurrency", type=int, default=None, metavar="N",
                        help="invocations at once (default 64)")
    deploy.add_argument("--queue", type=int, default=None, metavar="N",
                        help="invocations that may wait beyond that; more get HTTP 429 "
                        "(default 256; 0 refuses at once)")
    deploy.add_argument("--allow", action="append", default=None, metavar="URL_PREFIX",
                        help="a URL prefix the function may GET/POST (repeatable)")
    deploy.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    deploy.add_argument("--warmup", default=None, metavar="EVENT_JSON",
                        help="run the handler once on this event at deploy and freeze the "
                        "template after that run (lazy imports, caches, loaded models)")
    deploy.add_argument("--reuse", choices=["rollback", "warm"], default=None,
                        help="rollback (default): every call starts from the template; warm: "
                        "an instance keeps its globals and /tmp between calls (Lambda's way)")
    deploy.add_argument("--retries", type=int, default=None, metavar="N",
                        help="retry a failed async invocation up to N times (handler errors "
                        "and sandbox failures; default 0)")
    deploy.add_argument("--retry-backoff", type=float, default=None, metavar="S",
                        help="seconds before the first retry, doubled before each next one "
                        "(default 1)")
    deploy.add_argument("--secret", action="append", default=None, metavar="NAME",
                        help="give each invocation this secret, in context.secrets[NAME] "
                        "(repeatable; `usetl secret set` first)")
    deploy.set_defaults(func=run_deploy)


def _command(subparsers: argparse._SubParsersAction, name: str, help: str):
    parser = subparsers.add_parser(name, help=help, description=help)
    parser.add_argument("--url", default=None, help="server URL")
    parser.add_argument("--token", default=None, help="bearer token")
    parser.add_argument("--state", type=Path, default=None, metavar="DIR",
                        help="a local server's state directory (for its admin token)")
    return parser


def _json_argument(text: str, what: str):
    """A command-line argument that holds JSON (an event, a warm-up), or one clear error."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UsetlError(f"{what} is not valid JSON: {e}") from e


def _client(args: argparse.Namespace, admin: bool = False) -> Client:
    token = args.token or os.environ.get(TOKEN_ENV)
    if token is None and not admin:
        token = load_config().get("token")
    if token is None:
        path = admin_token_file(args.state)
        if path.is_file():
            token = path.read_text().strip()
    return Client(args.url, token)


def run_deploy(args: argparse.Namespace) -> int:
    env = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep:
            raise UsetlError(f"--env {item!r}: expected NAME=VALUE")
        env[name] = value
    options = {}
    if args.warmup is not None:
        options["warmup"] = _json_argument(args.warmup, "--warmup")
    requirements = None
    if args.requirement is not None:
        requirements = []
        for item in args.requirement:
            is_file = Path(item).is_file()
            requirements += read_requirements(Path(item)) if is_file else [item]
    with_client = _client(args)
    v = with_client.deploy(
        args.name, args.path, handler=args.handler, requirements=requirements,
        progress=StderrProgress(), memory_mib=args.memory, timeout_s=args.timeout,
        concurrency=args.concurrency, queue=args.queue,
        allow=args.allow, env=env or None, reuse=args.reuse, retries=args.retries,
        retry_backoff_s=args.retry_backoff, secrets=args.secret, **options,
    )
    warmup = v.get("warmup")
    if warmup is not None:
        sys.stderr.write(warmup["stdout"] + warmup["stderr"])
        print(f"warm-up run: {warmup['duration_ms']:.1f} ms; the template was frozen after it",
              file=sys.stderr)
    reqs = ", ".join(v["requirements"]) or "none"
    print(f"deployed {v['name']} version {v['version']} ({v['handler']}; requirements: {reqs})")
    return 0


def run_invoke(args: argparse.Namespace) -> int:
    event = _json_argument(args.event, "the event")
    client = _client(args)
    if args.is_async:
        print(client.invoke_async(args.name, event, args.callback))
        return 0
    if args.callback is not None:
        raise UsetlError("--callback is for --async invocations")
    return _print_invocation(client.invoke(args.name, event), args.json)


def _print_invocation(record: dict, as_json: bool) -> int:
    if as_json:
        print(json.dumps(record, indent=2))
        return 0 if record["status"] == "succeeded" else 1
    if record["stdout"]:
        sys.stderr.write(record["stdout"])
    if record["stderr"]:
        sys.stderr.write(record["stderr"])
    error = record.get("error")
    if error:
        print(error.get("traceback") or f"{error['type']}: {error['message']}",
              file=sys.stderr, end="" if error.get("traceback") else "\n")
        return 1
    if record["status"] in ("queued", "running"):
        print(f"{record['id']}: {record['status']}")
        return 0
    print(json.dumps(record["result"]))
    m = record["metrics"]
    if m.get("duration_ms") is not None:
        peak = m.get("peak_memory_bytes")
        memory = f", peak memory {peak / 2**20:.1f} MiB" if peak else ""
        print(f"({m['duration_ms']:.2f} ms, guest CPU {m['guest_cpu_ms']:.2f} ms{memory}, "
              f"id {record['id']})", file=sys.stderr)
    return 0


def run_invocation(args: argparse.Namespace) -> int:
    client = _client(args)
    record = client.invocation(args.id)
    while args.wait and record["status"] in ("queued", "running"):
        time.sleep(0.2)
        record = client.invocation(args.id)
    return _print_invocation(record, as_json=True)


def run_ls(args: argparse.Namespace) -> int:
    functions = _client(args).functions()
    if not functions:
        print("no functions")
        return 0
    print(f"{'NAME':20} {'VERSION':>7} {'GEN':>4} {'MEMORY':>7} {'TIMEOUT':>8} {'CONC':>5}  "
          "HANDLER")
    for f in functions:
        print(f"{f['name']:20} {f['version']:>7} {f['generation']:>4} {f['memory_mib']:>6}M "
              f"{f['timeout_s']:>7g}s {f['concurrency']:>5}  {f['handler']}")
        if f["learned_modules"]:
            print(f"    learned imports: {', '.join(f['learned_modules'])}")
        if f["learn_error"] is not None:
            e = f["learn_error"]
            print(f"    next generation failed: {e['type']}: {e['message']}")
    return 0


def run_logs(args: argparse.Namespace) -> int:
    client = _client(args)
    page = client.logs_page(args.name, args.limit, before=args.before)
    for record in page["invocations"]:
        _print_log(record)
    if not args.follow:
        return 0
    try:
        _follow(client, args.name, page, args.interval)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a follow ends
    finally:
        client.close()
    return 0


FOLLOW_PAGE = 500
FOLLOW_LAG_S = 5.0  # asked again: a record may be committed a moment after its finish time


def _follow(client: Client, name: str, page: dict, interval: float) -> None:
    """Print each invocation of `name` as it finishes, once, until interrupted."""
    printed = {r["id"]: r["finished"] for r in page["invocations"] if r["finished"]}
    cursor = page["now"]
    while True:
        page = client.logs_page(name, FOLLOW_PAGE, after=cursor - FOLLOW_LAG_S)
        for record in page["invocations"]:
            if printed.get(record["id"]) != record["finished"]:
                _print_log(record)
                printed[record["id"]] = record["finished"]
        full = len(page["invocations"]) == FOLLOW_PAGE
        cursor = page["invocations"][-1]["finished"] + FOLLOW_LAG_S if full else page["now"]
        printed = {i: f for i, f in printed.items() if f > cursor - 2 * FOLLOW_LAG_S}
        sys.stdout.flush()
        if not full:
            time.sleep(interval)


def _print_log(record: dict) -> None:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["created"]))
    ms = record["metrics"]["duration_ms"]
    took = f" {ms:.1f} ms" if ms is not None else ""
    trigger = record.get("trigger")
    by = f" (schedule {trigger['schedule']})" if trigger else ""
    print(f"--- {when} {record['id']} v{record['version']} {record['status']}{took}{by}")
    for line in (record["stdout"] + record["stderr"]).splitlines():
        print(f"    {line}")
    if record["error"]:
        print(f"    {record['error']['type']}: {record['error']['message']}")
    if record.get("unimplemented"):
        hits = ", ".join(f"{name} x{n}" for name, n in sorted(record["unimplemented"].items()))
        print(f"    unimplemented syscalls (ENOSYS): {hits}")
    if record.get("phases"):  # where its time went, measured by the host
        spent = ", ".join(f"{name.removesuffix('_ms')} {ms:.2f}"
                          for name, ms in record["phases"].items())
        print(f"    time (ms): {spent}")


def run_failed(args: argparse.Namespace) -> int:
    records = _client(args).failed_invocations(args.function, args.limit)
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    if not records:
        print("no failed async invocations")
        return 0
    print(f"{'ID':32} {'FUNCTION':20} {'FINISHED':19} {'RUNS':>4}  ERROR")
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["finished"] or r["created"]))
        error = r["error"] or {"type": "?", "message": ""}
        print(f"{r['id']:32} {r['function']:20} {when:19} {len(r['attempts']):>4}  "
              f"{error['type']}: {error['message']}")
    return 0


def run_usage(args: argparse.Namespace) -> int:
    since = time.time() - args.hours * 3600 if args.hours else 0.0
    rows = _client(args).usage(since)
    print(f"{'FUNCTION':20} {'CALLS':>7} {'FAILED':>6} {'TIME S':>8} {'GUEST CPU S':>11} "
          f"{'I/O HOST CPU S':>14} {'REQUESTS':>8} {'BYTES IN':>10} {'BYTES OUT':>10}")
    for u in rows:
        print(f"{u['function']:20} {u['invocations']:>7} {u['failed']:>6} "
              f"{u['duration_ms'] / 1e3:>8.2f} {u['guest_cpu_ms'] / 1e3:>11.3f} "
              f"{u['io_host_cpu_s']:>14.4f} {u['io_requests']:>8} {u['bytes_in']:>10} "
              f"{u['bytes_out']:>10}")
    return 0


def run_rm(args: argparse.Namespace) -> int:
    deleted = _client(args).delete(args.name)
    print(f"deleted {deleted['deleted']} (versions {deleted['versions']})")
    return 0


def run_tenant_add(args: argparse.Namespace) -> int:
    client = _client(args, admin=True)
    added = client.add_tenant(args.tenant_name)
    print(added["token"])
    if not args.no_save:
        path = save_config(client.url, added["token"])
        print(f"(saved as the default token in {path})", file=sys.stderr)
    return 0


def run_stats(args: argparse.Namespace) -> int:
    client = _client(args)
    previous: dict[str, float] = {}
    t_prev = time.monotonic()
    while True:
        pool = client.pool()
        try:
            counts = _invocation_counts(client.metrics())
        except UsetlError:
            counts = {}  # metrics are for the admin tenant
        now = time.monotonic()
        lines = [
            f"usetl stats  {time.strftime('%H:%M:%S')}  backend {pool['backend']}  "
            f"memory {pool['memory_bytes'] / 2**20:.0f} / "
            f"{pool['memory_budget_bytes'] / 2**20:.0f} MiB",
            f"{'FUNCTION':28} {'TEMPLATE':>8} {'READY':>5} {'BUSY':>5} {'QUEUED':>6} "
            f"{'LIMIT':>5} {'INVOKED':>8} {'PER S':>7} {'MEAN MS':>8}",
        ]
        for f in pool["functions"]:
            key = f["function"]
            total, seconds = counts.get(key, (0.0, 0.0))
            rate = (total - previous.get(key, total)) / max(now - t_prev, 1e-6)
            mean = seconds / total * 1e3 if total else 0.0
            lines.append(
                f"{key:28} {'yes' if f['template'] else 'no':>8} {f['ready']:>5} {f['busy']:>5} "
                f"{f['queued']:>6} {f['concurrency_limit']:>5} {total:>8.0f} {rate:>7.1f} "
                f"{mean:>8.2f}"
            )
            previous[key] = total
        t_prev = now
        if args.once:
            print("\n".join(lines))
            return 0
        print("\033[H\033[J" + "\n".join(lines), flush=True)
        time.sleep(args.interval)


def _invocation_counts(text: str) -> dict[str, tuple[float, float]]:
    """Per function: (invocations, total seconds) from the latency histogram."""
    counts: dict[str, list[float]] = {}
    for line in text.splitlines():
        for suffix, index in (("_count", 0), ("_sum", 1)):
            prefix = f"usetl_invocation_seconds{suffix}{{function=\""
            if line.startswith(prefix):
                key, _, value = line[len(prefix):].partition("\"} ")
                counts.setdefault(key, [0.0, 0.0])[index] = float(value)
    return {k: (v[0], v[1]) for k, v in counts.items()}
