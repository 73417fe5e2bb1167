"""tenacity's retries with waits and APScheduler's background scheduler thread firing an
interval job, as ingest functions poll an upstream."""

import threading

from apscheduler.schedulers.background import BackgroundScheduler
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_fixed


class Flaky(Exception):
    pass


def handler(event, context):
    calls = []

    @retry(stop=stop_after_attempt(5), wait=wait_fixed(0.02),
           retry=retry_if_exception_type(Flaky), reraise=True)
    def fetch():
        calls.append(1)
        if len(calls) < 3:
            raise Flaky()
        return "ok"

    result = fetch()
    fired, enough = [], threading.Event()

    def job():
        fired.append(1)
        if len(fired) >= event["runs"]:
            enough.set()

    scheduler = BackgroundScheduler()
    scheduler.add_job(job, "interval", seconds=0.05)
    scheduler.start()
    finished = enough.wait(30)
    scheduler.shutdown(wait=True)
    return {"result": result, "attempts": len(calls), "fired_enough": finished}
