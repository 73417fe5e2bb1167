"""Fast array kernels numeric handlers add to numpy: numexpr evaluating expressions on its
own thread pool (sized from the machine's CPUs, then set), its virtual machine's
functions and reductions, and bottleneck's NaN-aware and moving-window functions,
checked against plain numpy."""

import bottleneck as bn
import numexpr as ne
import numpy as np


def handler(event, context):
    rng = np.random.default_rng(event["seed"])
    n = event["n"]
    a, b = rng.random(n), rng.random(n)
    detected = ne.detect_number_of_cores()
    results = {}
    for threads in (1, 2, 4):
        ne.set_num_threads(threads)
        v = ne.evaluate("sin(a) ** 2 + cos(b) ** 2 + where(a > b, a - b, b - a)")
        results[threads] = round(float(v.sum()), 6)
    ref = np.sin(a) ** 2 + np.cos(b) ** 2 + np.abs(a - b)
    reduced = float(ne.evaluate("sum(a * b)"))
    with_nan = a.copy()
    with_nan[::97] = np.nan
    window = event["window"]
    moving = bn.move_mean(with_nan, window, min_count=1)
    ref_moving = np.array([np.nanmean(with_nan[max(0, i - window + 1):i + 1])
                           for i in range(200)])
    return {"threads": results, "same": len(set(results.values())) == 1,
            "matches_numpy": bool(np.allclose(ne.evaluate("sin(a) ** 2 + cos(b) ** 2 + "
                                                          "where(a > b, a - b, b - a)"), ref)),
            "sum": round(reduced, 6), "cores_positive": detected > 0,
            "nansum": round(float(bn.nansum(with_nan)), 6),
            "nanmedian": round(float(bn.nanmedian(with_nan)), 6),
            "moving": bool(np.allclose(moving[:200], ref_moving)),
            "move_max": round(float(np.nanmax(bn.move_max(with_nan, window))), 6),
            "rank": bn.move_rank(np.arange(10.0), 3)[2:5].tolist(),
            "nans": int(bn.anynan(with_nan)), "vml": ne.use_vml}
