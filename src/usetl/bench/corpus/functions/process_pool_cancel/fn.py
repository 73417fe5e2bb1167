"""ProcessPoolExecutor's edges as batch handlers meet them: an initializer per worker, an
exception raised in a worker and re-raised with its traceback, result(timeout) expiring,
pending futures cancelled, shutdown(cancel_futures=True), a worker that dies taking the pool
with it (BrokenProcessPool), and spawned workers."""

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, TimeoutError, wait
from concurrent.futures.process import BrokenProcessPool

STATE = {}


def init(tag):
    STATE["tag"] = tag


def tagged(x):
    return f"{STATE['tag']}-{x * x}"


def divide(x):
    return 10 // x


def nap(seconds):
    time.sleep(seconds)
    return seconds


def die(code):
    os._exit(code)


def pid(_):
    return os.getpid()


def handler(event, context):
    out = {}
    with ProcessPoolExecutor(2, initializer=init, initargs=("w",)) as pool:
        out["tagged"] = list(pool.map(tagged, range(event["n"])))
        try:
            pool.submit(divide, 0).result(30)
        except ZeroDivisionError as e:
            out["error"] = [type(e).__name__, "divide" in str(e.__cause__)]
        slow = pool.submit(nap, 0.5)
        try:
            slow.result(timeout=0.05)
        except TimeoutError:
            out["timed_out"] = True
        blockers = [pool.submit(nap, 0.3) for _ in range(2)]
        queued = [pool.submit(nap, 0) for _ in range(6)]
        cancelled = [f.cancel() for f in queued[-3:]]
        wait(blockers + queued[:3] + [slow], timeout=30)
        out["cancelled"] = sum(cancelled) > 0 and all(queued[-3:][i].cancelled()
                                                     for i, c in enumerate(cancelled) if c)
    pool = ProcessPoolExecutor(1)
    running = pool.submit(nap, 0.3)
    later = [pool.submit(nap, 0) for _ in range(4)]
    pool.shutdown(wait=True, cancel_futures=True)
    out["after_shutdown"] = [running.result(), sum(f.cancelled() for f in later) >= 3]
    with ProcessPoolExecutor(2) as pool:
        doomed = pool.submit(die, 3)
        try:
            doomed.result(30)
        except BrokenProcessPool:
            out["broken"] = True
        try:
            pool.submit(nap, 0)
        except BrokenProcessPool:
            out["refused_after"] = True
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=spawn, initializer=init, initargs=("s",)) as pool:
        out["spawned"] = list(pool.map(tagged, range(4)))
        out["spawned_other_pid"] = os.getpid() not in set(pool.map(pid, range(4)))
    return out
