"""`usetl secret set/ls/rm`: a tenant's secrets, encrypted on the server (over HTTP)."""

from __future__ import annotations

import argparse
import sys
import time

from usetl.errors import UsetlError

from .functions import _client, _command


def register(subparsers: argparse._SubParsersAction) -> None:
    secret = subparsers.add_parser(
        "secret", help="manage your secrets (given to functions deployed with --secret)",
        description="Secrets are stored encrypted, under a key kept outside the registry; a "
        "function deployed with --secret NAME finds the value in context.secrets[NAME] at "
        "invoke time, and the value is redacted from its stored output.")
    commands = secret.add_subparsers(dest="secret_command", required=True)
    set_ = _command(commands, "set", "store or replace a secret")
    set_.add_argument("secret_name", metavar="NAME")
    set_.add_argument("value", nargs="?", default=None,
                      help="the value (default: read from stdin, which keeps it out of the "
                      "shell's history and the process list)")
    set_.set_defaults(func=run_set)
    ls = _command(commands, "ls", "list your secrets' names")
    ls.set_defaults(func=run_ls)
    rm = _command(commands, "rm", "remove a secret")
    rm.add_argument("secret_name", metavar="NAME")
    rm.set_defaults(func=run_rm)


def run_set(args: argparse.Namespace) -> int:
    value = args.value
    if value is None:
        value = sys.stdin.read()
        value = value[:-1] if value.endswith("\n") else value  # `echo`'s newline
    if not value:
        raise UsetlError("the secret's value is empty")
    answer = _client(args).set_secret(args.secret_name, value)
    print(f"{'stored' if answer['created'] else 'replaced'} secret {args.secret_name}")
    return 0


def run_ls(args: argparse.Namespace) -> int:
    secrets = _client(args).secrets()
    if not secrets:
        print("no secrets")
        return 0
    print(f"{'NAME':32} UPDATED (UTC)")
    for s in secrets:
        print(f"{s['name']:32} {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(s['updated']))}")
    return 0


def run_rm(args: argparse.Namespace) -> int:
    _client(args).delete_secret(args.secret_name)
    print(f"removed secret {args.secret_name}")
    return 0
