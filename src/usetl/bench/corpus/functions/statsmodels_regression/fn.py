"""An analytics function with statsmodels: an OLS regression from a formula over a pandas
frame (coefficients, R squared, a t-test), a logistic GLM, and an ARIMA forecast of a
seasonal series, rounded as a report would print them."""

import numpy as np
import pandas as pd
import statsmodels.api as sm
import statsmodels.formula.api as smf
from statsmodels.tsa.arima.model import ARIMA


def handler(event, context):
    rng = np.random.default_rng(event["seed"])
    n = event["rows"]
    df = pd.DataFrame({"x": rng.normal(size=n), "group": rng.choice(["a", "b", "c"], n)})
    df["y"] = 1.5 + 2.0 * df["x"] + df["group"].map({"a": 0, "b": 0.5, "c": -0.5}) + rng.normal(
        0, 0.3, n)
    ols = smf.ols("y ~ x + C(group)", data=df).fit()
    test = ols.t_test("x = 2")
    df["hit"] = (df["y"] > df["y"].median()).astype(int)
    logit = smf.glm("hit ~ x", data=df, family=sm.families.Binomial()).fit()
    season = np.sin(np.arange(120) * 2 * np.pi / 12)
    series = pd.Series(10 + season + np.cumsum(rng.normal(0, 0.1, 120)),
                       index=pd.period_range("2015-01", periods=120, freq="M"))
    forecast = ARIMA(series, order=(2, 0, 1)).fit().forecast(3)
    return {"params": {k: round(v, 4) for k, v in ols.params.items()},
            "r2": round(ols.rsquared, 4), "t_p": round(float(test.pvalue), 3),
            "logit": {k: round(v, 3) for k, v in logit.params.items()},
            "forecast": [round(v, 2) for v in forecast.tolist()],
            "forecast_index": [str(p) for p in forecast.index]}
