"""Object lifetimes as long-lived handlers' caches depend on them: a WeakValueDictionary
cache emptied when the last reference goes, weakref.finalize running cleanup (a temp
file) at collection and at an explicit call, gc.callbacks seeing collections of cycles,
__del__ on cyclic garbage, gc.freeze, and tracemalloc's view of an allocation."""

import gc
import os
import tempfile
import tracemalloc
import weakref


class Resource:
    def __init__(self, name):
        self.name = name
        self.handle = tempfile.NamedTemporaryFile(delete=False)
        self.path = self.handle.name
        weakref.finalize(self, Resource.cleanup, self.handle, self.path)

    @staticmethod
    def cleanup(handle, path):
        handle.close()
        os.unlink(path)


class Node:
    deleted = []

    def __init__(self, name):
        self.name, self.peer = name, None

    def __del__(self):
        Node.deleted.append(self.name)


def handler(event, context):
    out = {}
    cache = weakref.WeakValueDictionary()
    held = [Resource(f"r{i}") for i in range(event["resources"])]
    for r in held:
        cache[r.name] = r
    del r
    paths = [r.path for r in held]
    out["cached"] = len(cache)
    del held[1:]
    gc.collect()
    out["after_release"] = sorted(cache.keys())
    out["files_left"] = [os.path.exists(p) for p in paths]
    f = weakref.finalize(held[0], lambda: None)
    out["finalize_alive"] = f.alive
    f()
    out["finalize_called"] = not f.alive
    phases = []
    gc.callbacks.append(lambda phase, info: phases.append((phase, info["generation"])))
    a, b = Node("a"), Node("b")
    a.peer, b.peer = b, a
    del a, b
    collected = gc.collect()
    gc.callbacks.clear()
    out["cycle_collected"] = collected >= 2
    out["deleted"] = sorted(Node.deleted)
    out["phases"] = sorted(set(phases))
    gc.freeze()
    out["frozen"] = gc.get_freeze_count() > 0
    gc.unfreeze()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    blob = [bytes(1000) for _ in range(1000)]
    after = tracemalloc.take_snapshot()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    tracemalloc.stop()
    out["traced_mib"] = round(grown / 1e6)
    out["blob"] = len(blob)
    probe = Resource("probe")
    ref = weakref.ref(probe, lambda r: out.setdefault("callback", True))
    del probe
    out["dead_ref"] = ref() is None
    return out
