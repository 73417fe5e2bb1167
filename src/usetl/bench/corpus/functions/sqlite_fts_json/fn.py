"""SQLite's extensions as search and reporting handlers use them: an FTS5 index with bm25
ranking, highlight and prefix queries, JSON1 (json_extract, json_each, json_group_array,
json_patch), window functions, a recursive CTE, UPSERT with RETURNING, generated columns,
and a database serialized to bytes and back."""

import json
import random
import sqlite3

WORDS = ("serverless function cold start latency memory snapshot virtual machine python "
         "monitor syscall page fault network socket thread process").split()


def build(db, docs, seed):
    rng = random.Random(seed)
    db.execute("create virtual table docs using fts5(title, body, tokenize='porter')")
    db.execute("create table events (id integer primary key, payload text, "
               "kind text generated always as (json_extract(payload, '$.kind')) virtual)")
    for i in range(docs):
        body = " ".join(rng.choice(WORDS) for _ in range(30))
        db.execute("insert into docs values (?, ?)", (f"doc {i}", body))
        payload = {"kind": rng.choice(["click", "view", "buy"]), "user": rng.randrange(8),
                   "amount": rng.randrange(1, 100), "tags": rng.sample(WORDS, 2)}
        db.execute("insert into events (payload) values (?)", (json.dumps(payload),))


def search(db):
    ranked = db.execute("select title, round(bm25(docs), 4) from docs where docs match "
                        "'snapshot AND memory' order by bm25(docs), rowid limit 3").fetchall()
    hl = db.execute("select highlight(docs, 1, '[', ']') from docs where docs match "
                    "'sysc*' order by rowid limit 1").fetchone()[0]
    count = db.execute("select count(*) from docs where docs match 'NEAR(cold start, 2)'"
                       ).fetchone()[0]
    stemmed = db.execute("select count(*) from docs where docs match 'threads'").fetchone()[0]
    return {"ranked": ranked, "highlight": hl[:80], "near": count, "stemmed": stemmed}


def json_queries(db):
    per_kind = db.execute("select kind, count(*), sum(json_extract(payload, '$.amount')) "
                          "from events group by kind order by kind").fetchall()
    tags = db.execute("select value, count(*) from events, json_each(events.payload, '$.tags') "
                      "group by value order by 2 desc, 1 limit 3").fetchall()
    grouped = db.execute("select json_group_array(id) from (select id from events where "
                         "kind = 'buy' order by id limit 4)").fetchone()[0]
    patched = db.execute("select json_patch(payload, '{\"amount\": null, \"ok\": true}') "
                         "from events where id = 1").fetchone()[0]
    return {"per_kind": per_kind, "tags": tags, "grouped": json.loads(grouped),
            "patched": json.loads(patched)}


def windows(db):
    running = db.execute(
        "select id, json_extract(payload, '$.user') as u, sum(json_extract(payload, "
        "'$.amount')) over (partition by json_extract(payload, '$.user') order by id) from "
        "events order by id limit 6").fetchall()
    ranks = db.execute(
        "select u, total, rank() over (order by total desc) from (select "
        "json_extract(payload, '$.user') as u, sum(json_extract(payload, '$.amount')) as total "
        "from events group by u) order by 3, 1 limit 3").fetchall()
    fib = db.execute("with recursive f(n, a, b) as (select 1, 0, 1 union all select n + 1, b, "
                     "a + b from f where n < 20) select group_concat(a) from f").fetchone()[0]
    return {"running": running, "ranks": ranks, "fib": fib.split(",")[-3:]}


def upsert(db):
    db.execute("create table counters (name text primary key, hits integer)")
    returned = []
    for name in ["a", "b", "a", "a", "c", "b"]:
        returned.append(db.execute(
            "insert into counters values (?, 1) on conflict(name) do update set "
            "hits = hits + 1 returning name, hits", (name,)).fetchone())
    return returned


def handler(event, context):
    db = sqlite3.connect(":memory:")
    build(db, event["docs"], event["seed"])
    db.commit()
    out = {"version_ok": sqlite3.sqlite_version_info >= (3, 35), "search": search(db),
           "json": json_queries(db), "windows": windows(db), "upsert": upsert(db)}
    image = db.serialize()
    copy = sqlite3.connect(":memory:")
    copy.deserialize(image)
    out["copy"] = copy.execute("select count(*) from docs where docs match 'python'"
                               ).fetchone()[0]
    return out
