"""A columnar ETL step with pyarrow: CSV read with explicit types, a filter, a computed
column and a group-by, written as a partitioned Parquet dataset under /tmp and read back
with a pushed-down filter, plus newline-delimited JSON, as data-lake Lambdas do."""

import io
import tempfile

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.dataset as ds
import pyarrow.json as pjson
import pyarrow.parquet as pq


def source_csv(rows):
    lines = ["day,store,sku,qty,price"]
    for i in range(rows):
        lines.append(f"2024-05-{i % 28 + 1:02d},s{i % 4},k{i % 13},{i % 9},{(i * 37) % 500 / 10}")
    return "\n".join(lines).encode()


def handler(event, context):
    pa.set_cpu_count(1)
    types = {"day": pa.date32(), "qty": pa.int32(), "price": pa.float64()}
    table = pcsv.read_csv(io.BytesIO(source_csv(event["rows"])),
                          convert_options=pcsv.ConvertOptions(column_types=types))
    table = table.filter(pc.greater(table["qty"], 0))
    table = table.append_column("revenue", pc.round(pc.multiply(table["qty"], table["price"]), 2))
    grouped = table.group_by("store").aggregate([("revenue", "sum"), ("qty", "sum"),
                                                 ("sku", "count_distinct")]).sort_by("store")
    with tempfile.TemporaryDirectory() as root:
        ds.write_dataset(table, root, format="parquet", partitioning=["store"],
                         partitioning_flavor="hive", use_threads=False)
        dataset = ds.dataset(root, format="parquet", partitioning="hive")
        big = dataset.to_table(filter=ds.field("revenue") > 150, columns=["sku", "revenue"],
                               use_threads=False)
        files = sorted(f.rsplit("/", 2)[-2] for f in dataset.files)
        single = f"{root}/all.parquet"
        pq.write_table(table, single, compression="zstd", row_group_size=500)
        meta = pq.ParquetFile(single).metadata
    ndjson = "\n".join(f'{{"id": {i}, "v": {i * 0.5}}}' for i in range(50)).encode()
    js = pjson.read_json(io.BytesIO(ndjson))
    return {"rows": table.num_rows, "grouped": grouped.to_pylist(),
            "big": big.num_rows, "big_sum": round(pc.sum(big["revenue"]).as_py(), 2),
            "partitions": files, "row_groups": meta.num_row_groups,
            "schema": [str(f.type) for f in table.schema], "json_sum": pc.sum(js["v"]).as_py()}
