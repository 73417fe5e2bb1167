"""trio as structured-concurrency code uses it: a nursery of workers fed by a memory
channel, move_on_after and fail_after cancel scopes, trio.to_thread, a TCP echo server and
client in one nursery, a child process run with trio.run_process, and trio's own events."""

import functools
import hashlib
import sys

import trio


async def workers(n):
    send, receive = trio.open_memory_channel(0)
    results = []

    async def produce():
        async with send:
            for i in range(n):
                await send.send(i)

    async def consume(rx):
        async with rx:
            async for i in rx:
                await trio.sleep(0.001)
                results.append(hashlib.sha1(b"%d" % i).hexdigest()[:6])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        for _ in range(3):
            nursery.start_soon(consume, receive.clone())
        await receive.aclose()
    return sorted(results)


async def scopes():
    with trio.move_on_after(0.05) as scope:
        await trio.sleep(10)
    try:
        with trio.fail_after(0.05):
            await trio.Event().wait()
        failed = False
    except trio.TooSlowError:
        failed = True
    return scope.cancelled_caught, failed


async def echo_service(lines):
    async def echo(stream):
        async for data in stream:
            await stream.send_all(data.upper())

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, echo, 0,
                                                         host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        got = []
        for line in lines:
            await stream.send_all(line.encode())
            got.append((await stream.receive_some(100)).decode())
        await stream.aclose()
        nursery.cancel_scope.cancel()
    return got


async def main(event):
    done = await workers(event["items"])
    caught, failed = await scopes()
    threaded = await trio.to_thread.run_sync(sum, range(10000))
    echoed = await echo_service(["alpha", "beta"])
    child = await trio.run_process([sys.executable, "-c", "print(6 * 7)"], capture_stdout=True)
    ev = trio.Event()

    async def setter():
        await trio.sleep(0.01)
        ev.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(setter)
        await ev.wait()
    return {"workers": done, "move_on": caught, "fail_after": failed, "threaded": threaded,
            "echo": echoed, "child": child.stdout.decode().strip(), "event": ev.is_set()}


def handler(event, context):
    return trio.run(main, event)
