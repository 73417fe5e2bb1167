"""numba: functions compiled by LLVM at run time (executable memory), with a cache in
/tmp, over numpy arrays."""

import os

os.environ.setdefault("NUMBA_CACHE_DIR", "/tmp/numba-cache")

import numpy as np  # noqa: E402
from numba import njit, vectorize  # noqa: E402


@njit(cache=True)
def pairwise(points):
    n = points.shape[0]
    out = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            d = 0.0
            for k in range(points.shape[1]):
                d += (points[i, k] - points[j, k]) ** 2
            out[i, j] = d ** 0.5
    return out


@vectorize(["float64(float64, float64)"])
def hypot(a, b):
    return (a * a + b * b) ** 0.5


def handler(event, context):
    rng = np.random.default_rng(event["seed"])
    points = rng.random((event["points"], 3))
    d = pairwise(points)
    return {"symmetric": bool(np.allclose(d, d.T)), "sum": round(float(d.sum()), 3),
            "hypot": hypot(np.array([3.0]), np.array([4.0])).tolist()}
