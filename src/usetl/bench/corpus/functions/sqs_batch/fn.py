"""An AWS Lambda SQS consumer with partial batch responses: messages are sent to a queue
(moto's server), received in batches with long polling, processed, failures reported as
batchItemFailures and left for a dead-letter queue, successes deleted."""

import json

import boto3


def sqs_client(endpoint):
    return boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def process(body):
    order = json.loads(body)
    if order["qty"] <= 0:
        raise ValueError(f"bad quantity in order {order['id']}")
    return order["qty"] * order["price"]


def lambda_handler(event):
    """What Lambda's SQS integration calls: the records of one batch."""
    failures, total = [], 0
    for record in event["Records"]:
        try:
            total += process(record["body"])
        except ValueError:
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures, "total": total}


def as_event(messages):
    return {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"],
                         "body": m["Body"], "eventSource": "aws:sqs"} for m in messages]}


def handler(event, context):
    sqs = sqs_client(event["endpoint"])
    dlq = sqs.create_queue(QueueName=event["queue"] + "-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName=event["queue"], Attributes={
        "VisibilityTimeout": "0",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "1"})})[
        "QueueUrl"]
    for start in range(0, event["messages"], 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": json.dumps({"id": i, "qty": i % 7 - 1, "price": 3})}
            for i in range(start, min(start + 10, event["messages"]))])
    total, failed, batches = 0, set(), 0
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        messages = got.get("Messages", [])
        if not messages:
            break
        batches += 1
        result = lambda_handler(as_event(messages))
        total += result["total"]
        bad = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        failed |= {json.loads(m["Body"])["id"] for m in messages if m["MessageId"] in bad}
        done = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(messages) if m["MessageId"] not in bad]
        if done:
            sqs.delete_message_batch(QueueUrl=url, Entries=done)
    dead = 0
    while got := sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages"):
        dead += len(got)
        sqs.delete_message_batch(QueueUrl=dlq, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
    for q in (url, dlq):
        sqs.delete_queue(QueueUrl=q)
    return {"total": total, "failed": sorted(failed), "dead_lettered": dead,
            "batched": batches > 0}
