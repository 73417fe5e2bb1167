"""What a jail is made of, and how it fails."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

from usetl.errors import UsetlError

log = logging.getLogger("usetl.jail")

# The host's shared libraries and the few /etc files CPython, glibc's resolver and OpenSSL
# read; with the Python installation, the usetl package and the image added by the caller.
SYSTEM_PATHS = (
    "/usr", "/lib", "/lib64", "/bin",
    "/etc/ld.so.cache", "/etc/localtime", "/etc/hosts", "/etc/resolv.conf",
    "/etc/nsswitch.conf", "/etc/host.conf", "/etc/gai.conf", "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
)
DEVICES = ("/dev/kvm", "/dev/null", "/dev/zero", "/dev/urandom")


class JailError(UsetlError):
    """A facility of the jail that this host has could not be applied."""


class Unavailable(JailError):
    """The host lacks a facility (no cgroup controller, no seccomp): a warning, not a failure."""


def degrade(facility: str, reason: str) -> None:
    log.warning("jail: %s is unavailable here (%s); the process runs without it", facility, reason)


@dataclass(frozen=True)
class JailSpec:
    """One process's jail.

    `read_only`: host paths shown read-only at the same paths in the jail's root (nothing
    else of the host is there). The process always gets an empty network namespace: the
    egress broker carries out its ETL requests and its guest's connects.
    """

    uid: int
    gid: int
    read_only: tuple[str, ...] = ()
    devices: tuple[str, ...] = DEVICES
    seccomp: bool = True
    hostname: str = "usetl"
    keep_fds: tuple[int, ...] = field(default=(0, 1, 2))

    def with_paths(self, *paths: str) -> JailSpec:
        return JailSpec(self.uid, self.gid, tuple(dict.fromkeys((*self.read_only, *paths))),
                        self.devices, self.seccomp, self.hostname,
                        self.keep_fds)


def python_paths() -> tuple[str, ...]:
    """The running interpreter's installation and import path, as directories to show.

    Not the working directory, which `python -m` puts first on sys.path (the worker is
    run with -P so that it does not).
    """
    cwd = os.getcwd()
    paths = [sys.base_prefix, sys.prefix, sys.exec_prefix]
    paths += [p for p in sys.path if p and p != cwd and not p.endswith(".zip")]
    return tuple(dict.fromkeys(paths))
