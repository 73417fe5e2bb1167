"""Forecasting as capacity-planning handlers do it with statsmodels' time-series models:
a seeded seasonal series, an augmented Dickey-Fuller test, ARIMA and SARIMAX fits with
forecasts and confidence intervals, Holt-Winters exponential smoothing, an STL
decomposition and autocorrelations."""

import numpy as np
import pandas as pd
from statsmodels.tsa.arima.model import ARIMA
from statsmodels.tsa.holtwinters import ExponentialSmoothing
from statsmodels.tsa.seasonal import STL
from statsmodels.tsa.stattools import acf, adfuller


def r(x, n=3):
    return round(float(x), n)


def handler(event, context):
    rng = np.random.default_rng(event["seed"])
    n, season = event["points"], 12
    t = np.arange(n)
    values = 50 + 0.3 * t + 8 * np.sin(2 * np.pi * t / season) + rng.normal(0, 1.5, n)
    series = pd.Series(values, index=pd.date_range("2020-01-01", periods=n, freq="MS"))
    adf_stat, p_value, *_ = adfuller(series)
    diff_p = adfuller(series.diff().dropna())[1]
    arima = ARIMA(series, order=(1, 1, 1)).fit()
    fc = arima.get_forecast(6)
    sarima = ARIMA(series, order=(1, 0, 0), seasonal_order=(1, 1, 0, season),
                   trend="t").fit()
    hw = ExponentialSmoothing(series, trend="add", seasonal="add",
                              seasonal_periods=season).fit()
    stl = STL(series, period=season, robust=True).fit()
    return {"adf_stationary": bool(p_value < 0.05), "diff_stationary": bool(diff_p < 0.05),
            "arima_aic": r(arima.aic, 1), "arima_forecast": [r(v, 1) for v in fc.predicted_mean],
            "arima_ci_width": r((fc.conf_int().iloc[:, 1] - fc.conf_int().iloc[:, 0]).mean(), 1),
            "sarima_forecast": [r(v, 1) for v in sarima.forecast(3)],
            "hw_forecast": [r(v, 1) for v in hw.forecast(3)],
            "stl_seasonal_amp": r(stl.seasonal.max() - stl.seasonal.min(), 1),
            "stl_trend_slope": r((stl.trend.iloc[-1] - stl.trend.iloc[0]) / (n - 1), 2),
            "acf_season": r(acf(series.diff().dropna(), nlags=season)[season], 2),
            "last_month": str(series.index[-1].date())}
