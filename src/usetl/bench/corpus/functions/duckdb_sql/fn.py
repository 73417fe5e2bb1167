"""DuckDB: SQL over generated data on its thread pool, a database file and Parquet in /tmp."""

import os

import duckdb


def handler(event, context):
    for name in ("/tmp/corpus.duckdb", "/tmp/corpus.duckdb.wal", "/tmp/corpus.parquet"):
        if os.path.exists(name):
            os.remove(name)
    con = duckdb.connect("/tmp/corpus.duckdb")
    con.execute(f"create table t as select range as id, range % 7 as k, (range * 13) % 1000 "
                f"as v from range({event['rows']})")
    grouped = con.execute("select k, count(*), sum(v) from t group by k order by k").fetchall()
    con.execute("copy (select * from t where k = 3) to '/tmp/corpus.parquet' (format parquet)")
    back = con.execute("select count(*), max(id) from read_parquet('/tmp/corpus.parquet')"
                       ).fetchone()
    threads = con.execute("select current_setting('threads')").fetchone()[0]
    con.close()
    again = duckdb.connect("/tmp/corpus.duckdb", read_only=True)
    kept = again.execute("select count(*) from t").fetchone()[0]
    again.close()
    return {"grouped": [list(g) for g in grouped], "parquet": list(back), "kept": kept,
            "threads": threads >= 1}
