"""Recurring schedules with dateutil, as reminder and billing functions compute them:
fuzzy and ISO parsing, relativedelta month arithmetic, rrule sets with exclusions, rules
parsed from iCalendar text, and time zones (tz.gettz, ambiguous and imaginary local times,
the system's local zone through TZ)."""

import os
import time
from datetime import datetime

from dateutil import parser, rrule, tz
from dateutil.relativedelta import FR, relativedelta


def handler(event, context):
    berlin = tz.gettz("Europe/Berlin")
    start = datetime(2024, 1, 1, 9, 0, tzinfo=berlin)
    rules = rrule.rruleset()
    rules.rrule(rrule.rrule(rrule.WEEKLY, byweekday=(rrule.MO, rrule.TH), dtstart=start,
                            count=event["count"]))
    rules.exdate(datetime(2024, 1, 4, 9, 0, tzinfo=berlin))
    occurrences = [d.isoformat() for d in rules]
    ical = rrule.rrulestr("DTSTART:20240131T100000Z\nRRULE:FREQ=MONTHLY;BYMONTHDAY=-1;COUNT=4")
    last_days = [d.date().isoformat() for d in ical]
    fuzzy = parser.parse("Meeting on Tuesday, 14 May 2024 at 3:15pm", fuzzy=True)
    ambiguous = datetime(2024, 10, 27, 2, 30, tzinfo=berlin)
    imaginary = datetime(2024, 3, 31, 2, 30, tzinfo=berlin)
    os.environ["TZ"] = "America/Los_Angeles"
    time.tzset()
    local = datetime(2024, 7, 1, 12, tzinfo=tz.tzlocal()).utcoffset().total_seconds()
    return {"occurrences": occurrences, "last_days": last_days, "fuzzy": fuzzy.isoformat(),
            "next_friday": (datetime(2024, 5, 1) + relativedelta(weekday=FR(+2))).date()
            .isoformat(),
            "month_end": (datetime(2024, 1, 31) + relativedelta(months=1)).date().isoformat(),
            "ambiguous": tz.datetime_ambiguous(ambiguous),
            "fold_offsets": [tz.enfold(ambiguous, fold=f).utcoffset().total_seconds()
                             for f in (0, 1)],
            "exists": tz.datetime_exists(imaginary), "resolved": tz.resolve_imaginary(
                imaginary).isoformat(), "tzlocal_offset": local,
            "iso": parser.isoparse("2024-W20-3T10:00:00+05:30").isoformat()}
