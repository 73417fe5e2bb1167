"""Hosts on one machine: a Linux bridge and one network namespace per "host", each
with a veth on the bridge, so that workers reach NATS and PostgreSQL over a network
(the bridge's address) as separate machines would (tests, `make cluster-demo`)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field

from usetl.errors import UsetlError


class NetnsError(UsetlError):
    """A namespace or link could not be made (needs root, or CAP_NET_ADMIN)."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass
class HostNetwork:
    """`count` namespaces on a bridge; the bridge is `gateway_ip`, host i is `ip(i)`."""

    count: int
    tag: str = field(default_factory=lambda: str(os.getpid() % 100000))
    namespaces: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bridge = f"usbr{self.tag}"
        # One /24 per process, so that two runs on one machine do not collide.
        self.prefix = f"10.213.{os.getpid() % 250}"
        self.gateway_ip = f"{self.prefix}.1"

    def ip(self, i: int) -> str:
        return f"{self.prefix}.{i + 2}"

    def start(self) -> HostNetwork:
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway_ip}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i in range(self.count):
                self._add_host(i)
        except BaseException:
            self.stop()
            raise
        return self

    def _add_host(self, i: int) -> None:
        ns, outside, inside = f"usetl-{self.tag}-{i}", f"uv{self.tag}h{i}", f"uv{self.tag}n{i}"
        _ip("netns", "add", ns)
        self.namespaces.append(ns)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", ns)
        _ip("link", "set", outside, "master", self.bridge, "up")
        _ip("-n", ns, "addr", "add", f"{self.ip(i)}/24", "dev", inside)
        _ip("-n", ns, "link", "set", inside, "up")
        _ip("-n", ns, "link", "set", "lo", "up")

    def stop(self) -> None:
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.namespaces.clear()
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    def __enter__(self) -> HostNetwork:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
