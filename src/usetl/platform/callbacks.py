"""Callbacks: an async invocation's record POSTed, as JSON, to the URL its caller gave
(OpenFaaS's X-Callback-Url), once it is done: succeeded, or failed for good.

The server sends it, so it must not become a confused deputy: a callback URL must be
covered by the server's outbound allow-list (`usetl serve --callback-allow PREFIX`, empty by
default: no callbacks until the operator names where they may go), under the rules of the
ETL API's URL policy (usetl/etl/policy.py: private and loopback addresses only where a
prefix names them, checked after DNS resolution and on every redirect). A URL outside it is
refused when the invocation is submitted; the check is made again at each attempt.

Delivery: a 2xx answer delivers it; another answer, or no answer, is tried again after
`backoff_s`, doubling each time, up to `attempts` attempts in all. Each attempt (its time,
and the status or the error) is kept in the record's `callback.attempts`, with the state:
pending, delivered or failed, and the next attempt's due time (`callback.retry_at`). The
record alone says where delivery stands, so whoever makes an attempt (`attempt`: this
server's timers here, any gateway of a cluster in usetl/cluster/callbacks.py) makes it only
when it is pending and due: deliveries still pending when the server stops are resumed when
it starts again at that due time, neither early nor forgotten.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from usetl.errors import UsetlError
from usetl.etl.errors import EtlError
from usetl.etl.http import HttpClient
from usetl.etl.policy import UrlPolicy

from .metrics import Counter
from .registry import Registry
from .timers import Timers

log = logging.getLogger(__name__)
ANSWER_BYTES = 64 << 10  # of the receiver's answer body, read and dropped
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


class CallbackRefused(UsetlError):
    """A callback URL the server's outbound policy does not allow (the message says why)."""


@dataclass
class CallbackConfig:
    allow: list[str] = field(default_factory=list)  # URL prefixes callbacks may go to
    attempts: int = 6
    backoff_s: float = 0.5  # before the second attempt; doubled before each next one
    timeout_s: float = 10.0  # each attempt's network waits
    senders: int = 4  # attempts in flight at once

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff_s < 0 or self.timeout_s <= 0:
            raise UsetlError("callbacks need attempts >= 1, a back-off >= 0 and a timeout > 0")


class Callbacks:
    def __init__(self, registry: Registry, config: CallbackConfig, timers: Timers,
                 attempts: Counter):
        self.registry = registry
        self.attempts = attempts
        self.config = config
        self.timers = timers
        try:
            self.policy = UrlPolicy(config.allow)
        except EtlError as e:
            raise CallbackRefused(f"callback allow-list entry {e}") from e
        self.http = HttpClient(self.policy, timeout=config.timeout_s, max_redirects=3)
        self.senders = ThreadPoolExecutor(config.senders, thread_name_prefix="usetl-callback")

    def check(self, url: str) -> None:
        """Refuse a URL the outbound policy does not allow (CallbackRefused)."""
        if not isinstance(url, str) or not url:
            raise CallbackRefused("the callback URL is empty")
        try:
            self.policy.check_url(url)
        except EtlError as e:
            allowed = ", ".join(p.text for p in self.policy.prefixes) or "none"
            raise CallbackRefused(f"callback URL refused: {e} (this server allows callbacks "
                                  f"to: {allowed}; `usetl serve --callback-allow`)") from e

    def deliver(self, invocation_id: str, tenant_id: int) -> None:
        """Make the next attempt to send the invocation's record when it is due (on a sender
        thread), and each one after it."""
        try:
            self.senders.submit(self._send, invocation_id, tenant_id)
        except RuntimeError:
            pass  # shutting down: the delivery is still pending, resumed at the next start

    def _send(self, invocation_id: str, tenant_id: int) -> None:
        delay = self.attempt(invocation_id, tenant_id)
        if delay is not None:
            self.timers.call_in(delay, self.deliver, invocation_id, tenant_id)

    def attempt(self, invocation_id: str, tenant_id: int) -> float | None:
        """One attempt to send the invocation's record if its delivery is pending and due;
        the seconds until the next attempt is due, or None: delivered, given up, or no
        callback to send."""
        record = self.registry.invocation(tenant_id, invocation_id)
        if record is None or record["callback"] is None or record["callback"]["state"] != PENDING:
            return None
        due = record["callback"]["retry_at"]
        if due is not None and due > time.time():
            return due - time.time()  # an earlier attempt's back-off is not over
        number = len(record["callback"]["attempts"]) + 1
        at = time.time()
        try:
            transfer = self.http.post(record["callback"]["url"], json.dumps(record).encode(),
                                      memoryview(bytearray(ANSWER_BYTES)), "application/json")
            attempt = {"at": at, "status": transfer.status}
        except EtlError as e:
            attempt = {"at": at, "status": e.status, "error": str(e)}
        except Exception as e:  # noqa: BLE001 - any other failure is a failed attempt too
            log.exception("callback of invocation %s", invocation_id)
            attempt = {"at": at, "status": None, "error": f"{type(e).__name__}: {e}"}
        delivered = attempt["status"] is not None and 200 <= attempt["status"] < 300
        last = number >= self.config.attempts
        state = DELIVERED if delivered else FAILED if last else PENDING
        delay = self.config.backoff_s * 2 ** (number - 1)
        self.registry.record_callback(invocation_id, attempt, state,
                                      time.time() + delay if state == PENDING else None)
        self.attempts.inc(state=state)
        if state == FAILED:
            log.warning("callback of invocation %s failed %d times; given up", invocation_id,
                        number)
        return delay if state == PENDING else None

    def close(self) -> None:
        self.senders.shutdown(wait=True, cancel_futures=True)
        self.http.close()
