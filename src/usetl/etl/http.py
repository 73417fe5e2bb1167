"""GET and POST for the guest, under the URL policy, straight into and out of guest memory.

The body of a response is received into its destination in place: the
socket's recv_into (SSLSocket's for HTTPS) writes into a memoryview of the
destination, so a download into a region's memory file is one copy, the
kernel's. Only the headers go through a buffer (http.client parses them;
the few body bytes read with them are copied once). Request bodies are sent
from slices of their memory, never copied whole.

Redirects are followed here, so the policy sees every hop. Each hop connects
to an address the policy checked (the Host header and the TLS SNI and
certificate check keep the host name), so a second DNS answer cannot send
the connection elsewhere. Connections are kept alive between requests, one
idle connection per (scheme, address, port, name), MAX_IDLE in all.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from urllib.parse import urldefrag, urljoin

from usetl.abi import etl as wire

from .accounting import IoAccount
from .errors import EtlError
from .policy import Target, UrlPolicy

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
SEND_CHUNK = 1 << 20  # request bodies go out in slices of their memory this large
# A body is received in slices this large, the deadline checked between them.
RECEIVE_SLICE = 16 << 20
HEADERS = {"Accept-Encoding": "identity", "User-Agent": "usetl-etl"}
MAX_IDLE = 8  # kept-alive connections at most; the least recently used goes first

ConnectionKey = tuple[str, str, int, str]  # scheme, address, port, name (for TLS)
# Where a body goes: memory, or a function that chooses it once the final response's
# Content-Length is known (None: the response has none), given a function that ends the
# transfer from another thread (the next read finds the connection shut down).
Destination = memoryview | Callable[[int | None, Callable[[], None]], memoryview]


@dataclass
class Transfer:
    """What a GET or POST did: the final URL (after redirects) and the response."""

    url: str
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    size: int  # response body bytes written into dest[0:size]
    account: IoAccount


class HttpClient:
    """An HTTP/1.1 client (http.client over sockets of its own) that only goes where its
    UrlPolicy allows.

    timeout bounds each network wait (connect, each read and write); the
    optional deadline of get() and post() (a time.monotonic() value) bounds
    the whole request, redirects included. verify: True (the system's CA
    store), False (no certificate check), or an ssl.SSLContext trusting
    other roots.
    """

    def __init__(
        self,
        policy: UrlPolicy,
        timeout: float = 30.0,
        max_redirects: int = 5,
        verify: ssl.SSLContext | bool = True,
    ):
        self.policy = policy
        self.timeout = timeout
        self.max_redirects = max_redirects
        self._verify = verify
        self._tls_context: ssl.SSLContext | None = None
        self._idle: dict[ConnectionKey, http.client.HTTPConnection] = {}

    def get(self, url: str, dest: Destination, *, deadline: float | None = None) -> Transfer:
        """Download url into dest[0:size]; a body larger than dest is EtlError("too_large")."""
        return self._request("GET", url, None, "", dest, deadline)

    def post(
        self,
        url: str,
        body: bytes | memoryview,
        dest: Destination,
        content_type: str = "application/octet-stream",
        *,
        deadline: float | None = None,
    ) -> Transfer:
        """Send body (read in place, not copied whole) and write the response body into dest."""
        return self._request("POST", url, memoryview(body).cast("B"), content_type, dest, deadline)

    def close(self) -> None:
        for conn in self._idle.values():
            conn.close()
        self._idle.clear()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- one request, hop by hop ----------------------------------------------

    def _request(
        self,
        method: str,
        url: str,
        body: memoryview | None,
        content_type: str,
        dest: Destination,
        deadline: float | None,
    ) -> Transfer:
        if not callable(dest):
            dest = _writable(dest)
        account = IoAccount(requests=1)
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        try:
            for _ in range(self.max_redirects + 1):
                target = self.policy.check_url(url)
                exchange = self._send(target, method, body, content_type, account, deadline)
                try:
                    status = exchange.response.status
                    location = exchange.response.getheader("location")
                    if status in REDIRECT_STATUSES and location:
                        url = urldefrag(urljoin(target.url, location)).url
                        if status == 303 or (status in (301, 302) and method == "POST"):
                            method, body = "GET", None
                        continue
                    if status >= 400:
                        reason = exchange.response.reason or "error"
                        raise EtlError(url, f"HTTP {status} {reason}", wire.HTTP_STATUS, status)
                    into = dest if not callable(dest) else _writable(
                        dest(exchange.response.length, partial(_shut_down, exchange.conn)))
                    size = _receive(exchange.response, into, url, account, deadline)
                    exchange.done = True
                    return Transfer(url, status, _headers(exchange.response), size, account)
                finally:
                    self._finish(exchange)
            raise EtlError(url, f"more than {self.max_redirects} redirects", wire.CONNECTION)
        except (OSError, http.client.HTTPException, EtlError) as e:
            error = e if isinstance(e, EtlError) else self._transport_error(url, e)
            error.account = account  # a failed request is billed too
            if error is e:
                raise
            raise error from e
        finally:
            account.host_cpu_s = time.thread_time() - cpu0
            account.wall_s = time.perf_counter() - wall0

    def _send(
        self,
        target: Target,
        method: str,
        body: memoryview | None,
        content_type: str,
        account: IoAccount,
        deadline: float | None,
    ) -> _Exchange:
        timeout = self._timeout(target.url, deadline)
        last = len(target.addresses) - 1
        for i, address in enumerate(target.addresses):
            key = (target.scheme, address, target.port, target.host)
            try:
                conn = self._connection(key, timeout)
            except OSError:
                if i == last:
                    raise
                continue  # the next checked address
            exchange = _Exchange(key, conn)
            try:
                conn.sock.settimeout(timeout)
                _write_request(conn, target, method, body, content_type)
                account.bytes_out += len(body) if body is not None else 0
                exchange.response = conn.getresponse()
            except BaseException:
                conn.close()
                raise
            return exchange
        raise AssertionError("a Target always has an address")

    def _connection(self, key: ConnectionKey, timeout: float) -> http.client.HTTPConnection:
        """An idle kept-alive connection the server has not closed, or a new one."""
        conn = self._idle.pop(key, None)
        if conn is not None and not _readable(conn.sock):
            return conn
        if conn is not None:
            conn.close()  # closed by the server, or it sent something unasked
        scheme, address, port, name = key
        sock = socket.create_connection((address, port), timeout)
        try:
            if scheme == "https":
                sock = self._tls().wrap_socket(sock, server_hostname=name)
        except BaseException:
            sock.close()
            raise
        conn = http.client.HTTPConnection(address, port, timeout=timeout)
        conn.sock = sock
        conn.auto_open = 0  # never reconnect by itself: it would skip the policy and TLS
        return conn

    def _finish(self, exchange: _Exchange) -> None:
        """Keep a connection whose response was read to its end; close any other."""
        conn, response = exchange.conn, exchange.response
        reusable = (exchange.done and conn.sock is not None and response is not None
                    and response.isclosed() and not response.will_close)
        if reusable:
            old = self._idle.pop(exchange.key, None)
            if old is not None:
                old.close()
            self._idle[exchange.key] = conn
            while len(self._idle) > MAX_IDLE:
                self._idle.pop(next(iter(self._idle))).close()
        else:
            conn.close()

    def _tls(self) -> ssl.SSLContext:
        if self._tls_context is None:
            if isinstance(self._verify, ssl.SSLContext):
                self._tls_context = self._verify
            elif self._verify:
                self._tls_context = ssl.create_default_context()
            else:
                self._tls_context = ssl._create_unverified_context()
        return self._tls_context

    def _timeout(self, url: str, deadline: float | None) -> float:
        if deadline is None:
            return self.timeout
        left = deadline - time.monotonic()
        if left <= 0:
            raise EtlError(url, "the deadline passed before the request", wire.TIMEOUT)
        return min(self.timeout, left)

    def _transport_error(self, url: str, e: OSError | http.client.HTTPException) -> EtlError:
        if isinstance(e, TimeoutError):
            reason = f"timed out ({type(e).__name__}, limit {self.timeout:g} s)"
            return EtlError(url, reason, wire.TIMEOUT)
        if isinstance(e, ConnectionRefusedError):
            return EtlError(url, "connection refused", wire.REFUSED)
        return EtlError(url, f"{type(e).__name__}: {e}", wire.CONNECTION)


@dataclass
class _Exchange:
    """One request on one connection, and its response once it began."""

    key: ConnectionKey
    conn: http.client.HTTPConnection
    response: http.client.HTTPResponse | None = None
    done: bool = False  # the response's body was read to its end


def _write_request(conn: http.client.HTTPConnection, target: Target, method: str,
                   body: memoryview | None, content_type: str) -> None:
    conn.putrequest(method, target.target, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", target.host_header)
    for name, value in HEADERS.items():
        conn.putheader(name, value)
    if body is not None:
        conn.putheader("Content-Type", content_type)
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders()
    for start in range(0, len(body) if body is not None else 0, SEND_CHUNK):
        conn.sock.sendall(body[start : start + SEND_CHUNK])


def _shut_down(conn: http.client.HTTPConnection) -> None:
    """End the connection's transfer from another thread: its reads return at once."""
    sock = conn.sock
    if sock is not None:
        try:  # the plain socket's shutdown, even under TLS: the reader owns the TLS state
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass  # closed already


def _writable(dest: memoryview) -> memoryview:
    dest = memoryview(dest).cast("B")
    if dest.readonly:
        raise ValueError("the destination of a download must be writable memory")
    return dest


def _receive(response: http.client.HTTPResponse, dest: memoryview, url: str,
             account: IoAccount, deadline: float | None) -> int:
    """Read the body into dest in place; its size. Too large, cut short, or past the deadline:
    EtlError."""
    if response.length is not None and response.length > len(dest):
        raise EtlError(url, f"the body ({response.length} B) is larger than {len(dest)} B",
                       wire.TOO_LARGE)
    offset = 0
    while offset < len(dest):
        n = response.readinto(dest[offset : offset + RECEIVE_SLICE])
        account.bytes_in += n
        if not n:
            break
        offset += n
        if deadline is not None and time.monotonic() > deadline:
            raise EtlError(url, "the deadline passed during the transfer", wire.TIMEOUT)
    if offset == len(dest) and response.read(1):  # only a body without a length gets here
        account.bytes_in += 1
        raise EtlError(url, f"the body is larger than {len(dest)} B", wire.TOO_LARGE)
    if response.length:  # what its Content-Length still promised when the connection ended
        raise EtlError(url, f"the connection closed after {offset} B of the body, "
                       f"{response.length} B short", wire.CONNECTION)
    return offset


def _headers(response: http.client.HTTPResponse) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in response.getheaders():
        name = name.lower()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _readable(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read: the server closed it (or broke the
    protocol), so it must not carry another request."""
    return bool(select.select([sock], [], [], 0)[0])
