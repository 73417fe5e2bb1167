"""FunctionBench feature_generation-style: features from a CSV with pandas (text cleaning,
group-bys, a pivot, rolling means), written to /tmp as CSV."""

import hashlib
import io
import random

import pandas as pd


def csv_text(rng, n):
    out = io.StringIO()
    out.write("id,city,day,amount,comment\n")
    for i in range(n):
        out.write(f"{i},{rng.choice(['Oslo', 'Lima', 'Pune'])},{rng.randint(1, 28)},"
                  f"{rng.randint(1, 5000) / 100},\"{rng.choice(['Good!', 'bad...', 'OK  '])}\"\n")
    return out.getvalue()


def handler(event, context):
    df = pd.read_csv(io.StringIO(csv_text(random.Random(event["seed"]), event["rows"])))
    df["comment"] = df["comment"].str.lower().str.replace(r"[^a-z]", "", regex=True)
    df["date"] = pd.to_datetime("2024-02-01") + pd.to_timedelta(df["day"] - 1, unit="D")
    by_city = df.groupby("city")["amount"].agg(["count", "sum", "mean"]).round(4)
    pivot = df.pivot_table(index="city", columns="comment", values="amount", aggfunc="count")
    daily = df.groupby("date")["amount"].sum().rolling(7, min_periods=1).mean().round(4)
    df.to_csv("/tmp/features.csv", index=False)
    with open("/tmp/features.csv", "rb") as f:
        written = hashlib.sha256(f.read()).hexdigest()
    return {"by_city": by_city.reset_index().values.tolist(),
            "pivot": pivot.fillna(0).astype(int).values.tolist(),
            "daily_last": float(daily.iloc[-1]), "csv_sha256": written}
