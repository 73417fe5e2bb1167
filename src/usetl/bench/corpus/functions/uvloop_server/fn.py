"""uvloop (libuv) as the event loop: a TCP echo server and clients in the function,
getaddrinfo on libuv's thread pool, timers, a child process and run_in_executor."""

import asyncio

import uvloop


async def echo(reader, writer):
    data = await reader.read(1000)
    writer.write(data[::-1])
    await writer.drain()
    writer.close()


async def main(n):
    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def client(i):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"message {i}".encode())
        reply = await reader.read(1000)
        writer.close()
        return reply.decode()

    replies = await asyncio.gather(*(client(i) for i in range(n)))
    server.close()
    await server.wait_closed()
    infos = await loop.getaddrinfo("localhost", 80, type=1)
    fired = loop.create_future()
    loop.call_later(0.05, fired.set_result, "fired")
    child = await asyncio.create_subprocess_exec("echo", "from a child",
                                                 stdout=asyncio.subprocess.PIPE)
    out, _ = await child.communicate()
    try:
        await asyncio.wait_for(asyncio.sleep(5), 0.05)
        timed_out = False
    except TimeoutError:
        timed_out = True
    return {"loop": type(loop).__module__, "replies": replies[:3], "count": len(replies),
            "resolved": sorted({i[4][0] for i in infos})[:1] != [], "timer": await fired,
            "child": out.decode().strip(), "timed_out": timed_out,
            "executor": await loop.run_in_executor(None, sum, range(100))}


def handler(event, context):
    return uvloop.run(main(event["clients"]))
