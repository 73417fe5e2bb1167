"""The API's hot path, served on the bare ASGI interface: a synchronous invocation.

`POST /v1/functions/{name}/invoke` is most of what a busy server answers, and the
framework's layers around a route (middleware, routing, dependency solving, the
response classes) cost more Python per request than the platform's own work on a
warm instance. So that one route is answered here, in front of the FastAPI app,
with the same behaviour: the bearer token's tenant (found on the event loop when
it was seen before), the event's size limit (declared, then counted as it
streams), `ServiceError`s as the API's JSON errors, anything else a 500. Every
other request goes on to the app. The invocation runs on the event loop where the
platform makes it a coroutine (Platform.invoke_coroutine: a warm instance's reply awaited,
a gateway's messages), otherwise on a worker thread (`Blocking`), as every blocking call
of the API does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from usetl.platform.service import Platform, ServiceError

log = logging.getLogger(__name__)
INVOKE_PATH = re.compile(r"/v1/functions/([^/]+)/invoke")
JSON_TYPE = (b"content-type", b"application/json")
ERROR_HEADERS = {401: [(b"www-authenticate", b"Bearer")], 405: [(b"allow", b"POST")]}


def error_document(code: str, message: str, cause: dict | None = None) -> dict:
    """The API's error body: {"error": {"code", "message", "cause"?}}."""
    error: dict = {"code": code, "message": message}
    if cause is not None:
        error["cause"] = cause
    return {"error": error}


async def event_body(declared: str | None, chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """A request's body (`declared`: its Content-Length), refused as soon as it passes the
    payload limit."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServiceError(413, "payload_too_large",
                           f"the event is {declared} bytes, over the limit of {limit}")
    parts = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise ServiceError(413, "payload_too_large", f"the event is over {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (None if there is none)."""
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


class Blocking:
    """Worker threads for the API's blocking calls (an invocation, a deploy): a plain
    executor, one hop from the event loop and back."""

    def __init__(self, threads: int):
        self.executor = ThreadPoolExecutor(threads, "usetl-api")

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


class InvokePath:
    """ASGI: answers `POST /v1/functions/{name}/invoke` itself, passes the rest to `app`."""

    def __init__(self, app: Any, platform: Platform, blocking: Blocking):
        self.app = app
        self.platform = platform
        self.blocking = blocking

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        match = INVOKE_PATH.fullmatch(scope["path"]) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        try:
            if scope["method"] != "POST":
                raise ServiceError(405, "method_not_allowed", "Method Not Allowed")
            status, document = 200, await self._invoke(match.group(1), scope, receive)
            headers = [JSON_TYPE]
        except ServiceError as e:
            status = e.status
            document = error_document(e.code, str(e),
                                      e.cause.as_dict() if e.cause is not None else None)
            headers = [JSON_TYPE, *ERROR_HEADERS.get(status, ())]
        except _Disconnected:
            return
        except Exception as e:
            log.error("POST %s failed", scope["path"], exc_info=e)
            status = 500
            document = error_document("internal",
                                      f"the server failed: {type(e).__name__}: {e}")
            headers = [JSON_TYPE]
        body = json.dumps(document).encode()
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _invoke(self, name: str, scope: dict, receive: Any) -> dict:
        """The invocation record (`name`: the path's segment, %-decoded by the server)."""
        headers = dict(scope["headers"])
        token = bearer_token(headers.get(b"authorization", b"").decode("latin-1") or None)
        platform = self.platform
        caller = platform.known_tenant(token) or await self.blocking.run(
            platform.authenticate, token)
        declared = headers.get(b"content-length", b"").decode("latin-1")
        body = await event_body(declared, _chunks(receive), platform.limits.max_payload_bytes)
        event = platform.parse_event(body)
        awaited = platform.invoke_coroutine(caller, name, event)
        record = None if awaited is None else await awaited
        return record or await self.blocking.run(platform.invoke, caller, name, event)


class _Disconnected(Exception):
    """The client went away before its request's body was in: nothing to answer."""


async def _chunks(receive: Any) -> AsyncIterator[bytes]:
    """The body's chunks as the server receives them."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return
