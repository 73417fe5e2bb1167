"""Date handling with pendulum and arrow, as scheduling and billing functions do it: time
zone conversions across DST changes, periods and intervals, humanised differences, ISO
weeks, month-end arithmetic, parsing and formatting."""

import arrow
import pendulum


def handler(event, context):
    start = pendulum.datetime(2024, 3, 9, 12, 0, tz="America/New_York")
    next_day = start.add(days=1)
    hours = (next_day - start).in_hours()
    ny_to_tokyo = start.in_timezone("Asia/Tokyo").to_iso8601_string()
    interval = pendulum.interval(pendulum.datetime(2024, 1, 31), pendulum.datetime(2024, 6, 15))
    month_ends = [pendulum.datetime(2024, 1, 31).add(months=m).to_date_string()
                  for m in range(event["months"])]
    parsed = pendulum.parse("2024-10-27T01:30:00", tz="Europe/London")
    diff = pendulum.datetime(2024, 1, 1).diff_for_humans(pendulum.datetime(2024, 3, 15))
    a = arrow.get("2024-11-03T01:30:00", tzinfo="America/Chicago")
    shifted = a.shift(hours=2)
    spans = [str(s) for s, _ in arrow.Arrow.span_range("week", arrow.get("2024-02-26"),
                                                      arrow.get("2024-03-20"))]
    return {"dst_hours": hours, "tokyo": ny_to_tokyo, "interval_days": interval.in_days(),
            "interval_months": interval.in_months(), "month_ends": month_ends,
            "london_offset": parsed.utcoffset().total_seconds(), "humanised": diff,
            "arrow_shifted": shifted.isoformat(), "arrow_human": shifted.humanize(a),
            "week": pendulum.date(2024, 12, 30).isocalendar()[:2], "spans": spans,
            "formatted": pendulum.datetime(2024, 7, 4, 15, 5).format("dddd Do MMMM YYYY, h:mm A"),
            "arrow_format": arrow.get("2024-07-04T15:05:00").format("YYYY-MM-DD HH:mm ZZ")}
