"""ThreadPoolExecutor's edges: named worker threads, done callbacks, exceptions kept in
futures, shutdown(cancel_futures=True) with queued work, an initializer that fails
(BrokenThreadPool), and a cooperative cancel flag for running tasks."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from concurrent.futures.thread import BrokenThreadPool


def handler(event, context):
    names, callbacks = set(), []
    with ThreadPoolExecutor(3, thread_name_prefix="etl") as pool:
        futures = [pool.submit(lambda i=i: (names.add(threading.current_thread().name), i)[1])
                   for i in range(event["tasks"])]
        for f in futures:
            f.add_done_callback(lambda f: callbacks.append(f.result()))
        wait(futures, timeout=30)
        failing = pool.submit(int, "x")
        wait([failing], timeout=30)
        error = type(failing.exception()).__name__
    stop, started = threading.Event(), threading.Barrier(3, timeout=30)

    def cooperative():
        started.wait()
        n = 0
        while not stop.is_set():
            n += 1
            time.sleep(0.001)
        return "stopped"

    pool = ThreadPoolExecutor(2)
    running = [pool.submit(cooperative) for _ in range(2)]
    queued = [pool.submit(time.sleep, 0) for _ in range(5)]
    started.wait()
    stop.set()
    pool.shutdown(wait=True, cancel_futures=True)

    def bad_init():
        raise RuntimeError("no connection")

    broken = ThreadPoolExecutor(1, initializer=bad_init)
    try:
        broken.submit(int, "1").result(30)
        refused = None
    except BrokenThreadPool as e:
        refused = type(e).__name__
    broken.shutdown()
    return {"names": sorted(n.rsplit("_", 1)[0] for n in names)[:1],
            "callbacks": sorted(callbacks), "error": error,
            "running": [f.result() for f in running],
            "cancelled": [f.cancelled() for f in queued], "broken": refused}
