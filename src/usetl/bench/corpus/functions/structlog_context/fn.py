"""Structured logging as Lambda Powertools-style handlers do it, with structlog: JSON lines
with bound context, contextvars carried into asyncio tasks and worker threads, processors
(levels, exception info, a redaction step), and the stdlib logging bridge."""

import asyncio
import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor

import structlog


def redact(logger, method, event_dict):
    if "card" in event_dict:
        event_dict["card"] = "****" + event_dict["card"][-4:]
    return event_dict


def configure(out):
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
                    redact, structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer(sort_keys=True)],
        logger_factory=structlog.PrintLoggerFactory(out), cache_logger_on_first_use=False)


async def task(log, n):
    structlog.contextvars.bind_contextvars(task=n)
    await asyncio.sleep(0)
    log.info("task done", square=n * n)


async def tasks(log, n):
    await asyncio.gather(*(task(log, i) for i in range(n)))


def handler(event, context):
    out = io.StringIO()
    configure(out)
    log = structlog.get_logger()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=event["request_id"])
    log.info("start", card="4111111111111111")
    asyncio.run(tasks(log, event["tasks"]))
    with ThreadPoolExecutor(2) as ex:
        ctx = structlog.contextvars.get_contextvars()
        list(ex.map(lambda i: structlog.get_logger().bind(**ctx).warning("thread", i=i),
                    range(3)))
    try:
        int("not a number")
    except ValueError:
        log.exception("failed")
    std = io.StringIO()
    handler_ = logging.StreamHandler(std)
    handler_.setFormatter(structlog.stdlib.ProcessorFormatter(
        processor=structlog.processors.JSONRenderer(sort_keys=True),
        foreign_pre_chain=[structlog.stdlib.add_log_level]))
    stdlib_logger = logging.getLogger("corpus.std")
    stdlib_logger.addHandler(handler_)
    stdlib_logger.warning("from the stdlib %s", "logger")
    stdlib_logger.removeHandler(handler_)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    structlog.reset_defaults()
    return {"events": [r["event"] for r in records], "card": records[0]["card"],
            "tasks_with_id": sum(1 for r in records if "task" in r and "request_id" in r),
            "levels": sorted({r["level"] for r in records}),
            "exception": records[-1]["exception"].splitlines()[-1],
            "stdlib": json.loads(std.getvalue())}
