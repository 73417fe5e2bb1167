"""SNS fan-out: a topic (moto's server) with two SQS subscriptions, one filtered by a
message attribute policy; the handler publishes and each queue's consumer unwraps the SNS
envelope, as the AWS fan-out samples do."""

import json

import boto3


def aws(service, endpoint):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def subscribe(sns, sqs, topic, name, policy=None):
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    attributes = {"FilterPolicy": json.dumps(policy)} if policy else {}
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes=attributes)
    return url


def drain(sqs, url):
    bodies = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        for m in messages:
            envelope = json.loads(m["Body"])
            bodies.append({"subject": envelope.get("Subject"),
                           "message": json.loads(envelope["Message"])})
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return sorted(bodies, key=lambda b: b["message"]["n"])


def handler(event, context):
    sns, sqs = aws("sns", event["endpoint"]), aws("sqs", event["endpoint"])
    topic = sns.create_topic(Name=event["topic"])["TopicArn"]
    everything = subscribe(sns, sqs, topic, event["topic"] + "-all")
    urgent = subscribe(sns, sqs, topic, event["topic"] + "-urgent",
                       {"priority": ["high"]})
    for n in range(event["messages"]):
        priority = "high" if n % 3 == 0 else "low"
        sns.publish(TopicArn=topic, Subject=f"event {n}", Message=json.dumps({"n": n}),
                    MessageAttributes={"priority": {"DataType": "String",
                                                    "StringValue": priority}})
    got_all, got_urgent = drain(sqs, everything), drain(sqs, urgent)
    subscriptions = len(sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"])
    sns.delete_topic(TopicArn=topic)
    for url in (everything, urgent):
        sqs.delete_queue(QueueUrl=url)
    return {"all": [b["message"]["n"] for b in got_all],
            "urgent": [b["message"]["n"] for b in got_urgent],
            "subjects": [b["subject"] for b in got_urgent], "subscriptions": subscriptions}
