"""asyncio's lower layers as libraries use them: a Unix-socket server and client,
connect_read_pipe and connect_write_pipe over an os.pipe, add_reader on a socket pair,
sock_sendall and sock_recv, and a datagram endpoint on 127.0.0.1."""

import asyncio
import os
import socket
import tempfile


class Collect(asyncio.Protocol):
    def __init__(self, done):
        self.data, self.done = b"", done

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        self.done.set_result(self.data)


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data.upper(), addr)


class Answer(asyncio.DatagramProtocol):
    def __init__(self, got):
        self.got = got

    def datagram_received(self, data, addr):
        if not self.got.done():
            self.got.set_result(data)


async def unix_service(path, n):
    async def serve(reader, writer):
        while line := await reader.readline():
            writer.write(line[::-1].strip() + b"\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(serve, path)
    reader, writer = await asyncio.open_unix_connection(path)
    replies = []
    for i in range(n):
        writer.write(b"line-%d\n" % i)
        await writer.drain()
        replies.append((await reader.readline()).decode().strip())
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    return replies


async def pipes():
    loop = asyncio.get_running_loop()
    r, w = os.pipe()
    done = loop.create_future()
    rt, _ = await loop.connect_read_pipe(lambda: Collect(done), os.fdopen(r, "rb", 0))
    wt, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(w, "wb", 0))
    for i in range(50):
        wt.write(b"%03d" % i)
    wt.close()
    data = await asyncio.wait_for(done, 10)
    rt.close()
    return len(data), data[:9].decode()


async def readers():
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    got = loop.create_future()
    loop.add_reader(a.fileno(), lambda: got.set_result(a.recv(100)))
    await loop.sock_sendall(b, b"through add_reader")
    first = await asyncio.wait_for(got, 10)
    loop.remove_reader(a.fileno())
    await loop.sock_sendall(a, b"through sock_recv")
    second = await loop.sock_recv(b, 100)
    a.close()
    b.close()
    return [first.decode(), second.decode()]


async def datagrams():
    loop = asyncio.get_running_loop()
    server, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    got = loop.create_future()
    client, _ = await loop.create_datagram_endpoint(
        lambda: Answer(got), remote_addr=server.get_extra_info("sockname"))
    client.sendto(b"ping")
    answer = await asyncio.wait_for(got, 10)
    client.close()
    server.close()
    return answer.decode()


async def main(n):
    with tempfile.TemporaryDirectory() as d:
        unix = await unix_service(os.path.join(d, "svc.sock"), n)
    return {"unix": unix, "pipes": await pipes(), "readers": await readers(),
            "datagram": await datagrams()}


def handler(event, context):
    return asyncio.run(main(event["lines"]))
