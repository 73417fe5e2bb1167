"""The per-function URL policy: which URLs the host may fetch on a guest's behalf.

The host fetches for the guest, so it must not become a confused deputy.
The rule, applied after DNS resolution (and, by the HTTP client, again on
every redirect hop; the connection then goes to the address that was
checked):

- A URL is allowed only if an allow prefix covers it: same scheme, same host
  (compared as written, lower-cased; IP literals in canonical form), same
  port (the scheme's default if none is given), and a path under the
  prefix's path. A prefix path ending in "/" covers everything below it; one
  that does not covers itself and everything below "path/" ("/data" covers
  "/data" and "/data/x", not "/database"). The query is not matched.
  Paths with "." or ".." segments (even percent-encoded) are refused, since a
  server might resolve them outside the prefix.
- Every address the host resolves must be a global unicast address, unless
  the covering prefix names it explicitly, or allow_private is set.
  Non-global means private, loopback, link-local, shared (100.64/10),
  unspecified, reserved, documentation or multicast (an IPv4-mapped IPv6
  address counts as its IPv4 address). A prefix names an address explicitly
  when its host is that IP literal ("http://127.0.0.1:8000/"), or when its
  host is "localhost" (or ends in ".localhost") and the address is loopback.
  Any other name resolving to a non-global address is denied, so a DNS
  record cannot point an allowed name at the host's own network.
- If a name resolves to several addresses, all must pass.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

import httpx

from usetl.abi import etl as wire

from .errors import EtlError

DEFAULT_PORTS = {"http": 80, "https": 443}
TCP = "tcp"  # an allow entry tcp://host:port grants raw TCP to host:port, and no URL
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Target:
    """A URL the policy allowed, with the addresses the connection may go to."""

    url: str  # as requested (fragment dropped)
    scheme: str
    host: str  # lower-case name, or canonical IP literal without brackets
    port: int
    target: str  # raw path and query, as sent in the request line
    addresses: tuple[str, ...]  # checked, in resolver order

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def url_for(self, address: str) -> str:
        """The same URL with `address` in place of the host: where to connect."""
        host = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{host}:{self.port}{self.target}"


@dataclass(frozen=True)
class _Url:
    scheme: str
    host: str
    port: int
    path: str  # raw (percent-encoded) path
    target: str  # raw path and query


@dataclass(frozen=True)
class _Prefix:
    text: str
    url: _Url

    def covers(self, u: _Url) -> bool:
        p = self.url
        if (p.scheme, p.host, p.port) != (u.scheme, u.host, u.port):
            return False
        if p.path in ("", "/") or p.path.endswith("/"):
            return u.path.startswith(p.path)
        return u.path == p.path or u.path.startswith(p.path + "/")

    @property
    def grants_sockets(self) -> bool:
        """Raw TCP needs an entry naming only scheme, host and port: a path grants none.

        A socket carries any request to its peer, so a prefix that allows only
        http://host/api/ must not open http://host/ to the guest's own sockets.
        """
        return self.url.scheme == TCP or self.url.path in ("", "/")

    def names(self, ip: IpAddress) -> bool:
        host = self.url.host
        literal = _ip_literal(host)
        if literal is not None:
            return literal == ip
        return ip.is_loopback and (host == "localhost" or host.endswith(".localhost"))


def _ip_literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _canonical_host(host: str) -> str:
    ip = _ip_literal(host)
    return str(ip) if ip is not None else host.lower()


def is_non_global(ip: IpAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _parse(url: str) -> _Url:
    try:
        u = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as e:
        raise EtlError(url, f"not a valid URL ({e})", wire.INVALID) from None
    scheme = u.scheme
    if scheme not in DEFAULT_PORTS:
        raise EtlError(url, f"scheme {scheme or '(none)'!r} is not http or https", wire.INVALID)
    if not u.host:
        raise EtlError(url, "the URL has no host", wire.INVALID)
    if u.userinfo:
        raise EtlError(url, "credentials in the URL are not accepted", wire.INVALID)
    raw = u.raw_path.decode("ascii")
    path = raw.split("?", 1)[0]
    segments = unquote(path).replace("\\", "/").split("/")
    if "." in segments or ".." in segments:
        raise EtlError(url, "the path has '.' or '..' segments", wire.INVALID)
    port = u.port if u.port is not None else DEFAULT_PORTS[scheme]
    return _Url(scheme, _canonical_host(u.host), port, path, raw or "/")


def _parse_tcp(entry: str) -> _Url:
    """tcp://host:port, nothing else: an entry for the guest's raw sockets only."""
    try:
        u = httpx.URL(entry.replace(f"{TCP}://", "http://", 1))
    except (httpx.InvalidURL, TypeError, ValueError) as e:
        raise EtlError(entry, f"not a valid tcp://host:port entry ({e})", wire.INVALID) from None
    if not u.host or u.port is None or u.userinfo or u.raw_path not in (b"", b"/") or u.query:
        raise EtlError(entry, "a tcp entry is tcp://host:port, with nothing else", wire.INVALID)
    return _Url(TCP, _canonical_host(u.host), u.port, "/", "/")


def resolve(host: str, port: int, url: str) -> list[IpAddress]:
    """The host's addresses, in resolver order (an IP literal resolves to itself)."""
    literal = _ip_literal(host)
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise EtlError(url, f"cannot resolve {host}: {e}", wire.DNS) from None
    seen: dict[IpAddress, None] = {}
    for family, *_, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            seen[ipaddress.ip_address(sockaddr[0].split("%", 1)[0])] = None
    if not seen:
        raise EtlError(url, f"{host} has no IPv4 or IPv6 address", wire.DNS)
    return list(seen)


class UrlPolicy:
    """An allow-list of URL prefixes plus the address rule above."""

    def __init__(self, allow: Sequence[str] = (), allow_private: bool = False):
        self.prefixes: list[_Prefix] = []
        for text in allow:
            u = _parse_tcp(text) if text.lower().startswith(f"{TCP}://") else _parse(text)
            if "?" in u.target:
                raise EtlError(text, "an allow prefix cannot have a query", wire.INVALID)
            self.prefixes.append(_Prefix(text, u))
        self.allow_private = allow_private

    def __repr__(self) -> str:
        allow = [p.text for p in self.prefixes]
        return f"UrlPolicy(allow={allow!r}, allow_private={self.allow_private})"

    def check_url(self, url: str) -> Target:
        """Parse, match against the prefixes, resolve, and check every address."""
        u = _parse(url)
        covering = [p for p in self.prefixes if p.covers(u)]
        if not covering:
            raise EtlError(url, "not covered by the allow-list", wire.DENIED)
        addresses = resolve(u.host, u.port, url)
        for ip in addresses:
            self._check_address(ip, covering, url, u.host)
        return Target(
            url=url.split("#", 1)[0],
            scheme=u.scheme,
            host=u.host,
            port=u.port,
            target=u.target,
            addresses=tuple(str(ip) for ip in addresses),
        )

    def check_socket(self, host: str, port: int) -> list[str]:
        """May a TCP connection go to host:port? Returns the addresses it may use.

        host:port is covered by a prefix whose port is `port` and whose host is
        `host`, or (when `host` is an IP address, as after the guest's own name
        lookup) whose host resolves to it. The address rule is the same as
        for URLs.
        """
        where = f"{host}:{port}"
        name = _canonical_host(host)
        literal = _ip_literal(name)
        same_port = [p for p in self.prefixes if p.url.port == port and p.grants_sockets]
        covering = [p for p in same_port if p.url.host == name]
        if literal is not None:
            for p in same_port:
                if p not in covering and _ip_literal(p.url.host) is None:
                    try:
                        if literal in resolve(p.url.host, port, p.text):
                            covering.append(p)
                    except EtlError:
                        continue
        if not covering:
            raise EtlError(where, "not covered by the allow-list", wire.DENIED)
        addresses = resolve(name, port, where)
        for ip in addresses:
            self._check_address(ip, covering, where, name)
        return [str(ip) for ip in addresses]

    def allowed_hosts(self) -> dict[str, list[str]]:
        """Each allowed host name (not IP literal) and its addresses that pass the rule.

        What a hosts file for the guest lists; names that do not resolve, or
        resolve to a denied address, are left out (a lookup then fails in the guest).
        """
        hosts: dict[str, list[str]] = {}
        for p in (p for p in self.prefixes if p.grants_sockets):
            host = p.url.host
            if _ip_literal(host) is not None or host in hosts:
                continue
            covering = [q for q in self.prefixes if q.url.host == host]
            try:
                addresses = resolve(host, p.url.port, p.text)
                for ip in addresses:
                    self._check_address(ip, covering, p.text, host)
            except EtlError:
                continue
            hosts[host] = [str(ip) for ip in addresses]
        return hosts

    def _check_address(self, ip: IpAddress, covering: list[_Prefix], url: str, host: str) -> None:
        if self.allow_private or not is_non_global(ip):
            return
        if any(p.names(ip) for p in covering):
            return
        what = "" if str(ip) == host else f"{host} resolves to "
        raise EtlError(
            url,
            f"{what}{ip}, a non-global (private, loopback, link-local or reserved) address "
            "the allow-list does not name",
            wire.DENIED,
        )
