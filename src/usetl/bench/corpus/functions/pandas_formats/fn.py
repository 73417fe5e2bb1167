"""pandas I/O as ETL handlers chain it: one frame written to and read back from Parquet
(pyarrow, snappy and zstd, partitioned by a column), Feather, JSON Lines, gzipped CSV,
Excel through openpyxl with two sheets, and pickle, in /tmp; dtypes and values checked
after each round trip."""

import os
import tempfile

import numpy as np
import pandas as pd


def frame(rows, seed):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "id": np.arange(rows, dtype="int64"),
        "region": pd.Categorical(rng.choice(["eu", "us", "apac"], rows)),
        "amount": rng.normal(100, 30, rows).round(2),
        "when": pd.date_range("2024-01-01", periods=rows, freq="h"),
        "ok": rng.random(rows) > 0.3,
        "note": rng.choice(["", "rush", None], rows),
    })


def handler(event, context):
    df = frame(event["rows"], event["seed"])
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        p = lambda name: os.path.join(tmp, name)  # noqa: E731
        for codec in ("snappy", "zstd"):
            df.to_parquet(p(f"d.{codec}.parquet"), compression=codec, index=False)
            out[f"parquet_{codec}"] = pd.read_parquet(p(f"d.{codec}.parquet")).equals(df)
        df.to_parquet(p("parts"), partition_cols=["region"], index=False)
        parts = pd.read_parquet(p("parts"))
        out["partitions"] = sorted(os.listdir(p("parts")))
        out["partition_rows"] = len(parts)
        df.to_feather(p("d.feather"))
        out["feather"] = pd.read_feather(p("d.feather")).equals(df)
        df.to_json(p("d.jsonl"), orient="records", lines=True, date_format="iso")
        jl = pd.read_json(p("d.jsonl"), lines=True, convert_dates=["when"])
        out["jsonl_amount"] = bool(np.allclose(jl["amount"], df["amount"]))
        df.to_csv(p("d.csv.gz"), index=False)
        csv = pd.read_csv(p("d.csv.gz"), parse_dates=["when"], keep_default_na=False)
        out["csv_when"] = bool((csv["when"] == df["when"]).all())
        with pd.ExcelWriter(p("d.xlsx"), engine="openpyxl") as xw:
            df.drop(columns=["when"]).to_excel(xw, sheet_name="rows", index=False)
            df.groupby("region", observed=True)["amount"].sum().round(2).to_excel(
                xw, sheet_name="totals")
        sheets = pd.read_excel(p("d.xlsx"), sheet_name=None, engine="openpyxl")
        out["sheets"] = {k: list(v.shape) for k, v in sheets.items()}
        out["totals"] = sheets["totals"].set_index("region")["amount"].round(2).to_dict()
        df.to_pickle(p("d.pkl.xz"))
        out["pickle"] = pd.read_pickle(p("d.pkl.xz")).equals(df)
        out["sizes_ordered"] = (os.path.getsize(p("d.zstd.parquet"))
                                < os.path.getsize(p("d.jsonl")))
    out["dtypes"] = {k: str(v) for k, v in df.dtypes.items()}
    return out
