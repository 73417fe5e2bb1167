"""A DynamoDB Streams handler: stream records (INSERT, MODIFY, REMOVE with typed images)
are deserialised with boto3's TypeDeserializer and folded into an aggregate table with
conditional, atomic updates on moto's server."""

from decimal import Decimal

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError


def table_for(endpoint, name):
    dynamodb = boto3.resource("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test")
    return dynamodb.create_table(
        TableName=name, KeySchema=[{"AttributeName": "category", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "category", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST")


def stream_records(n):
    ser = TypeSerializer()
    records = []
    for i in range(n):
        item = {"id": f"p{i % (n // 2)}", "category": ("tools", "toys", "food")[i % 3],
                "price": Decimal(i % 11) + Decimal("0.25"), "tags": {"new", f"t{i % 4}"}}
        kind = "INSERT" if i < n // 2 else ("MODIFY" if i % 4 else "REMOVE")
        image = {k: ser.serialize(v) for k, v in item.items()}
        records.append({"eventName": kind, "dynamodb": {
            "Keys": {"id": image["id"]}, "NewImage" if kind != "REMOVE" else "OldImage": image}})
    return records


def apply(table, record, de):
    change = record["dynamodb"]
    image = change.get("NewImage") or change["OldImage"]
    item = {k: de.deserialize(v) for k, v in image.items()}
    delta = -1 if record["eventName"] == "REMOVE" else 1
    table.update_item(Key={"category": item["category"]},
                      UpdateExpression="ADD events :one, price_sum :p SET last_id = :id",
                      ExpressionAttributeValues={":one": delta, ":p": item["price"] * delta,
                                                 ":id": item["id"]})


def handler(event, context):
    table = table_for(event["endpoint"], event["table"])
    de = TypeDeserializer()
    for record in stream_records(event["records"]):
        apply(table, record, de)
    try:
        table.put_item(Item={"category": "tools"},
                       ConditionExpression="attribute_not_exists(category)")
        conflict = None
    except ClientError as e:
        conflict = e.response["Error"]["Code"]
    rows = sorted(table.scan()["Items"], key=lambda r: r["category"])
    table.delete()
    return {"rows": [{"category": r["category"], "events": int(r["events"]),
                      "price_sum": str(r["price_sum"]), "last_id": r["last_id"]} for r in rows],
            "conflict": conflict}
