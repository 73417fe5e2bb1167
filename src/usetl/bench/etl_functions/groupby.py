"""Sales of a CSV fetched from a URL, totalled by region and product with pandas."""

import io

import pandas as pd
from fetch import fetch


def handler(event, context):
    sales = pd.read_csv(io.BytesIO(fetch(event["url"])))
    sales = sales[sales["quantity"] > 0]
    by = sales.groupby(["region", "product"])["amount"].agg(["sum", "mean", "count"])
    top = by.sort_values("sum", ascending=False).head(event.get("top", 5))
    return {"rows": int(len(sales)),
            "top": [{"region": r, "product": p, "sum": round(float(s), 2), "count": int(n)}
                    for (r, p), s, n in zip(top.index, top["sum"], top["count"], strict=True)]}
