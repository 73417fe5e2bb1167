"""polars: eager and lazy frames on its thread pool, group-bys, joins, CSV and Parquet in
/tmp."""

import polars as pl


def handler(event, context):
    n = event["rows"]
    df = pl.DataFrame({"id": range(n), "k": [i % 5 for i in range(n)],
                       "v": [(i * 7) % 100 for i in range(n)]})
    names = pl.DataFrame({"k": range(5), "name": ["a", "b", "c", "d", "e"]})
    lazy = (df.lazy().filter(pl.col("v") > 10).group_by("k")
            .agg(pl.len().alias("n"), pl.col("v").sum().alias("total"))
            .join(names.lazy(), on="k").sort("k"))
    out = lazy.collect()
    df.write_parquet("/tmp/corpus-polars.parquet")
    df.write_csv("/tmp/corpus-polars.csv")
    back = pl.read_parquet("/tmp/corpus-polars.parquet")
    scanned = pl.scan_csv("/tmp/corpus-polars.csv").select(pl.col("v").mean()).collect()
    return {"rows": out.rows(), "same": back.equals(df), "mean": round(scanned.item(), 4),
            "threads": pl.thread_pool_size() >= 1}
