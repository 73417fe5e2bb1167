"""DuckDB over files, as analytics handlers query a data lake: Parquet files written by
pyarrow queried by glob with filename and hive partitions, a COPY ... TO partitioned
Parquet, read_json_auto over JSON Lines, a join with an Arrow table in memory, and a
persistent database file in /tmp with its thread count set."""

import json
import os
import tempfile

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq


def write_lake(root, files, rows):
    for i in range(files):
        table = pa.table({"order_id": list(range(i * rows, (i + 1) * rows)),
                          "customer": [f"c{(j * 7 + i) % 20}" for j in range(rows)],
                          "amount": [round(((j * 13 + i) % 97) * 1.25, 2) for j in range(rows)]})
        pq.write_table(table, os.path.join(root, f"orders-{i}.parquet"))
    with open(os.path.join(root, "customers.jsonl"), "w") as f:
        for c in range(20):
            f.write(json.dumps({"customer": f"c{c}", "tier": ["gold", "silver"][c % 2]}) + "\n")


def handler(event, context):
    with tempfile.TemporaryDirectory() as root:
        write_lake(root, event["files"], event["rows"])
        db = duckdb.connect(os.path.join(root, "lake.duckdb"))
        db.execute(f"set threads to {event['threads']}")
        glob = os.path.join(root, "orders-*.parquet")
        per_file = db.execute(
            f"select parse_filename(filename), count(*), round(sum(amount), 2) from "
            f"read_parquet('{glob}', filename=true) group by 1 order by 1").fetchall()
        tiers = db.execute(
            f"select c.tier, count(*), round(avg(o.amount), 4) from read_parquet('{glob}') o "
            f"join read_json_auto('{os.path.join(root, 'customers.jsonl')}') c using "
            f"(customer) group by 1 order by 1").fetchall()
        out_dir = os.path.join(root, "by_tier")
        db.execute(
            f"copy (select o.*, c.tier from read_parquet('{glob}') o join "
            f"read_json_auto('{os.path.join(root, 'customers.jsonl')}') c using (customer)) "
            f"to '{out_dir}' (format parquet, partition_by (tier))")
        partitions = sorted(os.listdir(out_dir))
        hive = db.execute(
            f"select tier, count(*) from read_parquet('{out_dir}/*/*.parquet', "
            f"hive_partitioning=true) group by 1 order by 1").fetchall()
        bonus = pa.table({"customer": ["c1", "c2"], "bonus": [5.0, 7.5]})
        db.register("bonus", bonus)
        joined = db.execute(f"select customer, sum(amount) + max(bonus) from "
                            f"read_parquet('{glob}') join bonus using (customer) group by 1 "
                            f"order by 1").fetchall()
        db.execute(f"create table orders as select * from read_parquet('{glob}')")
        db.close()
        reopened = duckdb.connect(os.path.join(root, "lake.duckdb"), read_only=True)
        persisted = reopened.execute("select count(*) from orders").fetchone()[0]
        arrow = reopened.execute("select customer, amount from orders order by order_id "
                                 "limit 3").to_arrow_table()
        reopened.close()
    return {"per_file": per_file, "tiers": tiers, "partitions": partitions, "hive": hive,
            "joined": [[c, round(v, 2)] for c, v in joined], "persisted": persisted,
            "arrow": arrow.to_pylist()}
