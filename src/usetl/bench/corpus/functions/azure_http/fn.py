"""Azure Functions' Python programming model: HTTP-triggered functions registered on a
FunctionApp with routes and auth levels, called with azure.functions.HttpRequest objects as
the host builds them, answering HttpResponse objects (JSON, status codes, headers)."""

import json

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="greet/{name}", methods=["GET"])
def greet(req: func.HttpRequest) -> func.HttpResponse:
    name = req.route_params.get("name")
    times = int(req.params.get("times", "1"))
    return func.HttpResponse(" ".join([f"Hello, {name}."] * times), status_code=200)


@app.route(route="orders", methods=["POST"])
def create_order(req: func.HttpRequest) -> func.HttpResponse:
    try:
        order = req.get_json()
    except ValueError:
        return func.HttpResponse("body is not JSON", status_code=400)
    total = sum(i["qty"] * i["price"] for i in order["items"])
    return func.HttpResponse(json.dumps({"id": order["id"], "total": total}),
                             mimetype="application/json", status_code=201,
                             headers={"Location": f"/api/orders/{order['id']}"})


def request(method, url, body=b"", params=None, route_params=None):
    return func.HttpRequest(method=method, url=url, body=body, params=params or {},
                            route_params=route_params or {},
                            headers={"Content-Type": "application/json"})


def describe(response):
    return {"status": response.status_code, "mimetype": response.mimetype,
            "body": response.get_body().decode(), "location": response.headers.get("Location")}


def handler(event, context):
    functions = {f.get_function_name(): f for f in app.get_functions()}
    calls = [greet(request("GET", "/api/greet/ada", params={"times": "2"},
                           route_params={"name": "ada"}))]
    for order in event["orders"]:
        calls.append(create_order(request("POST", "/api/orders", json.dumps(order).encode())))
    calls.append(create_order(request("POST", "/api/orders", b"{oops")))
    bindings = {name: sorted(b.type for b in f.get_bindings())
                for name, f in functions.items()}
    return {"functions": sorted(functions), "bindings": bindings,
            "calls": [describe(c) for c in calls]}
