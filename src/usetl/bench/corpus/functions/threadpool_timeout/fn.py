"""ThreadPoolExecutor fan-out as handlers write it: as_completed with a timeout, wait with a
timeout that expires, futures cancelled and map."""

import concurrent.futures as cf
import hashlib
import threading
import time


def work(i):
    time.sleep(0.01 * (i % 5))
    return i, hashlib.sha256(str(i).encode() * 10000).hexdigest()[:8]


def handler(event, context):
    release = threading.Event()
    with cf.ThreadPoolExecutor(max_workers=event["workers"]) as pool:
        futures = [pool.submit(work, i) for i in range(event["tasks"])]
        results = dict(f.result() for f in cf.as_completed(futures, timeout=30))
        blocked = pool.submit(release.wait, 30)
        done, not_done = cf.wait([blocked], timeout=0.2)
        try:
            next(cf.as_completed([blocked], timeout=0.1))
            timed_out = False
        except cf.TimeoutError:
            timed_out = True
        release.set()
        released = blocked.result(timeout=30)
        mapped = list(pool.map(lambda x: x * x, range(10), timeout=30))
    return {"results": [results[i] for i in sorted(results)], "waited_out": len(not_done),
            "as_completed_timed_out": timed_out, "released": released, "mapped": mapped}
