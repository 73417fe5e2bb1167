"""Graceful shutdown as services write it: loop.add_signal_handler for SIGTERM and SIGUSR1
(signal.set_wakeup_fd under asyncio), the signal sent to the process itself."""

import asyncio
import os
import signal


async def main():
    loop = asyncio.get_running_loop()
    stop, seen = asyncio.Event(), []
    loop.add_signal_handler(signal.SIGUSR1, seen.append, "usr1")
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    async def worker():
        n = 0
        while not stop.is_set():
            n += 1
            await asyncio.sleep(0.01)
        return n

    task = asyncio.create_task(worker())
    await asyncio.sleep(0.05)
    os.kill(os.getpid(), signal.SIGUSR1)
    await asyncio.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)
    iterations = await asyncio.wait_for(task, timeout=10)
    loop.remove_signal_handler(signal.SIGTERM)
    loop.remove_signal_handler(signal.SIGUSR1)
    return {"seen": seen, "stopped": iterations > 0}


def handler(event, context):
    return asyncio.run(main())
