"""An ETL function: download a CSV of sales, keep the large ones, total them by region, post JSON.

    event = {"source": "http://.../sales.csv", "sink": "http://.../totals", "min_amount": 100}
"""

import csv
import io
import json

from usetl import etl


def handler(event, context):
    sales = etl.get(event["source"])
    minimum = float(event.get("min_amount", 0))
    totals = {}
    rows = kept = 0
    for row in csv.DictReader(io.StringIO(sales.text())):
        rows += 1
        amount = float(row["amount"])
        if amount >= minimum:
            kept += 1
            totals[row["region"]] = totals.get(row["region"], 0.0) + amount
    summary = {
        "rows": rows,
        "kept": kept,
        "totals": {region: round(total, 2) for region, total in sorted(totals.items())},
    }
    posted = etl.post(event["sink"], json.dumps(summary), content_type="application/json")
    return {"summary": summary, "posted": posted.status, "downloaded_bytes": sales.size}
