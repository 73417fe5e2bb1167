"""Import time of real packages: a fresh USF against a fresh host process, side by side.

Each package is installed through the module store, as a deployed function's
requirement is, and imported once by a handler in a fresh USF set up as the
KVM backend sets up a function (the same entry module, code at /code, entries
at /m0, /m1, ...). Two ways, in one run: "directories", the entries as host
directories (every import a storm of stat/open/read syscalls, each a VM
exit), and "importer", the entries packed and imported from the module
region (usetl.importer). The host process imports the same directories with
`python -I -S`, its pycs cached (the store's directories hold none, so the
"directories" way compiles every module in the guest, as functions did before
the importer). Times are the import statement's, measured inside each.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from usetl.image import ImageArchive, cache_root
from usetl.image.modstore import ModuleStore, packed
from usetl.platform.backend import FunctionSpec
from usetl.platform.kvm_backend import ENTRY, entry_source
from usetl.usf import UsfConfig, start_usf

from .errors import BenchError

# (module imported, requirement): the list.
PACKAGES = [("pandas", "pandas"), ("boto3", "boto3"), ("numpy", "numpy"),
            ("sklearn", "scikit-learn"), ("PIL.Image", "pillow")]
MEM_MIB = 512
HANDLER = '''import importlib, sys, time
def handler(event, context):
    before = len(sys.modules)
    t0 = time.perf_counter()
    importlib.import_module(event["module"])
    return {"ms": (time.perf_counter() - t0) * 1e3, "modules": len(sys.modules) - before}
'''
HOST = '''import importlib, json, sys, time
sys.path[:0] = {dirs!r}
before = len(sys.modules)
t0 = time.perf_counter()
importlib.import_module({module!r})
print(json.dumps({{"ms": (time.perf_counter() - t0) * 1e3,
                  "modules": len(sys.modules) - before}}))
'''
# Syscalls that look a path up or open a file: the import storm's.
PATH_SYSCALLS = ("stat", "lstat", "newfstatat", "statx", "open", "openat", "access",
                 "readlink", "getdents64")


def host_import(module: str, dirs: list[Path], pycache: Path) -> dict:
    """Import in a new host process; its pycs in `pycache` (the store's entries hold none)."""
    code = HOST.format(dirs=[str(d) for d in dirs], module=module)
    done = subprocess.run([sys._base_executable, "-I", "-S", "-X", f"pycache_prefix={pycache}",
                           "-c", code], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise BenchError(f"import {module} failed on the host: {done.stderr[-500:]}")
    return json.loads(done.stdout)


def usf_import(image: ImageArchive, module: str, code_dir: Path, dirs: list[Path],
               packed_mounts: bool, trace: bool = False) -> dict:
    """Import `module` once in a fresh USF set up as the KVM backend sets up a function.

    `trace`: count syscalls by name too (the monitor's trace: not in timed runs).
    """
    spec = FunctionSpec(key="bench", code_dir=code_dir, handler="main.py:handler",
                        module_dirs=dirs, memory_mib=MEM_MIB)
    mounts = [f"/m{i}" for i in range(len(dirs))]
    usf = start_usf(image, UsfConfig(mem_mib=MEM_MIB, trace=trace))
    try:
        names = ["code", *(m[1:] for m in mounts)]
        for name, directory in zip(names, [code_dir, *dirs], strict=True):
            usf.mount(name, str(packed(directory) if packed_mounts else directory))
        loaded = usf.invoke({"kind": "load", "source": entry_source(spec, mounts),
                             "filename": ENTRY, "handler": "handler"}, timeout=600)
        if not loaded.ok:
            raise BenchError(f"loading the handler failed: {loaded.error}")
        stats = usf.kernel.stats
        count, by_name = stats.count, dict(stats.by_name)
        after = {n: dict(c) for n, c in stats.after.items()}
        traced = len(usf.kernel.trace or ())
        result = usf.call({"module": module}, timeout=600)
        if not result.ok:
            raise BenchError(f"import {module} failed in the USF: {result.error}")
        calls = {n: c - by_name.get(n, 0) for n, c in stats.by_name.items()
                 if c > by_name.get(n, 0)}
        out = {**result.value, "syscalls": stats.count - count, "by_name": calls,
               "path_syscalls": sum(calls.get(n, 0) for n in PATH_SYSCALLS)}
        if not trace:
            return out
        monitor_ms: dict[str, float] = {}
        for record in usf.kernel.trace[traced:]:
            monitor_ms[record.name] = monitor_ms.get(record.name, 0.0) + record.micros / 1e3
        return {**out, **_causes(stats.after, after),
                "monitor_ms": {n: round(ms, 1) for n, ms in sorted(monitor_ms.items(),
                                                                     key=lambda kv: -kv[1])}}
    finally:
        usf.close()


def _causes(now: dict, before: dict) -> dict:
    """First touches (KVM's fixed page faults) and the exits that are not syscalls, by what
    the guest ran after: the syscall before them (mmap: the pages it filled; brk: the heap)."""
    causes: dict[str, dict[str, int]] = {}
    for name, counts in now.items():
        then = before.get(name, {})
        delta = {k: v - then.get(k, 0) for k, v in counts.items() if v != then.get(k, 0)}
        if delta:
            causes[name] = delta
    return {"first_touches": sum(c.get("pf_fixed", 0) for c in causes.values()),
            "other_exits": sum(c.get("exits", 0) for c in causes.values()),
            "after": dict(sorted(causes.items(), key=lambda kv: -kv[1].get("pf_fixed", 0)))}


def _median(rows: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in rows), 2)


def run_package(image: ImageArchive, module: str, requirement: str, runs: int,
                store: ModuleStore, say: Callable[[str], None]) -> dict:
    dirs = store.install([requirement])
    with tempfile.TemporaryDirectory(prefix="usetl-bench-imports-") as tmp:
        code_dir = Path(tmp) / "code"
        code_dir.mkdir()
        (code_dir / "main.py").write_text(HANDLER)
        rows: dict[str, list[dict]] = {"host": [], "directories": [], "importer": []}
        pycache = cache_root() / "bench" / "pycache"
        host_import(module, dirs, pycache)  # compiles what the host has no pyc of yet
        say(f"import {module}: syscalls by name")
        counted = {way: usf_import(image, module, code_dir, dirs, way == "importer", trace=True)
                   for way in ("directories", "importer")}
        for i in range(runs):  # interleaved, so that a noisy moment hits every way alike
            say(f"import {module} ({i + 1}/{runs})")
            rows["host"].append(host_import(module, dirs, pycache))
            rows["directories"].append(usf_import(image, module, code_dir, dirs, False))
            rows["importer"].append(usf_import(image, module, code_dir, dirs, True))
    out: dict = {"requirement": requirement, "entries": len(dirs),
                 "modules": rows["host"][0]["modules"]}
    for way, found in rows.items():
        out[way] = {"ms": _median(found, "ms"), "modules": found[0]["modules"]}
        if way != "host":
            traced = counted[way]
            out[way].update(syscalls=_median(found, "syscalls"),
                            path_syscalls=traced["path_syscalls"], by_name=traced["by_name"],
                            first_touches=traced["first_touches"],
                            other_exits=traced["other_exits"], after=traced["after"],
                            monitor_ms=traced["monitor_ms"])
    host_ms = out["host"]["ms"]
    out["ratio_directories"] = round(out["directories"]["ms"] / host_ms, 2)
    out["ratio"] = round(out["importer"]["ms"] / host_ms, 2)
    return out


def run(image: ImageArchive, runs: int = 3, packages: list[str] | None = None,
        say: Callable[[str], None] | None = None) -> dict:
    say = say or (lambda msg: None)
    chosen = [p for p in PACKAGES if packages is None or p[0] in packages]
    if not chosen:
        raise BenchError(f"no such package; choose from {[p[0] for p in PACKAGES]}")
    store = ModuleStore()
    return {"runs": runs, "packages": {module: run_package(image, module, requirement, runs,
                                                           store, say)
                                       for module, requirement in chosen}}


def format_report(result: dict) -> str:
    lines = [f"import in a fresh USF against a fresh host process (median of {result['runs']})",
             f"{'module':<10} {'host ms':>8} {'dirs ms':>8} {'imp ms':>8} {'imp/host':>8} "
             f"{'dirs/host':>9} {'dirs exits':>10} {'imp exits':>9} {'path: dirs':>10} "
             f"{'imp':>5} {'modules':>7}"]
    for module, r in result["packages"].items():
        d, m = r["directories"], r["importer"]
        lines.append(
            f"{module:<10} {r['host']['ms']:>8.1f} {d['ms']:>8.1f} {m['ms']:>8.1f} "
            f"{r['ratio']:>8.2f} {r['ratio_directories']:>9.2f} {d['syscalls']:>10.0f} "
            f"{m['syscalls']:>9.0f} {d['path_syscalls']:>10.0f} {m['path_syscalls']:>5.0f} "
            f"{m['modules']:>7}")
    lines.append("importer, traced: first touches (KVM-fixed page faults) and other exits, "
                 "by the syscall before them")
    for module, r in result["packages"].items():
        m = r["importer"]
        top = ", ".join(f"{name} {c.get('pf_fixed', 0)}/{c.get('exits', 0)}"
                        for name, c in list(m["after"].items())[:5])
        lines.append(f"{module:<10} {m['first_touches']:>7} touches, {m['other_exits']:>7} "
                     f"other exits; {top}")
    return "\n".join(lines)
