"""GET and POST for the guest, under the URL policy, straight into and out of guest memory.

Redirects are followed here, not by httpx, so the policy sees every hop.
Each hop connects to an address the policy checked (the URL is rewritten
to the IP; the Host header and the TLS SNI and certificate check keep the
host name), so a second DNS answer cannot send the connection elsewhere.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from usetl.abi import etl as wire

from .accounting import IoAccount
from .errors import EtlError
from .policy import Target, UrlPolicy

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
SEND_CHUNK = 1 << 20  # request bodies go out in slices of guest memory this large


@dataclass
class Transfer:
    """What a GET or POST did: the final URL (after redirects) and the response."""

    url: str
    status: int
    headers: dict[str, str]
    size: int  # response body bytes written into dest[0:size]
    account: IoAccount


def _memory_chunks(body: memoryview) -> Iterator[memoryview]:
    for start in range(0, len(body), SEND_CHUNK):
        yield body[start : start + SEND_CHUNK]


def _caused_by(e: BaseException, cls: type[BaseException]) -> bool:
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, cls):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class HttpClient:
    """An HTTP/1.1 client (httpx) that only goes where its UrlPolicy allows.

    timeout bounds each network wait (connect, each read and write); the
    optional deadline of get() and post() (a time.monotonic() value) bounds
    the whole request, redirects included. verify is httpx's: True (the
    system's CA store), or an ssl.SSLContext trusting other roots.
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
        # trust_env=False: a proxy from the environment would defeat the address check.
        self._client = httpx.Client(
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            verify=verify,
            headers={"Accept-Encoding": "identity", "User-Agent": "usetl-etl"},
        )

    def get(self, url: str, dest: memoryview, *, deadline: float | None = None) -> Transfer:
        """Download url into dest[0:size]; a body larger than dest is EtlError("too_large")."""
        return self._request("GET", url, None, "", dest, deadline)

    def post(
        self,
        url: str,
        body: bytes | memoryview,
        dest: memoryview,
        content_type: str = "application/octet-stream",
        *,
        deadline: float | None = None,
    ) -> Transfer:
        """Send body (read in place, not copied whole) and write the response body into dest."""
        return self._request("POST", url, memoryview(body).cast("B"), content_type, dest, deadline)

    def close(self) -> None:
        self._client.close()

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
        dest: memoryview,
        deadline: float | None,
    ) -> Transfer:
        dest = memoryview(dest).cast("B")
        if dest.readonly:
            raise ValueError("the destination of a download must be writable memory")
        account = IoAccount(requests=1)
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        try:
            for _ in range(self.max_redirects + 1):
                target = self.policy.check_url(url)
                response = self._send(target, method, body, content_type, account, deadline)
                try:
                    status = response.status_code
                    location = response.headers.get("location")
                    if status in REDIRECT_STATUSES and location:
                        url = str(httpx.URL(target.url).join(location).copy_with(fragment=None))
                        if status == 303 or (status in (301, 302) and method == "POST"):
                            method, body = "GET", None
                        continue
                    if status >= 400:
                        reason = response.reason_phrase or "error"
                        raise EtlError(url, f"HTTP {status} {reason}", wire.HTTP_STATUS, status)
                    size = self._receive(response, dest, url, account, deadline)
                    return Transfer(url, status, dict(response.headers), size, account)
                finally:
                    response.close()
            raise EtlError(url, f"more than {self.max_redirects} redirects", wire.CONNECTION)
        except (httpx.HTTPError, EtlError) as e:
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
    ) -> httpx.Response:
        headers = {"Host": target.host_header}
        if body is not None:
            headers["Content-Type"] = content_type
            headers["Content-Length"] = str(len(body))
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        last = len(target.addresses) - 1
        for i, address in enumerate(target.addresses):
            request = self._client.build_request(
                method,
                target.url_for(address),
                headers=headers,
                content=_memory_chunks(body) if body is not None else None,
                extensions=extensions,
                timeout=self._timeout(target.url, deadline),
            )
            try:
                response = self._client.send(request, stream=True)
            except httpx.ConnectError:
                if i == last:
                    raise
                continue  # the next checked address
            account.bytes_out += len(body) if body is not None else 0
            return response
        raise AssertionError("a Target always has an address")

    def _receive(
        self,
        response: httpx.Response,
        dest: memoryview,
        url: str,
        account: IoAccount,
        deadline: float | None,
    ) -> int:
        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > len(dest):
            raise EtlError(url, f"the body ({length} B) is larger than {len(dest)} B",
                           wire.TOO_LARGE)
        offset = 0
        try:
            for chunk in response.iter_bytes():
                end = offset + len(chunk)
                if end > len(dest):
                    raise EtlError(url, f"the body is larger than {len(dest)} B", wire.TOO_LARGE)
                dest[offset:end] = chunk
                offset = end
                if deadline is not None and time.monotonic() > deadline:
                    raise EtlError(url, "the deadline passed during the transfer", wire.TIMEOUT)
        finally:
            account.bytes_in += response.num_bytes_downloaded
        return offset

    def _timeout(self, url: str, deadline: float | None) -> float:
        if deadline is None:
            return self.timeout
        left = deadline - time.monotonic()
        if left <= 0:
            raise EtlError(url, "the deadline passed before the request", wire.TIMEOUT)
        return min(self.timeout, left)

    def _transport_error(self, url: str, e: httpx.HTTPError) -> EtlError:
        if isinstance(e, httpx.TimeoutException):
            reason = f"timed out ({type(e).__name__}, limit {self.timeout:g} s)"
            return EtlError(url, reason, wire.TIMEOUT)
        if _caused_by(e, ConnectionRefusedError):
            return EtlError(url, "connection refused", wire.REFUSED)
        return EtlError(url, f"{type(e).__name__}: {e}", wire.CONNECTION)
