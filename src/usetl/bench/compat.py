"""Compatibility: which stdlib modules and packages import and pass a smoke test in a USF.

Each module's check imports it and runs a few lines that exercise its
C parts where it has them (sqlite3 runs SQL on a file in the guest's tmpfs,
zlib and hashlib compress and hash, decimal computes exactly); the check
prints "ok" only if every assertion held. The same checks run in a host
process beside it, so a module missing on both is told apart from a module
the USF cannot run. Packages that are not in the image (numpy) come from the
module store: installed once on the host with pip and shown to the guest
read-only, as the platform shows a function its requirements.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from usetl.bench.config import BenchConfig
from usetl.bench.envs import host_python
from usetl.libos.hostfs import HostDirFS
from usetl.usf import Usf, UsfConfig, start_usf

# Packages the image does not carry: installed through the module store.
FROM_STORE = {"numpy": "numpy"}
# Set before the import: the guest has no threads, so BLAS must not start any.
PRELUDE = {"numpy": 'import os\nos.environ["OPENBLAS_NUM_THREADS"] = "1"\n'}

SMOKE = {
    "json": 'assert json.loads(json.dumps({"a": [1, 2.5, None]})) == {"a": [1, 2.5, None]}',
    "csv": 'import io\nrows = list(csv.reader(io.StringIO("a,b\\n1,2\\n")))\n'
           'assert rows == [["a", "b"], ["1", "2"]]',
    "sqlite3": 'import os, tempfile\npath = tempfile.mktemp(suffix=".db", dir="/tmp")\n'
               'db = sqlite3.connect(path)\n'
               'db.execute("create table t (x integer)")\n'
               'db.executemany("insert into t values (?)", [(i,) for i in range(100)])\n'
               'db.commit()\nassert db.execute("select sum(x) from t").fetchone()[0] == 4950\n'
               'db.close()\nos.remove(path)',
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


def check_code(module: str, paths: list[str], libraries: list[str]) -> str:
    """The check; `libraries` are the store's copies of system libraries, loaded first
    (as the platform does) so that ld.so finds them by soname."""
    path = f"import sys\nsys.path[:0] = {paths!r}\n" if paths else ""
    load = ("import ctypes\n"
            f"for lib in {libraries!r}:\n    ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)\n"
            if libraries else "")
    return (f"{path}{PRELUDE.get(module, '')}{load}import {module}\n"
            f"{SMOKE.get(module, 'pass')}\nprint('ok')")


def preloads(paths: list[Path], shown_as: list[str]) -> list[str]:
    """System libraries the module store copied beside the packages, in load order."""
    from usetl.image.modstore import PRELOAD as ORDER
    from usetl.image.modstore import SYSLIBS

    found = []
    for host_dir, seen_at in zip(paths, shown_as, strict=True):
        order = host_dir / SYSLIBS / ORDER
        if order.is_file():
            found += [f"{seen_at}/{SYSLIBS}/{name}" for name in order.read_text().split()]
    return found


def store_paths(module: str) -> list[Path]:
    """The module store's directories for a package the image lacks (installed if missing)."""
    if module not in FROM_STORE:
        return []
    from usetl.image.modstore import ModuleStore

    return ModuleStore().install([FROM_STORE[module]])


def verdict(ok: bool, error: str) -> dict:
    return {"ok": ok, "error": "" if ok else error[:300]}


def in_host(module: str, paths: list[Path]) -> dict:
    code = check_code(module, [str(p) for p in paths],
                      preloads(paths, [str(p) for p in paths]))
    done = subprocess.run([host_python(), "-I", "-S", "-c", code],
                          capture_output=True, text=True, cwd="/tmp")
    err = done.stderr.strip().splitlines()
    return verdict(done.stdout.strip() == "ok", err[-1] if err else f"exit {done.returncode}")


def run(cfg: BenchConfig, ctx) -> dict:
    usf: Usf | None = None
    modules: dict[str, dict] = {}
    mounted: list[str] = []
    try:
        for module in cfg.compat_modules:
            ctx.say(module)
            if usf is None or not usf.alive:
                if usf is not None:
                    usf.close()
                usf = start_usf(ctx.image, UsfConfig(mem_mib=cfg.usf_mem_mib))
                mounted = []
            try:
                paths = store_paths(module)
            except Exception as e:  # the module store's failure is this module's verdict
                failed = verdict(False, f"module store: {e}")
                modules[module] = {"usf": failed | {"ms": 0.0}, "host": failed,
                                   "source": "module store"}
                continue
            mounts = []
            for i, path in enumerate(paths):
                usf.kernel.ns.mount(f"store{len(mounted) + i}", HostDirFS(str(path)))
                mounts.append(f"/store{len(mounted) + i}")
            mounted.extend(mounts)
            t0 = time.perf_counter()
            result = usf.run_code(check_code(module, mounts, preloads(paths, mounts)),
                                  timeout=60)
            ms = round((time.perf_counter() - t0) * 1e3, 1)
            error = ""
            if result.error:
                # A long message (numpy's) ends with its cause: keep the last line.
                lines = [ln for ln in result.error.message.splitlines() if ln.strip()]
                error = f"{result.error.type}: {lines[-1].strip() if lines else ''}"
            modules[module] = {
                "usf": verdict(result.stdout.strip() == "ok", error) | {"ms": ms},
                "host": in_host(module, paths),
                "source": "module store" if paths else "image",
            }
    finally:
        if usf is not None:
            usf.close()
    passed = sum(m["usf"]["ok"] for m in modules.values())
    host_passed = sum(m["host"]["ok"] for m in modules.values())
    return {"modules": modules, "usf_passed": passed, "host_passed": host_passed,
            "total": len(modules)}
