"""Where a gateway or worker finds NATS and PostgreSQL: URL options, else environment.

Credentials travel in the URLs (nats://user:password@host:4222,
postgresql://role:password@host/usetl) or, for NATS, in USETL_NATS_USER and
USETL_NATS_PASSWORD. TLS: NATS with tls:// URLs and USETL_NATS_CA (and
USETL_NATS_CERT/USETL_NATS_KEY for a client certificate); PostgreSQL with libpq's
own URL parameters (sslmode=verify-full&sslrootcert=...).
"""

from __future__ import annotations

import argparse
import os
import ssl
from dataclasses import dataclass
from typing import Any

from usetl.errors import UsetlError

NATS_URL_ENV = "USETL_NATS_URL"
DATABASE_URL_ENV = "USETL_DATABASE_URL"
NATS_USER_ENV, NATS_PASSWORD_ENV = "USETL_NATS_USER", "USETL_NATS_PASSWORD"
NATS_CA_ENV, NATS_CERT_ENV, NATS_KEY_ENV = "USETL_NATS_CA", "USETL_NATS_CERT", "USETL_NATS_KEY"
HEARTBEAT_TTL_S = 5.0  # default: a worker silent this long leaves `host ls`


class ClusterConfigError(UsetlError):
    """A gateway or worker was not told where NATS or PostgreSQL is."""


@dataclass(frozen=True)
class ClusterConfig:
    nats_url: str
    database_url: str
    nats_user: str | None = None
    nats_password: str | None = None
    nats_ca: str | None = None
    nats_cert: str | None = None
    nats_key: str | None = None
    heartbeat_ttl_s: float = HEARTBEAT_TTL_S  # the hosts bucket's, if this process makes it

    def nats_options(self) -> dict[str, Any]:
        """Keyword arguments for nats.connect: credentials, TLS, reconnecting for ever (a
        NATS restart is waited out, not fatal)."""
        options: dict[str, Any] = {"servers": self.nats_url, "max_reconnect_attempts": -1,
                                   "reconnect_time_wait": 0.2, "connect_timeout": 5}
        if self.nats_user:
            options.update(user=self.nats_user, password=self.nats_password or "")
        if self.nats_ca or self.nats_url.startswith("tls://"):
            context = ssl.create_default_context(cafile=self.nats_ca)
            if self.nats_cert:
                context.load_cert_chain(self.nats_cert, self.nats_key)
            options["tls"] = context
        return options


def add_arguments(parser: argparse.ArgumentParser, database: bool = True) -> None:
    parser.add_argument("--nats", default=None, metavar="URL",
                        help=f"NATS server (default ${NATS_URL_ENV})")
    if database:
        parser.add_argument("--database", default=None, metavar="URL",
                            help=f"PostgreSQL database (default ${DATABASE_URL_ENV})")
        parser.add_argument("--heartbeat-ttl", type=float, default=HEARTBEAT_TTL_S,
                            metavar="S", help="a worker whose heartbeat is this old leaves "
                            "the cluster (set by the first gateway or worker to start; "
                            f"default {HEARTBEAT_TTL_S:g})")


def from_arguments(args: argparse.Namespace, database: bool = True) -> ClusterConfig:
    nats_url = args.nats or os.environ.get(NATS_URL_ENV)
    database_url = (getattr(args, "database", None) or os.environ.get(DATABASE_URL_ENV)
                    if database else "")
    if not nats_url:
        raise ClusterConfigError(f"no NATS server: give --nats URL or set ${NATS_URL_ENV}")
    if database and not database_url:
        raise ClusterConfigError("no PostgreSQL database: give --database URL or set "
                                 f"${DATABASE_URL_ENV}")
    heartbeat_ttl_s = getattr(args, "heartbeat_ttl", HEARTBEAT_TTL_S)
    if heartbeat_ttl_s <= 0:
        raise ClusterConfigError("--heartbeat-ttl must be more than 0 seconds")
    env = os.environ.get
    return ClusterConfig(nats_url, database_url or "", env(NATS_USER_ENV), env(NATS_PASSWORD_ENV),
                         env(NATS_CA_ENV), env(NATS_CERT_ENV), env(NATS_KEY_ENV),
                         heartbeat_ttl_s)
