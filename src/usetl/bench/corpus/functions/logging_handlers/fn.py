"""The logging real handlers set up: basicConfig, a file and a rotating file in /tmp, and a
QueueHandler whose listener thread writes the records."""

import logging
import logging.handlers
import os
import queue

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
logger = logging.getLogger("corpus.logging")


def handler(event, context):
    for name in os.listdir("/tmp"):
        if name.startswith("corpus-log"):
            os.remove(os.path.join("/tmp", name))
    records = queue.Queue()
    rotating = logging.handlers.RotatingFileHandler("/tmp/corpus-log.txt", maxBytes=2000,
                                                    backupCount=3)
    rotating.setFormatter(logging.Formatter("%(threadName)s %(levelname)s %(message)s"))
    listener = logging.handlers.QueueListener(records, rotating)
    listener.start()
    queued = logging.handlers.QueueHandler(records)
    logger.addHandler(queued)
    try:
        for i in range(event["lines"]):
            logger.info("processed record %d of %d", i, event["lines"])
        logger.warning("a warning with %s", {"k": [1, 2]})
        try:
            int("not a number")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(queued)
        listener.stop()
        rotating.close()
    files = sorted(n for n in os.listdir("/tmp") if n.startswith("corpus-log"))
    with open("/tmp/corpus-log.txt") as f:
        last = f.read().splitlines()
    records_only = [x for x in last if not x.startswith(" ")]
    return {"files": files, "traceback_logged": any(x.startswith("ValueError") for x in last),
            "from_listener_thread": not any(x.startswith("MainThread") for x in records_only)}
