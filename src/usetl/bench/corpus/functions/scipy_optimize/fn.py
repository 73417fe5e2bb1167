"""Model fitting in a function with scipy.optimize: a nonlinear least-squares curve fit,
a constrained minimisation (SLSQP), a root find, linear programming with HiGHS and a
scalar bracketed minimum, as pricing and calibration functions do."""

import numpy as np
from scipy import optimize


def r(x, digits=6):
    return np.round(np.asarray(x, dtype=float), digits).tolist()


def handler(event, context):
    rng = np.random.default_rng(event["seed"])
    t = np.linspace(0, 4, event["points"])
    y = 2.5 * np.exp(-1.3 * t) + 0.5 + rng.normal(0, 0.01, t.size)
    params, _ = optimize.curve_fit(lambda t, a, b, c: a * np.exp(-b * t) + c, t, y,
                                   p0=(1, 1, 0))
    rosen = optimize.minimize(optimize.rosen, x0=[1.3, 0.7, 0.8], method="SLSQP",
                              constraints=[{"type": "ineq", "fun": lambda x: 3 - sum(x)}],
                              bounds=[(0, 2)] * 3)
    root = optimize.brentq(lambda x: x ** 3 - 2 * x - 5, 2, 3)
    lp = optimize.linprog(c=[-1, -2], A_ub=[[2, 1], [1, 3]], b_ub=[20, 30], bounds=[(0, None)] * 2,
                          method="highs")
    scalar = optimize.minimize_scalar(lambda x: (x - 1.7) ** 2 + np.sin(3 * x), bracket=(0, 2))
    fixed = optimize.fixed_point(np.cos, 0.5)
    return {"curve": r(params, 3), "rosen": r(rosen.x, 4), "rosen_ok": bool(rosen.success),
            "root": round(root, 10), "lp": r(lp.x), "lp_obj": round(lp.fun, 6),
            "scalar": round(float(scalar.x), 5), "fixed": round(float(fixed), 8)}
