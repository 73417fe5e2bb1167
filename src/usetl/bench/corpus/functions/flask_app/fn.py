"""A Flask application served through its test client (WSGI), as Zappa-style handlers do."""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.route("/hello/<name>")
def hello(name):
    return jsonify(greeting=f"hello {name}", q=request.args.get("q"))


@app.post("/sum")
def total():
    return jsonify(sum=sum(request.get_json()["values"]))


def handler(event, context):
    client = app.test_client()
    hello = client.get("/hello/world?q=1").get_json()
    summed = client.post("/sum", json={"values": list(range(event["n"]))}).get_json()
    missing = client.get("/nowhere").status_code
    return {"hello": hello, "sum": summed["sum"], "missing": missing}
