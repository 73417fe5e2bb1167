"""Streaming record formats as ETL handlers read and write them without loading a file
whole: CSV read through a gzip text stream with csv.Sniffer guessing the dialect,
DictWriter with quoting, JSON Lines written and read lazily, a stream of concatenated
JSON documents split with raw_decode, and a download's CSV read from the socket as text."""

import csv
import gzip
import io
import json
import tempfile
import urllib.request
from pathlib import Path


def write_orders(path, n):
    with gzip.open(path, "wt", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=";", quoting=csv.QUOTE_MINIMAL)
        w.writerow(["id", "customer", "note", "amount"])
        for i in range(n):
            w.writerow([i, f"Kunde {i % 7}", "says \"hi\"; ok" if i % 5 == 0 else "", i * 1.25])


def read_orders(path):
    totals = {}
    with gzip.open(path, "rt", newline="", encoding="utf-8") as f:
        dialect = csv.Sniffer().sniff(f.read(2048))
        f.seek(0)
        for row in csv.DictReader(f, dialect=dialect):
            totals[row["customer"]] = round(totals.get(row["customer"], 0) + float(row["amount"]),
                                            2)
    return dialect.delimiter, totals


def documents(text):
    decoder, pos, docs = json.JSONDecoder(), 0, []
    while pos < len(text):
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            break
        doc, pos = decoder.raw_decode(text, pos)
        docs.append(doc)
    return docs


def handler(event, context):
    out = {}
    with tempfile.TemporaryDirectory() as d:
        orders = Path(d) / "orders.csv.gz"
        write_orders(orders, event["rows"])
        out["delimiter"], out["totals"] = read_orders(orders)
        lines = Path(d) / "events.jsonl"
        with lines.open("w") as f:
            for i in range(event["rows"]):
                f.write(json.dumps({"i": i, "kind": ["view", "click", "buy"][i % 3]}) + "\n")
        kinds = {}
        with lines.open() as f:
            for record in map(json.loads, f):
                kinds[record["kind"]] = kinds.get(record["kind"], 0) + 1
        out["kinds"] = kinds
        quoted = io.StringIO()
        w = csv.DictWriter(quoted, ["name", "text"], quoting=csv.QUOTE_NONNUMERIC)
        w.writeheader()
        w.writerow({"name": "a,b", "text": 'line1\nline2 "q"'})
        out["quoted"] = list(csv.DictReader(io.StringIO(quoted.getvalue()),
                                            quoting=csv.QUOTE_NONNUMERIC))
    out["documents"] = documents('{"a": 1} {"b": [2, 3]}\n[4]\n"five"  6')
    payload = "\n".join(f"{i},{i * i}" for i in range(event["rows"])).encode()
    urllib.request.urlopen(urllib.request.Request(
        f"{event['base']}/store/squares.csv", data=payload, method="POST"), timeout=30).read()
    with urllib.request.urlopen(f"{event['base']}/store/squares.csv", timeout=30) as r:
        text = io.TextIOWrapper(r, encoding="ascii", newline="")
        out["download_sum"] = sum(int(row[1]) for row in csv.reader(text))
    return out
