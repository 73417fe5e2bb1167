"""An object read from S3 (here a local S3-compatible server) with boto3."""

import hashlib
import os

import boto3

# Made once, at import (as AWS advises for Lambda): endpoint and keys from the environment.
S3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"], region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")


def handler(event, context):
    body = S3.get_object(Bucket=event["bucket"], Key=event["key"])["Body"].read()
    return {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
