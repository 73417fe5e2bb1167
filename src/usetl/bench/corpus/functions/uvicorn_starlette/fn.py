"""A Starlette app served by uvicorn inside the handler on a real socket (a sidecar or
local mock, as handlers and their tests run one), called over HTTP by httpx: JSON routes,
a path parameter, a streaming response, a middleware header, and a graceful shutdown."""

import asyncio
import socket

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route


class Tagged(BaseHTTPMiddleware):
    async def dispatch(self, request, call_next):
        response = await call_next(request)
        response.headers["x-served-by"] = "uvicorn-in-handler"
        return response


async def item(request):
    return JSONResponse({"id": int(request.path_params["id"]), "q": request.query_params.get("q")})


async def total(request):
    body = await request.json()
    return JSONResponse({"total": sum(body["values"])})


async def numbers(request):
    async def gen():
        for i in range(5):
            yield f"{i}\n".encode()
            await asyncio.sleep(0)
    return StreamingResponse(gen(), media_type="text/plain")


APP = Starlette(routes=[Route("/items/{id}", item), Route("/total", total, methods=["POST"]),
                        Route("/numbers", numbers)], middleware=[Middleware(Tagged)])


async def main(n):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(APP, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)  # uvicorn's own readiness flag, polled as its tests do
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        items = await asyncio.gather(*(client.get(f"/items/{i}", params={"q": "x"})
                                       for i in range(n)))
        posted = await client.post("/total", json={"values": list(range(n))})
        streamed = await client.get("/numbers")
        missing = await client.get("/absent")
    server.should_exit = True
    await serving
    return {"items": [r.json() for r in items], "total": posted.json(),
            "streamed": streamed.text.split(), "header": items[0].headers["x-served-by"],
            "missing": missing.status_code}


def handler(event, context):
    return asyncio.run(main(event["items"]))
