"""aiofiles as async handlers write files: lines written and read back on its thread
pool, files handled concurrently, aiofiles.os's stat, rename and listdir, and a spooled
temporary file."""

import asyncio
import hashlib
import os
import tempfile

import aiofiles
import aiofiles.os
import aiofiles.tempfile


async def write_part(d, i, lines):
    path = os.path.join(d, f"part-{i}.txt")
    async with aiofiles.open(path, "w") as f:
        for j in range(lines):
            await f.write(f"{i},{j},{i * j}\n")
    return path


async def digest(path):
    h = hashlib.sha256()
    async with aiofiles.open(path, "rb") as f:
        while chunk := await f.read(4096):
            h.update(chunk)
    return h.hexdigest()[:12]


async def main(files, lines):
    with tempfile.TemporaryDirectory() as d:
        paths = await asyncio.gather(*(write_part(d, i, lines) for i in range(files)))
        digests = await asyncio.gather(*(digest(p) for p in paths))
        sizes = [(await aiofiles.os.stat(p)).st_size for p in paths]
        await aiofiles.os.rename(paths[0], os.path.join(d, "renamed.txt"))
        await aiofiles.os.mkdir(os.path.join(d, "sub"))
        listed = sorted(await aiofiles.os.listdir(d))
        counted = 0
        async with aiofiles.open(os.path.join(d, "renamed.txt")) as f:
            async for _ in f:
                counted += 1
        async with aiofiles.tempfile.SpooledTemporaryFile(max_size=100) as t:
            await t.write(b"x" * 1000)
            await t.seek(0)
            spooled = len(await t.read())
        exists = await aiofiles.os.path.exists(paths[0])
    return {"digests": digests, "sizes": sizes, "listed": listed, "lines": counted,
            "spooled": spooled, "old_exists": exists}


def handler(event, context):
    return asyncio.run(main(event["files"], event["lines"]))
