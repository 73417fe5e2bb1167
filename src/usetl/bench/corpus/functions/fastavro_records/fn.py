"""Avro as data pipelines ship records (Kafka sinks, Firehose, data lakes): fastavro's
parsed schemas with logical types, object container files in /tmp with the null, deflate,
bzip2 and xz codecs and sync markers, a reader's schema evolution, schemaless encoding
of single messages, and block-level reading."""

import datetime
import decimal
import io
import os
import random
import tempfile

import fastavro

SCHEMA = {
    "type": "record", "name": "Order", "namespace": "shop",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "customer", "type": "string"},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal",
                                    "precision": 10, "scale": 2}},
        {"name": "placed", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "status", "type": {"type": "enum", "name": "Status",
                                    "symbols": ["NEW", "PAID", "SHIPPED"]}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "note", "type": ["null", "string"], "default": None},
    ]}
READER = {**SCHEMA, "fields": [f for f in SCHEMA["fields"] if f["name"] != "note"]
          + [{"name": "channel", "type": "string", "default": "web"}]}


def records(n, seed):
    rng = random.Random(seed)
    base = datetime.datetime(2024, 6, 1, tzinfo=datetime.UTC)
    for i in range(n):
        yield {"id": i, "customer": f"c{rng.randrange(50):03d}",
               "amount": decimal.Decimal(rng.randrange(100, 100000)) / 100,
               "placed": base + datetime.timedelta(minutes=rng.randrange(100000)),
               "status": rng.choice(["NEW", "PAID", "SHIPPED"]),
               "tags": rng.sample(["gift", "express", "bulk", "promo"], rng.randrange(3)),
               "note": rng.choice([None, "leave at door"])}


def handler(event, context):
    schema = fastavro.parse_schema(SCHEMA)
    rows = list(records(event["rows"], event["seed"]))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for codec in ("null", "deflate", "bzip2", "xz"):
            path = os.path.join(tmp, f"orders.{codec}.avro")
            with open(path, "wb") as f:
                fastavro.writer(f, schema, rows, codec=codec, sync_interval=4000,
                                metadata={"source": "corpus"})
            with open(path, "rb") as f:
                reader = fastavro.reader(f)
                back = list(reader)
                meta = reader.metadata
            with open(path, "rb") as f:
                blocks = [b.num_records for b in fastavro.block_reader(f)]
            out[codec] = {"equal": back == rows, "blocks": len(blocks) > 1,
                          "codec": meta["avro.codec"], "source": meta["source"]}
        with open(os.path.join(tmp, "orders.deflate.avro"), "rb") as f:
            evolved = list(fastavro.reader(f, reader_schema=fastavro.parse_schema(READER)))
    one = io.BytesIO()
    fastavro.schemaless_writer(one, schema, rows[0])
    single = fastavro.schemaless_reader(io.BytesIO(one.getvalue()), schema)
    paid = sum(r["amount"] for r in rows if r["status"] == "PAID")
    return {"codecs": out, "evolved": [sorted(evolved[0]), evolved[0]["channel"]],
            "single": [len(one.getvalue()), single == rows[0]], "paid": str(paid),
            "first": {k: str(v) for k, v in rows[0].items()}}
