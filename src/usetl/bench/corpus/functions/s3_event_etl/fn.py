"""An AWS Lambda S3 trigger: for each record of an ObjectCreated event, the CSV object is
fetched from S3 (moto's server), summarised per region and written back as JSON under
another prefix, the way the AWS samples' "process uploaded file" handlers do."""

import csv
import io
import json
import urllib.parse

import boto3


def s3_client(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def s3_event(bucket, keys):
    return {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                         "s3": {"bucket": {"name": bucket},
                                "object": {"key": urllib.parse.quote_plus(k)}}}
                        for k in keys]}


def upload_inputs(s3, bucket, files, rows):
    keys = []
    for f in range(files):
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["region", "amount", "units"])
        for r in range(rows):
            writer.writerow([("north", "south", "east west")[(r + f) % 3], (r * 7 + f) % 101,
                             r % 5 + 1])
        key = f"uploads/day {f}.csv"
        s3.put_object(Bucket=bucket, Key=key, Body=out.getvalue().encode())
        keys.append(key)
    return keys


def process_record(s3, record):
    bucket = record["s3"]["bucket"]["name"]
    key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    totals = {}
    for row in csv.DictReader(io.StringIO(body)):
        t = totals.setdefault(row["region"], {"amount": 0, "units": 0, "rows": 0})
        t["amount"] += int(row["amount"])
        t["units"] += int(row["units"])
        t["rows"] += 1
    out_key = "summaries/" + key.rsplit("/", 1)[1].replace(".csv", ".json")
    s3.put_object(Bucket=bucket, Key=out_key, Body=json.dumps(totals, sort_keys=True).encode(),
                  ContentType="application/json")
    return out_key


def handler(event, context):
    s3 = s3_client(event["endpoint"])
    bucket = event["bucket"]
    s3.create_bucket(Bucket=bucket)
    keys = upload_inputs(s3, bucket, event["files"], event["rows"])
    written = [process_record(s3, r) for r in s3_event(bucket, keys)["Records"]]
    summaries = {k: json.loads(s3.get_object(Bucket=bucket, Key=k)["Body"].read())
                 for k in written}
    types = {s3.head_object(Bucket=bucket, Key=k)["ContentType"] for k in written}
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, PaginationConfig={"PageSize": 2})
    for page in pages:
        s3.delete_objects(Bucket=bucket,
                          Delete={"Objects": [{"Key": o["Key"]} for o in page["Contents"]]})
    s3.delete_bucket(Bucket=bucket)
    return {"written": written, "summaries": summaries, "types": sorted(types)}
