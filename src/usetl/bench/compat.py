"""Compatibility: which stdlib modules and packages import and pass a smoke test in a USF.

Each module's check imports it and runs a few lines that exercise its
C parts where it has them (sqlite3 runs SQL on a file in the guest's tmpfs,
zlib and hashlib compress and hash, decimal computes exactly); the check
prints "ok" only if every assertion held. The same checks run in a host
process beside it, so a module missing on both is told apart from a module
the USF cannot run.
"""

from __future__ import annotations

import subprocess
import time

from usetl.bench.config import BenchConfig
from usetl.bench.envs import host_python
from usetl.usf import Usf, UsfConfig

SMOKE = {
    "json": 'assert json.loads(json.dumps({"a": [1, 2.5, None]})) == {"a": [1, 2.5, None]}',
    "csv": 'import io\nrows = list(csv.reader(io.StringIO("a,b\\n1,2\\n")))\n'
           'assert rows == [["a", "b"], ["1", "2"]]',
    "sqlite3": 'db = sqlite3.connect("/tmp/compat.db")\n'
               'db.execute("create table t (x integer)")\n'
               'db.executemany("insert into t values (?)", [(i,) for i in range(100)])\n'
               'db.commit()\nassert db.execute("select sum(x) from t").fetchone()[0] == 4950',
    "re": 'assert re.sub(r"(\\d+)", r"<\\1>", "a1b22") == "a<1>b<22>"',
    "decimal": 'assert decimal.Decimal("0.1") + decimal.Decimal("0.2") == decimal.Decimal("0.3")',
    "zlib": 'data = b"usetl" * 1000\nassert zlib.decompress(zlib.compress(data)) == data',
    "hashlib": 'assert hashlib.sha256(b"abc").hexdigest().startswith("ba7816bf")',
    "datetime": 'd = datetime.date(2024, 2, 28) + datetime.timedelta(days=1)\n'
                'assert d.isoformat() == "2024-02-29"',
    "statistics": "assert statistics.median([3, 1, 2]) == 2",
    "collections": 'assert collections.Counter("abca")["a"] == 2',
    "itertools": "assert list(itertools.islice(itertools.count(5), 3)) == [5, 6, 7]",
    "random": "r = random.random()\nassert 0 <= r < 1",
    "uuid": "assert uuid.uuid4().version == 4",
    "struct": 'assert struct.unpack("<IH", struct.pack("<IH", 7, 9)) == (7, 9)',
    "base64": 'assert base64.b64decode(base64.b64encode(b"usetl")) == b"usetl"',
    "gzip": 'assert gzip.decompress(gzip.compress(b"x" * 999)) == b"x" * 999',
    "urllib.parse": 'assert urllib.parse.urlparse("http://h/p?q=1").query == "q=1"',
    "xml.etree.ElementTree": 'root = xml.etree.ElementTree.fromstring("<a><b>t</b></a>")\n'
                             'assert root.find("b").text == "t"',
    "numpy": "a = numpy.arange(12).reshape(3, 4)\nassert int((a @ a.T).trace()) == 506",
}


def check_code(module: str) -> str:
    return f"import {module}\n{SMOKE.get(module, 'pass')}\nprint('ok')"


def verdict(ok: bool, error: str) -> dict:
    return {"ok": ok, "error": "" if ok else error[:300]}


def in_host(module: str) -> dict:
    done = subprocess.run([host_python(), "-I", "-S", "-c", check_code(module)],
                          capture_output=True, text=True, cwd="/tmp")
    err = done.stderr.strip().splitlines()
    return verdict(done.stdout.strip() == "ok", err[-1] if err else f"exit {done.returncode}")


def run(cfg: BenchConfig, ctx) -> dict:
    usf: Usf | None = None
    modules = {}
    try:
        for module in cfg.compat_modules:
            ctx.say(module)
            if usf is None or not usf.alive:
                if usf is not None:
                    usf.close()
                usf = Usf(ctx.image, UsfConfig(mem_mib=cfg.usf_mem_mib))
                usf.start()
            t0 = time.perf_counter()
            result = usf.run_code(check_code(module), timeout=60)
            ms = round((time.perf_counter() - t0) * 1e3, 1)
            error = f"{result.error['type']}: {result.error['message']}" if result.error else ""
            modules[module] = {
                "usf": verdict(result.stdout.strip() == "ok", error) | {"ms": ms},
                "host": in_host(module),
            }
    finally:
        if usf is not None:
            usf.close()
    passed = sum(m["usf"]["ok"] for m in modules.values())
    host_passed = sum(m["host"]["ok"] for m in modules.values())
    return {"modules": modules, "usf_passed": passed, "host_passed": host_passed,
            "total": len(modules)}
