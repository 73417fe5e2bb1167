"""boto3 against moto's server: S3 objects put, listed, fetched and copied, and DynamoDB
items written and queried."""

import hashlib

import boto3
from boto3.dynamodb.conditions import Key


def clients(endpoint):
    args = {"endpoint_url": endpoint, "region_name": "us-east-1",
            "aws_access_key_id": "test", "aws_secret_access_key": "test"}
    return boto3.client("s3", **args), boto3.resource("dynamodb", **args)


def handler(event, context):
    s3, dynamodb = clients(event["endpoint"])
    bucket = event["bucket"]
    s3.create_bucket(Bucket=bucket)
    for i in range(event["objects"]):
        s3.put_object(Bucket=bucket, Key=f"in/{i}.txt", Body=(f"line {i}\n" * 1000).encode())
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="in/")["Contents"]]
    body = s3.get_object(Bucket=bucket, Key="in/0.txt")["Body"].read()
    s3.copy_object(Bucket=bucket, Key="out/0.txt", CopySource={"Bucket": bucket, "Key": "in/0.txt"})
    copied = s3.head_object(Bucket=bucket, Key="out/0.txt")["ContentLength"]
    table = dynamodb.create_table(
        TableName=bucket, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                     {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST")
    with table.batch_writer() as batch:
        for i in range(event["objects"]):
            batch.put_item(Item={"pk": "run", "sk": i, "key": f"in/{i}.txt"})
    items = table.query(KeyConditionExpression=Key("pk").eq("run") & Key("sk").gte(2))["Items"]
    for key in listed + ["out/0.txt"]:
        s3.delete_object(Bucket=bucket, Key=key)
    table.delete()
    s3.delete_bucket(Bucket=bucket)
    return {"listed": sorted(listed), "sha256": hashlib.sha256(body).hexdigest(),
            "copied": copied, "queried": sorted(int(i["sk"]) for i in items)}
