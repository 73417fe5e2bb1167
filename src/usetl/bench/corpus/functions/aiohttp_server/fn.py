"""An aiohttp web application served on 127.0.0.1 inside the handler (routes, JSON,
middleware, a streamed response, a websocket) and called through one ClientSession with a
connection limit, concurrent requests, cookies and timeouts."""

import asyncio

from aiohttp import ClientSession, ClientTimeout, TCPConnector, WSMsgType, web


@web.middleware
async def stamp(request, handler):
    response = await handler(request)
    response.headers["X-Served-By"] = "corpus"
    return response


async def square(request):
    n = int(request.match_info["n"])
    return web.json_response({"n": n, "square": n * n})


async def echo(request):
    body = await request.json()
    response = web.json_response({"echo": body, "seen": request.cookies.get("session")})
    response.set_cookie("session", "s-1")
    return response


async def stream(request):
    response = web.StreamResponse()
    await response.prepare(request)
    for i in range(int(request.query["chunks"])):
        await response.write(f"chunk {i}\n".encode())
    await response.write_eof()
    return response


async def slow(request):
    await asyncio.sleep(5)
    return web.Response(text="late")


async def ws(request):
    sock = web.WebSocketResponse()
    await sock.prepare(request)
    async for msg in sock:
        if msg.type == WSMsgType.TEXT:
            await sock.send_str(msg.data.upper())
    return sock


async def main(event):
    app = web.Application(middlewares=[stamp])
    app.add_routes([web.get("/square/{n}", square), web.post("/echo", echo),
                    web.get("/stream", stream), web.get("/slow", slow), web.get("/ws", ws)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with ClientSession(base, connector=TCPConnector(limit=4)) as session:
            async def get(n):
                async with session.get(f"/square/{n}") as r:
                    return (await r.json())["square"], r.headers["X-Served-By"]
            squares = await asyncio.gather(*(get(n) for n in range(event["requests"])))
            async with session.post("/echo", json={"a": 1}) as r:
                first = await r.json()
            async with session.post("/echo", json={"a": 2}) as r:
                second = await r.json()
            async with session.get("/stream", params={"chunks": "5"}) as r:
                lines = [line async for line in r.content]
            try:
                async with session.get("/slow", timeout=ClientTimeout(total=0.3)) as r:
                    timed_out = False
            except TimeoutError:
                timed_out = True
            async with session.ws_connect("/ws") as sock:
                replies = []
                for word in ("cold", "warm"):
                    await sock.send_str(word)
                    replies.append((await sock.receive()).data)
    finally:
        await runner.cleanup()
    return {"squares": [s for s, _ in squares], "header": squares[0][1], "first": first,
            "second": second, "lines": len(lines), "timed_out": timed_out, "ws": replies}


def handler(event, context):
    return asyncio.run(main(event))
