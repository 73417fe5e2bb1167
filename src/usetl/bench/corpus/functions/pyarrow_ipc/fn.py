"""Arrow's IPC formats as services hand tables to each other: a record-batch stream and a
file written to /tmp, the file memory-mapped and read without copying, compressed IPC
(LZ4 and zstd), dictionary-encoded columns, schema metadata, compute kernels over the
mapped table, and a dataset of Feather files filtered by a column."""

import os
import tempfile

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.feather as feather
import pyarrow.ipc as ipc


def table(rows):
    return pa.table({
        "id": pa.array(range(rows), pa.int64()),
        "city": pa.array([["Oslo", "Lima", "Pune", "Kyiv"][i % 4] for i in range(rows)]
                         ).dictionary_encode(),
        "temp": pa.array([((i * 37) % 400) / 10 - 10 for i in range(rows)], pa.float64()),
        "flags": pa.array([[i % 2 == 0, i % 3 == 0] for i in range(rows)]),
    }).replace_schema_metadata({"source": "corpus", "version": "2"})


def handler(event, context):
    t = table(event["rows"])
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        stream_path = os.path.join(tmp, "t.arrows")
        with pa.OSFile(stream_path, "wb") as sink, ipc.new_stream(sink, t.schema) as w:
            for batch in t.to_batches(max_chunksize=event["batch"]):
                w.write_batch(batch)
        with pa.OSFile(stream_path, "rb") as src:
            reader = ipc.open_stream(src)
            batches = list(reader)
        out["stream"] = [len(batches), pa.Table.from_batches(batches).equals(t)]
        sizes = {}
        for codec in (None, "lz4", "zstd"):
            path = os.path.join(tmp, f"t.{codec}.arrow")
            opts = ipc.IpcWriteOptions(compression=codec)
            with pa.OSFile(path, "wb") as sink, ipc.new_file(sink, t.schema, options=opts) as w:
                w.write_table(t, max_chunksize=event["batch"])
            sizes[str(codec)] = os.path.getsize(path)
        with pa.memory_map(os.path.join(tmp, "t.None.arrow"), "r") as source:
            mapped = ipc.open_file(source).read_all()
            out["mapped"] = {"equal": mapped.equals(t),
                             "metadata": {k.decode(): v.decode()
                                          for k, v in mapped.schema.metadata.items()},
                             "zero_copy": pa.total_allocated_bytes() < t.nbytes,
                             "mean_by_city": sorted(
                                 [r["city"], round(r["temp_mean"], 4)] for r in
                                 mapped.group_by("city").aggregate([("temp", "mean")]).to_pylist()),
                             "hot": pc.sum(pc.greater(mapped["temp"], 20)).as_py()}
        with pa.memory_map(os.path.join(tmp, "t.zstd.arrow"), "r") as source:
            out["zstd_equal"] = ipc.open_file(source).read_all().equals(t)
        out["compressed_smaller"] = sizes["zstd"] < sizes["None"] and sizes["lz4"] < sizes["None"]
        parts = os.path.join(tmp, "parts")
        os.mkdir(parts)
        for i, batch in enumerate(t.to_batches(max_chunksize=event["batch"])):
            feather.write_feather(pa.Table.from_batches([batch]),
                                  os.path.join(parts, f"p{i}.feather"))
        dataset = ds.dataset(parts, format="feather")
        cold = dataset.to_table(filter=ds.field("temp") < 0, columns=["id", "city"])
        out["dataset"] = [len(dataset.files), cold.num_rows, cold["id"][:3].to_pylist()]
    out["dictionary"] = str(t.schema.field("city").type)
    return out
