"""httpx's AsyncClient as ETL handlers fetch with it: connection limits, a bounded gather,
a streamed body hashed as it arrives, a read timeout against a slow endpoint, a status
error raised for a 404, and an upload read back."""

import asyncio
import hashlib

import httpx


async def streamed(client, url):
    h, n = hashlib.sha256(), 0
    async with client.stream("GET", url) as r:
        async for chunk in r.aiter_bytes(32768):
            h.update(chunk)
            n += len(chunk)
    return n, h.hexdigest()[:16]


async def main(event):
    base = event["base"]
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=2)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        sem = asyncio.Semaphore(3)

        async def size(i):
            async with sem:
                r = await client.get(f"/bytes/{1000 * (i + 1)}")
                return len(r.content)

        sizes = await asyncio.gather(*(size(i) for i in range(event["requests"])))
        big = await streamed(client, "/bytes/3000000")
        whole = await client.get("/bytes/3000000")
        try:
            await client.get("/bytes/10?delay_ms=2000", timeout=0.2)
            slow = "answered"
        except httpx.ReadTimeout:
            slow = "timed out"
        missing = await client.get("/nothing/here")
        try:
            missing.raise_for_status()
            status = None
        except httpx.HTTPStatusError as e:
            status = e.response.status_code
        put = await client.post("/store/async-key", content=b"payload " * 100)
        back = await client.get("/store/async-key")
    return {"sizes": sizes, "streamed": big,
            "same": hashlib.sha256(whole.content).hexdigest()[:16] == big[1],
            "slow": slow, "status": status, "post": put.status_code,
            "back": len(back.content), "http_version": whole.http_version}


def handler(event, context):
    return asyncio.run(main(event))
