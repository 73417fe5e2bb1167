"""loguru as services configure it: a file sink in /tmp rotated by size and compressed
on rotation, enqueue=True (records through a multiprocessing queue to a writer thread),
JSON serialisation, bound context, a sink function, and exceptions logged with their
traceback."""

import glob
import json
import os
import tempfile

from loguru import logger


def handler(event, context):
    with tempfile.TemporaryDirectory() as d:
        logger.remove()
        captured = []
        file_sink = logger.add(os.path.join(d, "app.log"), rotation="8 KB",
                               compression="gz", enqueue=True, level="INFO",
                               format="{level} {extra[job]} {message}")
        json_sink = logger.add(os.path.join(d, "app.json"), serialize=True, enqueue=True)
        logger.add(lambda message: captured.append(message.record["message"]), level="WARNING")
        log = logger.bind(job=event["job"])
        for i in range(event["lines"]):
            log.info("processed row {} of {}", i, event["lines"])
        log.warning("slow batch")
        try:
            int("not a number")
        except ValueError:
            log.exception("division failed")
        logger.complete()
        logger.remove(file_sink)
        logger.remove(json_sink)
        rotated = sorted(glob.glob(os.path.join(d, "app.*.log.gz")))
        with open(os.path.join(d, "app.json")) as f:
            records = [json.loads(line) for line in f]
        with open(os.path.join(d, "app.log")) as f:
            current = f.read()
    logger.remove()
    return {"rotated": len(rotated) > 0, "json_records": len(records),
            "json_extra": records[0]["record"]["extra"], "levels": sorted(
                {r["record"]["level"]["name"] for r in records}),
            "traceback": "ValueError" in current, "captured": captured}
