"""Memoisation and data plumbing in handlers: cachetools' TTL, LRU and LFU caches with a
controlled clock, @cached with a lock across threads, toolz pipelines (curry, groupby,
merge_with, sliding windows, partition) and more-itertools (chunked, bucket, windowed,
run-length encoding)."""

import threading
from concurrent.futures import ThreadPoolExecutor

import more_itertools as mit
import toolz
from cachetools import LFUCache, LRUCache, TTLCache, cached
from cachetools.keys import hashkey


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def caches():
    clock = Clock()
    ttl = TTLCache(maxsize=10, ttl=5, timer=clock)
    ttl["a"] = 1
    clock.now = 3
    ttl["b"] = 2
    clock.now = 6
    alive = sorted(ttl)
    lru = LRUCache(maxsize=3)
    for k in "abcab":
        lru[k] = k
    lru["d"] = "d"
    lfu = LFUCache(maxsize=2)
    lfu["x"], lfu["y"] = 1, 2
    _ = lfu["x"], lfu["x"]
    lfu["z"] = 3
    return {"ttl": alive, "lru": sorted(lru), "lfu": sorted(lfu)}


def threaded(calls, workers):
    computed = []
    lock = threading.Lock()

    @cached(cache=LRUCache(maxsize=64), key=lambda n: hashkey(n % 10), lock=lock)
    def expensive(n):
        computed.append(n % 10)
        return (n % 10) ** 2

    with ThreadPoolExecutor(workers) as ex:
        values = list(ex.map(expensive, range(calls)))
    return {"sum": sum(values), "computed_at_most": len(computed) <= calls,
            "distinct": sorted(set(computed))}


def plumbing(rows):
    records = [{"user": f"u{i % 4}", "amount": (i * 37) % 50, "day": i % 3} for i in range(rows)]
    total = toolz.curry(lambda key, rs: sum(r[key] for r in rs))
    by_user = toolz.valmap(total("amount"), toolz.groupby("user", records))
    pipeline = toolz.pipe(records, toolz.curried.filter(lambda r: r["amount"] > 20),
                          toolz.curried.map(toolz.curried.get("amount")), list)
    merged = toolz.merge_with(sum, {"a": 1, "b": 2}, {"a": 10, "c": 3})
    return {"by_user": dict(sorted(by_user.items())), "big": pipeline[:8],
            "merged": merged, "windows": [list(w) for w in toolz.sliding_window(3, range(6))],
            "partition": [list(p) for p in toolz.partition_all(4, range(10))],
            "chunked": list(mit.chunked(range(7), 3)),
            "bucket": {k: list(mit.bucket(records, key=lambda r: r["day"])[k])[:2]
                       for k in (0, 1)},
            "windowed": list(mit.windowed([1, 2, 3, 4], 2)),
            "rle": [[k, n] for k, n in mit.run_length.encode("aaabccdddd")],
            "distinct_perms": len(list(mit.distinct_permutations("aabc")))}


def handler(event, context):
    return {"caches": caches(), "threaded": threaded(event["calls"], event["workers"]),
            "plumbing": plumbing(event["rows"])}
