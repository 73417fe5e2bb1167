"""Gridded data as climate and sensor handlers handle it with xarray: a labelled Dataset
built from seeded readings, selection by label and nearest neighbour, resampling and
groupby over time, rolling means, interpolation, a netCDF3 file in /tmp through scipy
and read back lazily, and a Zarr-free JSON summary."""

import os
import tempfile

import numpy as np
import pandas as pd
import xarray as xr


def r(x, n=4):
    return round(float(x), n)


def dataset(seed, days):
    rng = np.random.default_rng(seed)
    time = pd.date_range("2024-01-01", periods=days * 24, freq="h")
    lat = np.linspace(40, 50, 5)
    lon = np.linspace(0, 20, 6)
    hours = np.arange(time.size)
    base = 10 + 8 * np.sin(2 * np.pi * (hours % 24) / 24)
    temp = base[:, None, None] + rng.normal(0, 1, (time.size, lat.size, lon.size)) \
        - 0.5 * (lat[None, :, None] - 45)
    rain = rng.gamma(0.5, 2, (time.size, lat.size, lon.size))
    return xr.Dataset({"temp": (("time", "lat", "lon"), temp, {"units": "degC"}),
                       "rain": (("time", "lat", "lon"), rain, {"units": "mm"})},
                      coords={"time": time, "lat": lat, "lon": lon},
                      attrs={"source": "corpus"})


def handler(event, context):
    ds = dataset(event["seed"], event["days"])
    point = ds.sel(lat=44.1, lon=7.9, method="nearest")
    daily = ds.resample(time="1D").mean()
    by_hour = ds.temp.groupby("time.hour").mean()
    rolling = point.temp.rolling(time=6, center=True).mean().dropna("time")
    fine = ds.temp.isel(time=0).interp(lat=[42.5, 47.5], lon=[5.0, 15.0])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "grid.nc")
        daily.to_netcdf(path, engine="scipy")
        with xr.open_dataset(path, engine="scipy") as back:
            same = bool(np.allclose(back.temp.values, daily.temp.values))
            attrs = dict(back.attrs)
            units = back.temp.attrs.get("units")
        size = os.path.getsize(path) > 0
    return {"dims": dict(ds.sizes), "point": [r(point.lat, 1), r(point.lon, 1)],
            "daily_mean": [r(v) for v in daily.temp.mean(("lat", "lon")).values[:3]],
            "warmest_hour": int(by_hour.mean(("lat", "lon")).argmax()),
            "rolling_max": r(rolling.max()), "interp": [[r(v) for v in row]
                                                        for row in fine.values],
            "rain_total": r(ds.rain.sum(), 2), "netcdf": [same, attrs, units, size],
            "summary": {k: r(v.mean()) for k, v in daily.data_vars.items()}}
