"""Orders as JSON fetched from a URL, reshaped into revenue per country and per SKU."""

import json

from fetch import fetch


def handler(event, context):
    orders = json.loads(bytes(fetch(event["url"])))
    countries = {}
    skus = {}
    for order in orders:
        country = countries.setdefault(order["customer"]["country"],
                                       {"orders": 0, "revenue": 0.0, "customers": set()})
        country["orders"] += 1
        country["customers"].add(order["customer"]["id"])
        for item in order["items"]:
            revenue = item["qty"] * item["price"]
            country["revenue"] += revenue
            skus[item["sku"]] = skus.get(item["sku"], 0.0) + revenue
    top = sorted(skus.items(), key=lambda kv: kv[1], reverse=True)[: event.get("top", 10)]
    return {
        "countries": {name: {"orders": c["orders"], "customers": len(c["customers"]),
                             "revenue": round(c["revenue"], 2)}
                      for name, c in sorted(countries.items())},
        "top_skus": [[sku, round(revenue, 2)] for sku, revenue in top],
    }
