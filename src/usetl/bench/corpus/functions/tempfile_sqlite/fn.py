"""tempfile and sqlite3 in /tmp: a database made, indexed, queried in transactions, backed
up and dumped, in a temporary directory removed at the end."""

import os
import random
import sqlite3
import tempfile


def handler(event, context):
    rng = random.Random(event["seed"])
    with tempfile.TemporaryDirectory(prefix="corpus-") as tmp:
        db = sqlite3.connect(os.path.join(tmp, "sales.db"))
        db.execute("create table sales (id integer primary key, region text, amount real)")
        with db:
            db.executemany("insert into sales (region, amount) values (?, ?)",
                           [(rng.choice("NSEW"), rng.randint(1, 10000) / 100)
                            for _ in range(event["rows"])])
        db.execute("create index by_region on sales (region)")
        try:
            with db:
                db.execute("delete from sales")
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        totals = db.execute("select region, count(*), round(sum(amount), 2) from sales "
                            "group by region order by region").fetchall()
        backup = sqlite3.connect(os.path.join(tmp, "backup.db"))
        db.backup(backup)
        dumped = sum(1 for _ in backup.iterdump())
        with tempfile.NamedTemporaryFile("w+", dir=tmp, suffix=".csv") as f:
            for row in db.execute("select * from sales order by id limit 5"):
                f.write(",".join(map(str, row)) + "\n")
            f.flush()
            f.seek(0)
            head = f.read().splitlines()
        fd, spare = tempfile.mkstemp(dir=tmp)
        os.close(fd)
        db.close()
        backup.close()
        left = sorted(os.listdir(tmp))
    return {"totals": totals, "dump_lines": dumped, "head": head,
            "left": [n for n in left if n != os.path.basename(spare)],
            "removed": not os.path.exists(tmp)}
