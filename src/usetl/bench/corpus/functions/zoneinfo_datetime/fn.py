"""zoneinfo and datetime: conversions across time zones and DST changes, parsing and
formatting, from the tzdata package where the system has no zone files."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, available_timezones


def handler(event, context):
    utc = datetime(2024, 3, 10, 6, 30, tzinfo=UTC)
    zones = {}
    for name in event["zones"]:
        zone = ZoneInfo(name)
        local = utc.astimezone(zone)
        later = (utc + timedelta(hours=3)).astimezone(zone)
        zones[name] = [local.isoformat(), later.isoformat(), local.tzname(), later.tzname()]
    parsed = datetime.strptime("2024-11-03 01:30:00", "%Y-%m-%d %H:%M:%S")
    ny = ZoneInfo("America/New_York")
    folds = [parsed.replace(tzinfo=ny, fold=f).utcoffset().total_seconds() for f in (0, 1)]
    return {"zones": zones, "folds": folds, "known": len(available_timezones()) > 300,
            "iso": datetime.fromisoformat("2024-02-29T23:59:59+05:30").astimezone(UTC)
            .strftime("%A %d %B %Y %H:%M %Z")}
