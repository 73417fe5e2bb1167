"""asyncio child processes joined into a pipeline by an os.pipe (gzip | sha256sum), a
megabyte written through a child's stdin with drain while its stdout is read concurrently,
stderr and stdout read at once, a child terminated at a timeout, and a bounded gather of
many short children."""

import asyncio
import hashlib
import os


async def pipeline(data):
    r, w = os.pipe()
    gzip = await asyncio.create_subprocess_exec(
        "gzip", "-c", "-n", stdin=asyncio.subprocess.PIPE, stdout=w)
    os.close(w)
    digest = await asyncio.create_subprocess_exec("sha256sum", stdin=r,
                                                  stdout=asyncio.subprocess.PIPE)
    os.close(r)
    gzip.stdin.write(data)
    await gzip.stdin.drain()
    gzip.stdin.close()
    out, _ = await digest.communicate()
    return [await gzip.wait(), digest.returncode, len(out.split()[0])]


async def through_cat(data):
    cat = await asyncio.create_subprocess_exec(
        "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)

    async def feed():
        for i in range(0, len(data), 65536):
            cat.stdin.write(data[i:i + 65536])
            await cat.stdin.drain()
        cat.stdin.close()

    async def collect():
        h, n = hashlib.sha256(), 0
        while chunk := await cat.stdout.read(65536):
            h.update(chunk)
            n += len(chunk)
        return n, h.hexdigest()

    _, (n, h) = await asyncio.gather(feed(), collect())
    await cat.wait()
    return n, h == hashlib.sha256(data).hexdigest()


async def both_streams():
    child = await asyncio.create_subprocess_shell(
        "i=0; while [ $i -lt 200 ]; do echo out $i; echo err $i >&2; i=$((i+1)); done",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.gather(child.stdout.read(), child.stderr.read())
    return len(out.splitlines()), len(err.splitlines()), await child.wait()


async def terminated():
    child = await asyncio.create_subprocess_exec(
        "sh", "-c", "echo started; exec sleep 30", stdout=asyncio.subprocess.PIPE)
    first = await child.stdout.readline()
    try:
        await asyncio.wait_for(child.communicate(), timeout=0.2)
    except TimeoutError:
        child.terminate()
    return first.decode().strip(), await child.wait()


async def bounded(n):
    sem = asyncio.Semaphore(3)

    async def one(i):
        async with sem:
            p = await asyncio.create_subprocess_exec(
                "expr", str(i), "*", "3", stdout=asyncio.subprocess.PIPE)
            out, _ = await p.communicate()
            return int(out)

    return await asyncio.gather(*(one(i) for i in range(n)))


async def main(event):
    data = bytes(range(256)) * (event["kib"] * 4)
    return {"pipeline": await pipeline(data), "cat": await through_cat(data),
            "streams": await both_streams(), "terminated": await terminated(),
            "bounded": await bounded(event["children"])}


def handler(event, context):
    return asyncio.run(main(event))
