"""polars' lazy engine as ETL handlers use it: scan_csv and scan_parquet over files in
/tmp, predicate and projection pushdown seen in the optimised plan, group_by with
aggregations, an as-of join, window expressions, the streaming engine, and sink_parquet
writing a result without collecting it."""

import datetime
import os
import tempfile

import polars as pl


def write_inputs(tmp, rows):
    trades = pl.DataFrame({
        "ts": [datetime.datetime(2024, 6, 1) + datetime.timedelta(seconds=7 * i)
               for i in range(rows)],
        "symbol": [["AAA", "BBB", "CCC"][i % 3] for i in range(rows)],
        "qty": [(i * 31) % 100 + 1 for i in range(rows)],
        "price": [100 + ((i * 17) % 50) / 4 for i in range(rows)]})
    trades.write_csv(os.path.join(tmp, "trades.csv"))
    quotes = pl.DataFrame({
        "ts": [datetime.datetime(2024, 6, 1) + datetime.timedelta(seconds=30 * i)
               for i in range(rows // 4)],
        "symbol": [["AAA", "BBB", "CCC"][i % 3] for i in range(rows // 4)],
        "bid": [99 + (i % 40) / 8 for i in range(rows // 4)]})
    quotes.write_parquet(os.path.join(tmp, "quotes.parquet"))


def handler(event, context):
    with tempfile.TemporaryDirectory() as tmp:
        write_inputs(tmp, event["rows"])
        trades = pl.scan_csv(os.path.join(tmp, "trades.csv"), try_parse_dates=True)
        quotes = pl.scan_parquet(os.path.join(tmp, "quotes.parquet"))
        big = trades.filter(pl.col("qty") > 50).select("symbol", "qty", "price")
        plan = big.explain()
        summary = (big.group_by("symbol").agg(
            pl.len().alias("n"), (pl.col("qty") * pl.col("price")).sum().round(2).alias("notional"),
            pl.col("price").max().alias("high")).sort("symbol").collect())
        joined = (trades.sort("ts").join_asof(quotes.sort("ts"), on="ts", by="symbol")
                  .with_columns((pl.col("price") - pl.col("bid")).round(4).alias("spread"))
                  .filter(pl.col("bid").is_not_null()))
        windowed = (trades.with_columns(
            pl.col("qty").cum_sum().over("symbol").alias("running"),
            pl.col("price").rank("dense").over("symbol").alias("rank"))
            .sort("ts").head(6).collect())
        streamed = trades.group_by("symbol").agg(pl.col("qty").sum()).sort("symbol").collect(
            engine="streaming")
        out_path = os.path.join(tmp, "spreads.parquet")
        joined.select("ts", "symbol", "spread").sink_parquet(out_path)
        sunk = pl.read_parquet(out_path)
    return {"pushdown": "SELECTION" in plan.upper() or "FILTER" in plan.upper(),
            "summary": summary.to_dicts(), "spread_mean": round(sunk["spread"].mean(), 6),
            "sunk_rows": sunk.height, "windowed": windowed.select("running", "rank").to_dicts(),
            "streamed": streamed.to_dicts()}
