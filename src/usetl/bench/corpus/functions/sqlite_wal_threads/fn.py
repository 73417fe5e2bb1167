"""sqlite3 as concurrent handlers use it: a WAL database in /tmp written by one thread
while reader threads query their own connections (busy_timeout, snapshot isolation), a
named in-memory database shared between connections by URI, a read-only URI, user
functions and aggregates, incremental blob I/O, a checkpoint and an online backup with
progress."""

import os
import sqlite3
import tempfile
import threading


class Median:
    def __init__(self):
        self.values = []

    def step(self, v):
        self.values.append(v)

    def finalize(self):
        s = sorted(self.values)
        return s[len(s) // 2] if s else None


def writer(path, rows, done):
    db = sqlite3.connect(path, timeout=30)
    for start in range(0, rows, 100):
        with db:
            db.executemany("insert into events (n, body) values (?, ?)",
                           [(i, f"event {i}") for i in range(start, min(rows, start + 100))])
    db.close()
    done.set()


def reader(path, done, seen):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    counts = []
    while True:
        finished = done.is_set()
        counts.append(db.execute("select count(*) from events").fetchone()[0])
        if finished:
            break
    seen.append(counts == sorted(counts))
    db.close()


def handler(event, context):
    out = {}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "events.db")
        db = sqlite3.connect(path, isolation_level=None)
        out["journal"] = db.execute("pragma journal_mode=wal").fetchone()[0]
        db.execute("pragma busy_timeout=30000")
        db.execute("create table events (id integer primary key, n integer, body text)")
        done, seen = threading.Event(), []
        threads = [threading.Thread(target=writer, args=(path, event["rows"], done))]
        threads += [threading.Thread(target=reader, args=(path, done, seen)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out["monotonic_readers"] = seen
        out["rows"] = db.execute("select count(*), sum(n) from events").fetchone()
        out["wal_exists"] = os.path.exists(path + "-wal")
        out["checkpoint"] = db.execute("pragma wal_checkpoint(truncate)").fetchone()[0]
        db.create_function("rev", 1, lambda s: s[::-1], deterministic=True)
        db.create_aggregate("median", 1, Median)
        out["udf"] = db.execute("select rev(body), median(n) from events where n < 9").fetchone()
        db.execute("create table blobs (id integer primary key, data blob)")
        db.execute("insert into blobs (data) values (zeroblob(65536))")
        with db.blobopen("blobs", "data", 1) as blob:
            blob.seek(1000)
            blob.write(b"inside the blob")
            blob.seek(1000)
            out["blob"] = blob.read(15).decode()
        steps = []
        memory = sqlite3.connect(":memory:")
        db.backup(memory, pages=2, progress=lambda status, remaining, total: steps.append(total))
        out["backup"] = [memory.execute("select count(*) from events").fetchone()[0],
                         len(steps) > 1]
        memory.close()
        db.close()
    shared = "file:corpus-mem?mode=memory&cache=shared"
    first = sqlite3.connect(shared, uri=True)
    first.execute("create table kv (k text primary key, v text)")
    first.execute("insert into kv values ('a', '1')")
    first.commit()
    second = sqlite3.connect(shared, uri=True)
    out["shared_memory"] = second.execute("select v from kv where k = 'a'").fetchone()[0]
    second.close()
    first.close()
    try:
        sqlite3.connect("file:/tmp/no-such-dir/x.db?mode=ro", uri=True)
        out["missing_ro"] = "opened"
    except sqlite3.OperationalError as e:
        out["missing_ro"] = str(e)
    return out
