"""Producer and consumer threads over queue.Queue, the consumer ending on get(timeout)."""

import queue
import threading
import time


def handler(event, context):
    q = queue.Queue(maxsize=event["maxsize"])
    consumed, empties = [], []

    def producer():
        for i in range(event["items"]):
            q.put(i * i, timeout=30)

    def consumer():
        while True:
            try:
                consumed.append(q.get(timeout=event["idle_timeout"]))
                q.task_done()
            except queue.Empty:
                empties.append(1)
                return

    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    started = time.monotonic()
    try:
        q.get(timeout=0.1)
    except queue.Empty:
        waited = time.monotonic() - started
    full = queue.Queue(maxsize=1)
    full.put(0)
    try:
        full.put(1, timeout=0.05)
        put_timed_out = False
    except queue.Full:
        put_timed_out = True
    return {"consumed": len(consumed), "total": sum(consumed), "ended_on_empty": empties == [1],
            "waited_enough": waited >= 0.09, "put_timed_out": put_timed_out}
