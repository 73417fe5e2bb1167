"""A FastAPI application called through its TestClient (anyio's portal thread runs the ASGI
app), as Mangum-style handlers and their tests do."""

from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from pydantic import BaseModel

app = FastAPI()
ITEMS = {}


class Item(BaseModel):
    name: str
    price: float


@app.put("/items/{item_id}")
async def put_item(item_id: int, item: Item):
    ITEMS[item_id] = item
    return {"id": item_id, "name": item.name}


@app.get("/items/{item_id}")
def get_item(item_id: int):  # a sync endpoint: run on anyio's worker threads
    if item_id not in ITEMS:
        raise HTTPException(status_code=404, detail="no such item")
    return ITEMS[item_id]


def handler(event, context):
    ITEMS.clear()
    with TestClient(app) as client:
        put = [client.put(f"/items/{i}", json={"name": f"n{i}", "price": i * 1.5}).json()
               for i in range(event["items"])]
        got = client.get("/items/1").json()
        missing = client.get("/items/999")
        bad = client.put("/items/x", json={"name": 1})
    return {"put": put[-1], "got": got, "missing": [missing.status_code, missing.json()],
            "bad": bad.status_code}
