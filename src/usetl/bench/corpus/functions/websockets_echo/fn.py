"""websockets: a WebSocket server on 127.0.0.1 in the function's loop and a client that
sends text and binary frames, with a ping and a timeout."""

import asyncio

import websockets


async def echo(ws):
    async for message in ws:
        await ws.send(message[::-1])


async def main(n):
    async with websockets.serve(echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with websockets.connect(f"ws://127.0.0.1:{port}") as ws:
            replies = []
            for i in range(n):
                await ws.send(f"message {i}")
                replies.append(await ws.recv())
            await ws.send(b"\x00\x01\x02")
            binary = await ws.recv()
            latency = await (await ws.ping())
            try:
                await asyncio.wait_for(ws.recv(), timeout=0.1)
                timed_out = False
            except TimeoutError:
                timed_out = True
    return {"replies": replies[:2], "count": len(replies), "binary": list(binary),
            "pinged": latency >= 0, "timed_out": timed_out}


def handler(event, context):
    return asyncio.run(main(event["messages"]))
