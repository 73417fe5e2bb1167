"""The ceiling of the HTTP path: a bare ASGI endpoint on the API's own server stack.

It answers every request with the same small JSON, at once: what the load
client gets from uvicorn as the API runs it (api/server.py's server_config)
with nothing of the platform behind it, so the API's rate is measured
against what the stack itself allows on the same machine in the same run.

    python -m usetl.bench.asgi_ceiling PORT
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn

from usetl.api.server import server_config

ANSWER = b'{"status": "succeeded", "result": 1}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def constant(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


if __name__ == "__main__":
    uvicorn.Server(server_config(constant, "127.0.0.1", int(sys.argv[1]))).run()
