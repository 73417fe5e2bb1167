"""asyncio streams: an echo server on 127.0.0.1 in the handler's own loop with concurrent
clients, and an HTTP/1.1 request to an outside server over open_connection."""

import asyncio
import urllib.parse


async def echo(reader, writer):
    while data := await reader.readline():
        writer.write(data.upper())
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def client(port, i):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = []
    for j in range(5):
        writer.write(f"client {i} line {j}\n".encode())
        await writer.drain()
        replies.append((await reader.readline()).decode().strip())
    writer.write_eof()
    await reader.read()
    writer.close()
    await writer.wait_closed()
    return replies


async def http_get(url):
    parts = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(parts.hostname, parts.port), timeout=30)
    writer.write(f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                 "Connection: close\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    body = await reader.read()
    writer.close()
    return head.split(b"\r\n")[0].decode(), len(body)


async def main(event):
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        replies = await asyncio.gather(*(client(port, i) for i in range(event["clients"])))
    status, size = await http_get(event["url"])
    return {"replies": replies, "status": status, "size": size}


def handler(event, context):
    return asyncio.run(main(event))
