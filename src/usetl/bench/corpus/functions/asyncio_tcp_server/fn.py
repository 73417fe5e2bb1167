"""An asyncio TCP service on 127.0.0.1 started by the handler (a line protocol with
length-prefixed frames, a Protocol-based UDP echo beside it), many concurrent clients,
backpressure with drain, half-close and a server shut down cleanly."""

import asyncio
import struct


async def serve(reader, writer):
    try:
        while header := await reader.readexactly(4):
            (size,) = struct.unpack("!I", header)
            payload = await reader.readexactly(size)
            reply = payload[::-1] * 2
            writer.write(struct.pack("!I", len(reply)) + reply)
            await writer.drain()
    except asyncio.IncompleteReadError:
        pass
    writer.close()
    await writer.wait_closed()


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data.upper(), addr)


class Client(asyncio.DatagramProtocol):
    def __init__(self, want):
        self.got, self.want, self.done = [], want, asyncio.get_running_loop().create_future()

    def datagram_received(self, data, addr):
        self.got.append(data)
        if len(self.got) == self.want:
            self.done.set_result(sorted(self.got))


async def client(port, i, frames):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    total = 0
    for f in range(frames):
        payload = f"client {i} frame {f} ".encode() * (f + 1)
        writer.write(struct.pack("!I", len(payload)) + payload)
        await writer.drain()
        (size,) = struct.unpack("!I", await reader.readexactly(4))
        total += len(await reader.readexactly(size))
    writer.write_eof()
    rest = await reader.read()
    writer.close()
    await writer.wait_closed()
    return total, rest


async def main(event):
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    udp, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    udp_port = udp.get_extra_info("sockname")[1]
    async with server:
        results = await asyncio.gather(*(client(port, i, event["frames"])
                                         for i in range(event["clients"])))
        sender, proto = await loop.create_datagram_endpoint(
            lambda: Client(5), remote_addr=("127.0.0.1", udp_port))
        for i in range(5):
            sender.sendto(f"ping {i}".encode())
        echoed = await asyncio.wait_for(proto.done, 10)
        sender.close()
        server.close()
        await server.wait_closed()
    udp.close()
    return {"bytes": [t for t, _ in results], "eof": all(r == b"" for _, r in results),
            "udp": [e.decode() for e in echoed], "serving": server.is_serving()}


def handler(event, context):
    return asyncio.run(main(event))
