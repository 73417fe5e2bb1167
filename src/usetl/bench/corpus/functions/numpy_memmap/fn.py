"""numpy's file-backed arrays: a memmap in /tmp written through, flushed and mapped again
read-only, and np.save/np.load with mmap_mode."""

import numpy as np


def handler(event, context):
    n = event["n"]
    m = np.memmap("/tmp/corpus.dat", dtype=np.float64, mode="w+", shape=(n,))
    m[:] = np.arange(n) * 0.5
    m.flush()
    del m
    ro = np.memmap("/tmp/corpus.dat", dtype=np.float64, mode="r", shape=(n,))
    total = float(ro.sum())
    np.save("/tmp/corpus.npy", np.arange(n, dtype=np.int32).reshape(-1, 10))
    loaded = np.load("/tmp/corpus.npy", mmap_mode="r")
    rw = np.memmap("/tmp/corpus.dat", dtype=np.float64, mode="r+", shape=(n,))
    rw[0] = 42.0
    rw.flush()
    with open("/tmp/corpus.dat", "rb") as f:
        first = np.frombuffer(f.read(8), dtype=np.float64)[0]
    return {"total": total, "shape": list(loaded.shape), "last": int(loaded[-1, -1]),
            "written_through": float(first)}
