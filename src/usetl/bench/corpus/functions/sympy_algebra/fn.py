"""Symbolic maths in a function, as computer-algebra APIs serve it with sympy: equations
solved, an integral and a derivative, a series, a simplification, a matrix's eigenvalues,
an ODE, and an expression lambdified and evaluated."""

import sympy as sp


def handler(event, context):
    x, y, t = sp.symbols("x y t")
    f = sp.Function("f")
    roots = sp.solve(x ** 3 - 6 * x ** 2 + 11 * x - 6, x)
    system = sp.solve([x + y - event["sum"], x - y - 2], [x, y])
    integral = sp.integrate(sp.exp(-x) * sp.sin(x), (x, 0, sp.oo))
    derivative = sp.diff(sp.sin(x) * sp.exp(x ** 2), x)
    series = sp.series(sp.cos(x), x, 0, 8).removeO()
    simplified = sp.simplify((x ** 2 - 1) / (x - 1) + sp.sin(x) ** 2 + sp.cos(x) ** 2)
    m = sp.Matrix([[2, 1], [1, 2]])
    ode = sp.dsolve(sp.Eq(f(t).diff(t, 2) + f(t), 0), f(t))
    poly = sp.lambdify(x, sp.expand((x + 1) ** event["power"]))
    return {"roots": [str(r) for r in roots], "system": {str(k): str(v) for k, v in system.items()},
            "integral": str(integral), "derivative": str(derivative), "series": str(series),
            "simplified": str(simplified), "eigen": {str(k): v for k, v in m.eigenvals().items()},
            "ode": str(ode.rhs), "poly_at_2": poly(2), "latex": sp.latex(sp.Integral(
                sp.sqrt(x), x)), "prime": int(sp.prime(event["nth"]))}
