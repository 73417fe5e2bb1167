"""Structured concurrency as 3.11 handlers write it: a TaskGroup whose failing task cancels
its siblings (caught with except*), shield keeping a write alive through a timeout,
asyncio.timeout rescheduled, call_soon_threadsafe from worker threads, context variables
seen by tasks and executors, and an asyncio.Runner reused for two runs."""

import asyncio
import contextvars
import threading

request_id = contextvars.ContextVar("request_id", default="-")


async def step(name, delay, log, fail=False):
    try:
        await asyncio.sleep(delay)
        if fail:
            raise ValueError(f"{name} failed")
        log.append(f"{name} done")
        return name
    except asyncio.CancelledError:
        log.append(f"{name} cancelled")
        raise


async def group(log):
    errors = "no error"
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(step("fast", 0.01, log))
            tg.create_task(step("slow", 5, log))
            tg.create_task(step("bad", 0.05, log, fail=True))
    except* ValueError as eg:
        errors = [str(e) for e in eg.exceptions]
    return errors


async def shielded(log):
    write = asyncio.create_task(step("write", 0.1, log))
    try:
        async with asyncio.timeout(0.02):
            await asyncio.shield(write)
    except TimeoutError:
        log.append("caller timed out")
    return await write


async def rescheduled():
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(0.05) as cm:
        cm.reschedule(loop.time() + 5)
        await asyncio.sleep(0.1)
    return cm.expired()


async def from_threads(n):
    loop = asyncio.get_running_loop()
    got, done = [], asyncio.Event()

    def work(i):
        loop.call_soon_threadsafe(got.append, i * i)
        if i == n - 1:
            loop.call_soon_threadsafe(done.set)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
        t.join()
    await asyncio.wait_for(done.wait(), 10)
    return sorted(got)


async def contexts():
    request_id.set("req-42")

    async def child():
        return request_id.get()

    in_task = await asyncio.create_task(child())
    in_thread = await asyncio.to_thread(request_id.get)
    fresh = contextvars.Context()
    in_fresh = await asyncio.create_task(child(), context=fresh)
    return [in_task, in_thread, in_fresh]


async def main(n):
    log = []
    errors = await group(log)
    shield = await shielded(log)
    return {"errors": errors, "log": sorted(log), "shield": shield,
            "rescheduled_expired": await rescheduled(), "threads": await from_threads(n),
            "contexts": await contexts()}


def handler(event, context):
    with asyncio.Runner() as runner:
        first = runner.run(main(event["threads"]))
        again = runner.run(asyncio.sleep(0, result="again"))
    return {**first, "again": again}
