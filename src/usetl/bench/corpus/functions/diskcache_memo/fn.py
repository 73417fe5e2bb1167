"""diskcache as handlers memoise expensive calls in /tmp (SQLite plus files): a Cache
with memoize and expiry, values large enough to be files, a FanoutCache shared by
threads, a transaction, a Deque and an Index, and the cache's statistics."""

import hashlib
import tempfile
import threading

import diskcache

CALLS = []


def handler(event, context):
    out = {}
    with tempfile.TemporaryDirectory() as d:
        with diskcache.Cache(f"{d}/memo") as cache:
            cache.stats(enable=True)

            @cache.memoize(expire=600)
            def expensive(n):
                CALLS.append(n)
                return hashlib.sha256(b"%d" % n).hexdigest()[:10]

            first = [expensive(i % 5) for i in range(event["calls"])]
            out["memoized"] = [first[:5], len(CALLS)]
            cache.set("big", b"x" * (1 << 20))
            cache.set("short", "lived", expire=0.01)
            out["big"] = len(cache.get("big"))
            out["expired"] = cache.get("short", default="gone") in ("gone", "lived")
            with cache.transact():
                cache.incr("counter", 5, default=0)
                cache.incr("counter")
            out["counter"] = cache["counter"]
            hits, misses = cache.stats()
            out["stats"] = hits > 0 and misses > 0
            out["volume"] = cache.volume() > (1 << 20)
        fanout = diskcache.FanoutCache(f"{d}/fanout", shards=4, timeout=10)

        def work(t):
            for i in range(event["per_thread"]):
                fanout.set(f"t{t}-{i}", i * t)
                fanout.incr("total")

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out["fanout"] = [len(fanout), fanout.get("total")]
        fanout.close()
        queue = diskcache.Deque(directory=f"{d}/deque")
        queue.extend(range(5))
        queue.appendleft(-1)
        out["deque"] = [queue.popleft(), queue.pop(), len(queue)]
        index = diskcache.Index(f"{d}/index", {"b": 2, "a": 1})
        index["c"] = 3
        out["index"] = list(index.items())
    return out
