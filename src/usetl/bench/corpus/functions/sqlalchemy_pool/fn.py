"""SQLAlchemy Core on a SQLite file in /tmp, shared by worker threads through a QueuePool
(pool size, overflow, a timeout when exhausted), with WAL journaling set on connect,
transactions with retries on a locked database, and pool events counted."""

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import QueuePool

metadata = MetaData()
jobs = Table("jobs", metadata, Column("id", Integer, primary_key=True),
             Column("worker", Integer), Column("label", String(40)))


def engine_for(path, size):
    engine = create_engine(f"sqlite:///{path}", poolclass=QueuePool, pool_size=size,
                           max_overflow=1, pool_timeout=0.5,
                           connect_args={"check_same_thread": False, "timeout": 10})
    counts = {"checkout": 0}

    @event.listens_for(engine, "connect")
    def on_connect(dbapi, record):
        dbapi.execute("PRAGMA journal_mode=WAL")

    @event.listens_for(engine, "checkout")
    def on_checkout(dbapi, record, proxy):
        counts["checkout"] += 1
    return engine, counts


def work(engine, worker, rows):
    for i in range(rows):
        for attempt in range(20):
            try:
                with engine.begin() as conn:
                    conn.execute(jobs.insert().values(worker=worker, label=f"w{worker}-{i}"))
                break
            except OperationalError:
                time.sleep(0.01 * (attempt + 1))  # backing off from a locked database
    with engine.connect() as conn:
        return conn.execute(select(func.count()).where(jobs.c.worker == worker)).scalar()


def handler(event, context):
    with tempfile.TemporaryDirectory() as d:
        engine, counts = engine_for(Path(d) / "jobs.db", event["pool"])
        metadata.create_all(engine)
        with ThreadPoolExecutor(event["threads"]) as ex:
            per_worker = list(ex.map(lambda w: work(engine, w, event["rows"]),
                                     range(event["threads"])))
        held = [engine.connect() for _ in range(event["pool"] + 1)]
        try:
            engine.connect()
            exhausted = False
        except PoolTimeout:
            exhausted = True
        for conn in held:
            conn.close()
        with engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(jobs)).scalar()
            mode = conn.execute(text("PRAGMA journal_mode")).scalar()
            distinct = conn.execute(select(func.count(jobs.c.label.distinct()))).scalar()
        engine.dispose()
    return {"per_worker": per_worker, "total": total, "distinct": distinct, "mode": mode,
            "exhausted": exhausted,
            "checked_out": counts["checkout"] >= event["threads"]}
