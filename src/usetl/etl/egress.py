"""Egress: how a monitor's ETL requests and guest sockets reach the network.

Two ways, one interface (get, post, connect):

- LocalEgress carries requests out in this process (an unjailed monitor: a USF run
  in-process, the process backend, the egress broker itself);
- BrokerEgress forwards each one over a Unix socket to the egress broker (broker.py),
  the per-host process outside the jail that owns the instance's URL policy. Bodies
  travel as memory files passed with SCM_RIGHTS (a Span names the bytes), so the broker
  writes a download straight into the instance's region and reads an upload from it; a
  connected socket comes back the same way, so the data path adds no hop.

A process has one broker connection at most (install(), in a jailed clone); without
one, current() gives the LocalEgress of the policy.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from usetl.abi import etl as wire

from . import http
from .accounting import IoAccount
from .errors import EtlError
from .http import HttpClient, Transfer
from .policy import UrlPolicy

MAX_MESSAGE = 1 << 20  # a request or reply (headers and all): far more than one needs
GONE = "the egress broker went away"


@dataclass
class Span:
    """len(view) bytes of memory file fd from offset, and those bytes as mapped here."""

    fd: int
    offset: int
    view: memoryview

    def describe(self) -> dict:
        return {"offset": self.offset, "size": len(self.view)}


# Where a body goes: a Span, or a function that chooses one once the response's length is
# known (None: it has none), given a function that ends the transfer (http.Destination).
# The broker is told where before it sends the request, so it gets the choice for no length.
Destination = Span | Callable[[int | None, Callable[[], None]], Span]


def _views(dest: Destination) -> http.Destination:
    if isinstance(dest, Span):
        return dest.view
    return lambda length, stop: dest(length, stop).view


def _span(dest: Destination) -> Span:
    return dest if isinstance(dest, Span) else dest(None, lambda: None)


@dataclass(frozen=True)
class EgressPolicy:
    """What the broker needs to carry out an instance's requests: its URL policy's parts."""

    allow: tuple[str, ...]
    allow_private: bool
    timeout: float

    def as_dict(self) -> dict:
        return {"allow": list(self.allow), "allow_private": self.allow_private,
                "timeout": self.timeout}

    @classmethod
    def from_dict(cls, d: dict) -> EgressPolicy:
        return cls(tuple(d["allow"]), bool(d["allow_private"]), float(d["timeout"]))


class ConnectFailed(Exception):
    """A connect the policy allowed that did not succeed; errno says why."""

    def __init__(self, err: int):
        super().__init__(err)
        self.errno = err


def _wait_time(timeout: float | None, deadline: float | None) -> float | None:
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    if timeout is None:
        return left
    return timeout if left is None else min(timeout, left)


def connect_checked(policy: UrlPolicy, family: int, address: tuple, timeout: float | None,
                    deadline: float | None) -> socket.socket:
    """Check `address` against the policy and connect to it, waiting at most `timeout` s
    and until `deadline` (time.monotonic()) for the handshake. Only a connected socket
    leaves here: one whose connect failed could be connected again elsewhere, unchecked."""
    where = f"{address[0]}:{address[1]}"
    try:
        ip = ipaddress.ip_address(address[0])
    except (ValueError, TypeError):
        raise EtlError(where, "not an IP address", wire.INVALID) from None
    # The policy judges an IPv4-mapped IPv6 address as its IPv4 address.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    policy.check_socket(str(ip), address[1])
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        err = sock.connect_ex(address)
        if err == errno.EINPROGRESS:
            wait = _wait_time(timeout, deadline)
            ready = select.select([], [sock], [], wait)[1]
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if ready else \
                errno.ETIMEDOUT
    except (OSError, TypeError, OverflowError) as e:  # a malformed address
        sock.close()
        raise EtlError(where, f"cannot connect: {e}", wire.INVALID) from None
    if err:
        sock.close()
        raise ConnectFailed(err)
    return sock


class LocalEgress:
    """Requests carried out in this process, under `policy`."""

    def __init__(self, policy: UrlPolicy, timeout: float):
        self.policy = policy
        self.timeout = timeout
        self._client: HttpClient | None = None

    @property
    def client(self) -> HttpClient:
        if self._client is None:  # made on first use: a connection pool, SSL contexts
            self._client = HttpClient(self.policy, timeout=self.timeout)
        return self._client

    def get(self, url: str, dest: Destination, deadline: float | None) -> Transfer:
        return self.client.get(url, _views(dest), deadline=deadline)

    def post(self, url: str, body: Span, dest: Destination, content_type: str,
             deadline: float | None) -> Transfer:
        return self.client.post(url, body.view, _views(dest), content_type, deadline=deadline)

    def connect(self, family: int, address: tuple, timeout: float | None,
                deadline: float | None) -> socket.socket:
        return connect_checked(self.policy, family, address, timeout, deadline)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def send_message(sock: socket.socket, message: dict, fds: tuple[int, ...] = ()) -> None:
    socket.send_fds(sock, [json.dumps(message).encode()], list(fds))


def recv_message(sock: socket.socket) -> tuple[dict, list[int]]:
    """One message and the fds that came with it; EOFError once the peer closed."""
    data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 4)
    if not data:
        for fd in fds:
            os.close(fd)
        raise EOFError("the peer closed the connection")
    try:
        message = json.loads(data)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        for fd in fds:
            os.close(fd)
        raise EOFError("a message that is not a JSON object")
    return message, fds


def transfer_to_dict(t: Transfer) -> dict:
    return {"url": t.url, "status": t.status, "headers": t.headers, "size": t.size,
            "account": t.account.as_dict()}


def error_to_dict(e: EtlError) -> dict:
    account = e.account.as_dict() if e.account is not None else None
    return {"url": e.url, "reason": e.reason, "kind": e.kind, "status": e.status,
            "account": account}


def _account(d: dict | None) -> IoAccount | None:
    return IoAccount(**d) if isinstance(d, dict) else None


class BrokerEgress:
    """This process's connections to the egress broker: the one it was attached with, over
    which it asks for more, and those channels, one request at a time on each, so that
    requests from several guest threads are carried out side by side (a slow service's
    waits overlap)."""

    MAX_CHANNELS = 15  # the broker's MAX_CHANNELS, less the first connection

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.lock = threading.Lock()  # the first connection: one channel request at a time
        self.changed = threading.Condition()
        self.idle: list[socket.socket] = []
        self.channels = 0  # open now, idle or carrying a request
        self.opened: set[socket.socket] = set()  # every channel still open, for forget()

    def _request(self, message: dict, fds: tuple[int, ...], what: str) -> tuple[dict, list[int]]:
        channel = self._take_channel(what)
        try:
            send_message(channel, message, fds)
            reply = recv_message(channel)
        except (OSError, EOFError):
            channel.close()
            with self.changed:
                self.opened.discard(channel)
                self.channels -= 1
                self.changed.notify()
            raise EtlError(what, GONE, wire.CONNECTION) from None
        with self.changed:
            self.idle.append(channel)
            self.changed.notify()
        return reply

    def _take_channel(self, what: str) -> socket.socket:
        """An idle channel, a new one, or (all in use) the next to come back."""
        with self.changed:
            while not self.idle and self.channels >= self.MAX_CHANNELS:
                self.changed.wait()
            if self.idle:
                return self.idle.pop()
            self.channels += 1
        try:
            with self.lock:
                send_message(self.sock, {"op": "channel"})
                reply, fds = recv_message(self.sock)
        except (OSError, EOFError):
            fds, reply = [], {}
        if len(fds) == 1 and "error" not in reply:
            channel = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=fds[0])
            with self.changed:
                self.opened.add(channel)
            return channel
        for fd in fds:
            os.close(fd)
        with self.changed:
            self.channels -= 1
            self.changed.notify()
        raise EtlError(what, reply.get("error", {}).get("reason", GONE), wire.CONNECTION)

    def _transfer(self, message: dict, fds: tuple[int, ...], url: str) -> Transfer:
        reply, extra = self._request(message, fds, url)
        for fd in extra:
            os.close(fd)
        if "error" in reply:
            e = reply["error"]
            error = EtlError(e["url"], e["reason"], e["kind"], e["status"])
            error.account = _account(e["account"])
            raise error
        t = reply["transfer"]
        return Transfer(t["url"], t["status"], t["headers"], t["size"], IoAccount(**t["account"]))

    def get(self, url: str, dest: Destination, deadline: float | None) -> Transfer:
        dest = _span(dest)
        return self._transfer({"op": wire.GET, "url": url, "dest": dest.describe(),
                               "deadline": deadline}, (dest.fd,), url)

    def post(self, url: str, body: Span, dest: Destination, content_type: str,
             deadline: float | None) -> Transfer:
        dest = _span(dest)
        message = {"op": wire.POST, "url": url, "source": body.describe(),
                   "dest": dest.describe(), "content_type": content_type, "deadline": deadline}
        return self._transfer(message, (body.fd, dest.fd), url)

    def connect(self, family: int, address: tuple, timeout: float | None,
                deadline: float | None) -> socket.socket:
        where = f"{address[0]}:{address[1]}"
        reply, fds = self._request({"op": "connect", "family": family, "address": list(address),
                                    "timeout": timeout, "deadline": deadline}, (), where)
        if len(fds) != 1 or "error" in reply or "errno" in reply:
            for fd in fds:
                os.close(fd)
            if "errno" in reply:
                raise ConnectFailed(int(reply["errno"]))
            e = reply.get("error") or {}
            raise EtlError(e.get("url", where), e.get("reason", "the broker sent no socket"),
                           e.get("kind", wire.CONNECTION), e.get("status"))
        sock = socket.socket(fileno=fds[0])
        sock.setblocking(False)
        return sock

    def close(self) -> None:
        """Close every connection. Takes no lock: a forked child calls it, where the thread
        that held one is gone."""
        for channel in list(self.opened):
            channel.close()
        self.sock.close()


_broker: BrokerEgress | None = None
_local: dict[tuple[str, float], LocalEgress] = {}
# A forked child of a process that had a broker connection (the monitor of a guest's child
# program) and has none of its own: it has no network either, so its requests fail.
_orphaned = False
ORPHANED = "a child process of a jailed instance has no connection to the egress broker"


def _forget_after_fork() -> None:
    """A forked child gets its own connection and clients, never its parent's."""
    global _broker, _orphaned
    if _broker is not None:
        _broker.close()
        _broker = None
        _orphaned = True
    _local.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def install(sock: socket.socket) -> None:
    """From now on this process's requests go to the broker on `sock` (a jailed clone)."""
    global _broker, _orphaned
    _broker, _orphaned = BrokerEgress(sock), False


def connect(policy: UrlPolicy, family: int, address: tuple, timeout: float | None,
            deadline: float | None) -> socket.socket:
    """A guest socket's connect: by the broker if this process has one, else here."""
    return current(policy, 0.0).connect(family, address, timeout, deadline)


def current(policy: UrlPolicy, timeout: float) -> LocalEgress | BrokerEgress:
    """The broker connection if this process has one, else the policy's LocalEgress."""
    if _broker is not None:
        return _broker
    if _orphaned:
        raise EtlError(None, ORPHANED, wire.CONNECTION)
    key = (repr(policy), timeout)
    local = _local.get(key)
    if local is None:
        local = _local[key] = LocalEgress(policy, timeout)
    return local
