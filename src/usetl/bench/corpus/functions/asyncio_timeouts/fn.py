"""asyncio as handlers use it: gather, wait_for and asyncio.timeout expiring, a queue of
workers, to_thread and run_in_executor, a cancelled task and a semaphore."""

import asyncio
import hashlib


async def fetch(i):
    await asyncio.sleep(0.01 * (i % 4))
    return i * 2


async def worker(q, out):
    while True:
        item = await q.get()
        out.append(hashlib.md5(str(item).encode()).hexdigest()[:6])
        q.task_done()


async def main(n):
    gathered = await asyncio.gather(*(fetch(i) for i in range(n)))
    try:
        await asyncio.wait_for(asyncio.sleep(10), timeout=0.05)
        wait_for = "finished"
    except TimeoutError:
        wait_for = "timed out"
    try:
        async with asyncio.timeout(0.05):
            await asyncio.Event().wait()
        scoped = "finished"
    except TimeoutError:
        scoped = "timed out"
    q, out = asyncio.Queue(), []
    workers = [asyncio.create_task(worker(q, out)) for _ in range(3)]
    for i in range(20):
        q.put_nowait(i)
    await q.join()
    for w in workers:
        w.cancel()
    cancelled = await asyncio.gather(*workers, return_exceptions=True)
    threaded = await asyncio.to_thread(sum, range(1000))
    executed = await asyncio.get_running_loop().run_in_executor(None, pow, 2, 20)
    sem, active, peak = asyncio.Semaphore(2), [0], [0]

    async def limited():
        async with sem:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            await asyncio.sleep(0.01)
            active[0] -= 1

    await asyncio.gather(*(limited() for _ in range(6)))
    done, pending = await asyncio.wait([asyncio.create_task(asyncio.sleep(5))], timeout=0.05)
    for p in pending:
        p.cancel()
    return {"gathered": gathered, "wait_for": wait_for, "timeout": scoped, "queue": sorted(out),
            "cancelled": all(isinstance(c, asyncio.CancelledError) for c in cancelled),
            "threaded": threaded, "executed": executed, "peak": peak[0],
            "pending": len(pending)}


def handler(event, context):
    return asyncio.run(main(event["n"]))
