"""An EventBridge scheduled Lambda: the scheduled event's time picks the batch windows due
(cron-style rules expanded with dateutil's rrule in a time zone), the handler puts a rule
and custom events on moto's event bus, and archives what it ran."""

import json
from datetime import datetime

import boto3
from dateutil import rrule, tz


def windows(at, zone, hours):
    local = tz.gettz(zone)
    now = datetime.fromisoformat(at.replace("Z", "+00:00")).astimezone(local)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    rule = rrule.rrule(rrule.HOURLY, byhour=hours, byminute=0, dtstart=start)
    due = rule.between(start, now, inc=True)
    return [d.isoformat() for d in due], rule.after(now).isoformat()


def handler(event, context):
    scheduled = {"version": "0", "detail-type": "Scheduled Event", "source": "aws.events",
                 "time": event["time"], "resources": ["arn:aws:events:us-east-1:1:rule/etl"],
                 "detail": {}}
    due, following = windows(scheduled["time"], event["zone"], event["hours"])
    events = boto3.client("events", endpoint_url=event["endpoint"], region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    events.put_rule(Name="etl-nightly", ScheduleExpression="cron(0 2 * * ? *)",
                    State="ENABLED")
    described = events.describe_rule(Name="etl-nightly")
    put = events.put_events(Entries=[
        {"Source": "corpus.etl", "DetailType": "WindowDone", "EventBusName": "default",
         "Detail": json.dumps({"window": w})} for w in due])
    events.delete_rule(Name="etl-nightly")
    return {"due": due, "next": following, "failed": put["FailedEntryCount"],
            "entries": len(put["Entries"]), "schedule": described["ScheduleExpression"],
            "state": described["State"]}
