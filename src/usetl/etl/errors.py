"""The one error the host side of the ETL API raises: a request that failed, and why."""

from __future__ import annotations

from usetl.abi.etl import ERROR_KINDS
from usetl.errors import UsetlError

from .accounting import IoAccount


class EtlError(UsetlError):
    """A GET or POST the host could not (or would not) carry out.

    kind says which: "denied" (the URL policy), "dns", "refused", "timeout",
    "http_status" (the server answered >= 400; status holds it), "too_large"
    (the body does not fit its destination), "invalid" (a malformed URL or a
    scheme other than http/https), "connection" (any other transport failure).
    account is what the failed request cost (set by HttpClient), to bill it too.
    """

    def __init__(self, url: str, reason: str, kind: str, status: int | None = None):
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown EtlError kind {kind!r}")
        super().__init__(url, reason, kind, status)
        self.url = url
        self.reason = reason
        self.kind = kind
        self.status = status
        self.account: IoAccount | None = None

    def __str__(self) -> str:
        return f"{self.url}: {self.reason}"
