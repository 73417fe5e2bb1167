"""CPU work off the event loop as handlers hand it out: loop.run_in_executor with a
ProcessPoolExecutor (gathered, timed out with wait_for, failing in the child), a thread
executor set as the loop's default, and as_completed over the futures."""

import asyncio
import hashlib
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor


def digest(i):
    h = b"%d" % i
    for _ in range(2000):
        h = hashlib.sha256(h).digest()
    return i, h.hex()[:12]


def slow(seconds):
    time.sleep(seconds)
    return seconds


def fails(x):
    raise ValueError(f"bad input {x}")


async def main(n):
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=3, thread_name_prefix="io"))
    with ProcessPoolExecutor(max_workers=2) as pool:
        gathered = await asyncio.gather(*(loop.run_in_executor(pool, digest, i)
                                          for i in range(n)))
        order = []
        for fut in asyncio.as_completed([loop.run_in_executor(pool, slow, s)
                                         for s in (0.2, 0.01)]):
            order.append(await fut)
        try:
            await asyncio.wait_for(loop.run_in_executor(pool, slow, 1.0), timeout=0.1)
            timed_out = False
        except TimeoutError:
            timed_out = True
        try:
            await loop.run_in_executor(pool, fails, 7)
            error = None
        except ValueError as e:
            error = str(e)
    threaded = await loop.run_in_executor(None, digest, 99)
    return {"gathered": dict(gathered), "timed_out": timed_out, "error": error,
            "as_completed": order, "threaded": threaded[1]}


def handler(event, context):
    return asyncio.run(main(event["n"]))
