"""A 512x512 matrix product with numpy, of matrices made from the event's seed."""

import numpy as np


def handler(event, context):
    rng = np.random.default_rng(event["seed"])
    n = event.get("n", 512)
    a, b = rng.random((n, n)), rng.random((n, n))
    c = a @ b
    return {"trace": float(np.trace(c)), "norm": float(np.linalg.norm(c))}
