"""TZ in the environment and time.tzset, as cron-like functions set it: local times in
several zones, strftime with %Z, and mktime back."""

import os
import time


def handler(event, context):
    moment = 1719835200  # 2024-07-01 12:00 UTC
    out = {}
    for zone in event["zones"]:
        os.environ["TZ"] = zone
        time.tzset()
        local = time.localtime(moment)
        out[zone] = [time.strftime("%Y-%m-%d %H:%M %Z", local), time.mktime(local) == moment,
                     time.timezone, local.tm_isdst]
    del os.environ["TZ"]
    time.tzset()
    return out
