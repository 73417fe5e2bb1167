"""aiohttp: concurrent GETs to an outside server with one ClientSession, a POST, and an
aiohttp web application served in the function and called back."""

import asyncio
import hashlib

import aiohttp
from aiohttp import web


async def hello(request):
    return web.json_response({"name": request.match_info["name"],
                              "q": request.query.get("q")})


async def main(base, n):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async def get(i):
            async with session.get(f"{base}/bytes/{10000 + i}") as r:
                return r.status, len(await r.read())
        got = await asyncio.gather(*(get(i) for i in range(n)))
        async with session.post(f"{base}/store/aio", data=b"a" * 30000) as r:
            posted = r.status
        async with session.get(f"{base}/store/aio") as r:
            back = hashlib.sha256(await r.read()).hexdigest() == hashlib.sha256(
                b"a" * 30000).hexdigest()
        app = web.Application()
        app.router.add_get("/hello/{name}", hello)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with session.get(f"http://127.0.0.1:{port}/hello/world?q=1") as r:
            served = await r.json()
        await runner.cleanup()
    return {"got": got, "posted": posted, "back": back, "served": served}


def handler(event, context):
    return asyncio.run(main(event["base"], event["requests"]))
