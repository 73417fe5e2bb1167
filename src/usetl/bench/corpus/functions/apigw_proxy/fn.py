"""An API Gateway (REST, proxy integration) Lambda: a small router over method and path
templates, query strings and multi-value headers, base64 bodies, CORS and error
responses, fed the events API Gateway sends."""

import base64
import gzip
import json
import re

ROUTES = []


def route(method, template):
    pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$")

    def register(fn):
        ROUTES.append((method, pattern, fn))
        return fn
    return register


STORE = {}


@route("GET", "/items")
def list_items(req):
    limit = int((req["queryStringParameters"] or {}).get("limit", 10))
    return 200, {"items": sorted(STORE)[:limit]}


@route("PUT", "/items/{item_id}")
def put_item(req):
    body = req["body"]
    if req.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    STORE[req["pathParameters"]["item_id"]] = json.loads(body)
    return 201, {"id": req["pathParameters"]["item_id"]}


@route("GET", "/items/{item_id}")
def get_item(req):
    item_id = req["pathParameters"]["item_id"]
    if item_id not in STORE:
        return 404, {"message": f"no item {item_id}"}
    return 200, STORE[item_id]


def respond(status, payload, accept_gzip):
    body = json.dumps(payload, sort_keys=True)
    headers = {"Content-Type": "application/json", "Access-Control-Allow-Origin": "*"}
    if accept_gzip and len(body) > 64:
        headers["Content-Encoding"] = "gzip"
        return {"statusCode": status, "headers": headers, "isBase64Encoded": True,
                "body": base64.b64encode(gzip.compress(body.encode(), mtime=0)).decode()}
    return {"statusCode": status, "headers": headers, "isBase64Encoded": False, "body": body}


def lambda_handler(event, context):
    for method, pattern, fn in ROUTES:
        m = pattern.match(event["path"])
        if m and method == event["httpMethod"]:
            try:
                status, payload = fn({**event, "pathParameters": m.groupdict()})
            except (ValueError, KeyError) as e:
                status, payload = 400, {"message": f"bad request: {e}"}
            break
    else:
        status, payload = 405 if any(p.match(event["path"]) for _, p, _ in ROUTES) else 404, {
            "message": "no route"}
    accept = ",".join(event.get("multiValueHeaders", {}).get("Accept-Encoding", []))
    return respond(status, payload, "gzip" in accept)


def request(method, path, body=None, query=None, b64=False, gzip_ok=False):
    raw = json.dumps(body) if body is not None else None
    if b64 and raw is not None:
        raw = base64.b64encode(raw.encode()).decode()
    return {"resource": "/{proxy+}", "path": path, "httpMethod": method,
            "queryStringParameters": query, "body": raw, "isBase64Encoded": b64,
            "multiValueHeaders": {"Accept-Encoding": ["gzip", "br"] if gzip_ok else []},
            "requestContext": {"stage": "prod", "requestId": "r-1"}}


def decode(response):
    body = response["body"]
    if response["isBase64Encoded"]:
        body = gzip.decompress(base64.b64decode(body)).decode()
    return response["statusCode"], json.loads(body)


def handler(event, context):
    STORE.clear()
    results = []
    for i in range(event["items"]):
        results.append(decode(lambda_handler(request(
            "PUT", f"/items/sku-{i}", {"name": f"thing {i}", "price": i * 1.5}, b64=i % 2 == 1),
            None)))
    results.append(decode(lambda_handler(request("GET", "/items", query={"limit": "3"}), None)))
    results.append(decode(lambda_handler(request("GET", "/items/sku-1", gzip_ok=True), None)))
    results.append(decode(lambda_handler(request("GET", "/items/none"), None)))
    results.append(decode(lambda_handler(request("DELETE", "/items/sku-1"), None)))
    results.append(decode(lambda_handler(request("PUT", "/items/x", "{not json"), None)))
    listed = lambda_handler(request("GET", "/items", query={"limit": "50"}, gzip_ok=True), None)
    return {"results": results, "gzip": listed["headers"].get("Content-Encoding")}
