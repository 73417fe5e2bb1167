"""FunctionBench linpack: solve a dense n x n system with numpy and check the residual."""

import numpy as np


def handler(event, context):
    n = event["n"]
    rng = np.random.default_rng(event["seed"])
    a = rng.random((n, n)).astype(np.float64)
    b = rng.random(n)
    x = np.linalg.solve(a, b)
    residual = np.linalg.norm(a @ x - b) / (np.linalg.norm(a) * np.linalg.norm(x) * n)
    ops = (2.0 * n ** 3) / 3.0 + 2.0 * n ** 2
    return {"n": n, "ok": bool(residual < 1e-10), "ops": ops,
            "checksum": round(float(np.sum(x)), 4)}
