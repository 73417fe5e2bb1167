"""Each corpus function deployed as the platform deploys one (its requirements from the module
store, packed and imported from the module region, its code at /code; the KVM backend's entry
module), invoked in a fresh USF and in a host process of the same interpreter; a function
passes where both return the same value.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from usetl.api.launcher import free_port
from usetl.bench.corpus import Function, event_for
from usetl.image.archive import ImageArchive
from usetl.image.modstore import ModuleStore
from usetl.platform.backend import FunctionSpec
from usetl.platform.kvm_backend import ENTRY, entry_source, function_mounts
from usetl.usf import Usf, UsfConfig, start_usf

RESULT = "USETL-CORPUS-RESULT "
# The host side runs the handler as the entry module does in a USF: code and requirements
# first on sys.path (PYTHONPATH, so that child interpreters, joblib's workers, have them),
# one BLAS thread, the code directory as the working directory.
HOST_RUNNER = """
import json, os, sys
code, event = json.loads(sys.stdin.read())
os.chdir(code)
from fn import handler
print({marker!r} + json.dumps(handler(event, None)))
"""


@dataclass
class Outcome:
    name: str
    suite: str
    passed: bool
    detail: str  # why not, or ""
    usf_s: float = 0.0
    host_s: float = 0.0


def deploy(usf: Usf, code: Path, module_dirs: list[Path], timeout: float = 120) -> None:
    """Load `code`/fn.py:handler with the module store's `module_dirs`, as deployed."""
    spec = FunctionSpec(key="corpus", code_dir=code, handler="fn.py:handler",
                        module_dirs=module_dirs)
    mounts, module_mounts = function_mounts(spec)
    for name, archive in mounts.items():
        usf.mount(name, archive)
    loaded = usf.load_function("handler", source=entry_source(spec, module_mounts),
                               filename=ENTRY,
                               timeout=timeout)
    if loaded.error is not None:
        raise RuntimeError(f"load failed: {loaded.error}\n{loaded.stderr[-2000:]}")


@contextlib.contextmanager
def services(needed: set[str]) -> Iterator[dict[str, str]]:
    """The download server and moto's S3 server on 127.0.0.1, those `needed`."""
    from usetl.bench.download import Server

    with contextlib.ExitStack() as stack:
        urls = {}
        if "http" in needed:
            server = Server()
            stack.callback(server.close)
            urls["http"] = server.base
        if "s3" in needed:
            urls["s3"] = stack.enter_context(_moto())
        yield urls


@contextlib.contextmanager
def _moto() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto's server did not start (is moto[server] installed?)")
            time.sleep(0.1)  # polling a port that is not listening yet
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


def on_host(code: Path, module_dirs: list[Path], event: dict, timeout: float) -> object:
    """The handler's value in a host process (raises with its stderr's tail if it fails)."""
    # A USF's environment sets no locale (CPython coerces the C locale to C.UTF-8 and
    # turns on its UTF-8 mode), so neither does the host's.
    env = {k: v for k, v in os.environ.items() if k != "LANG" and not k.startswith("LC_")}
    env.update(PYTHONPATH=os.pathsep.join(map(str, [code, *module_dirs])),
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", HOST_RUNNER.format(marker=RESULT)],
        input=json.dumps([str(code), event]), env=env,
        capture_output=True, text=True, timeout=timeout)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])
    raise RuntimeError(f"host run failed (exit {done.returncode}): {done.stderr[-1500:]}")


def in_usf(image: ImageArchive, fn: Function, code: Path, module_dirs: list[Path],
           event: dict, urls: dict[str, str]) -> object:
    config = UsfConfig(mem_mib=fn.mem_mib, tmpfs_mib=128,
                       allow=tuple(url + "/" for url in urls.values()))
    with start_usf(image, config) as usf:
        deploy(usf, code, module_dirs, fn.timeout)
        r = usf.call(event, timeout=fn.timeout)
    if r.error is not None:
        raise RuntimeError(f"{r.error}\n{(r.stderr or '')[-1500:]}")
    return json.loads(json.dumps(r.value))


def run_one(image: ImageArchive, fn: Function, store: ModuleStore,
            urls: dict[str, str]) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="corpus-") as scratch:
        code = Path(scratch) / "code"  # packed beside itself, so not in the package
        shutil.copytree(fn.code_dir, code, ignore=shutil.ignore_patterns("__pycache__"))
        event = event_for(fn, urls)
        try:
            module_dirs = store.install(list(fn.requirements))
        except Exception as e:
            return Outcome(fn.name, fn.suite, False, f"install: {e}")
        t0 = time.perf_counter()
        try:
            want = on_host(code, module_dirs, event, fn.timeout)
        except Exception as e:
            return Outcome(fn.name, fn.suite, False, f"host: {e}")
        t1 = time.perf_counter()
        try:
            got = in_usf(image, fn, code, module_dirs, event, urls)
        except Exception as e:
            return Outcome(fn.name, fn.suite, False, f"usf: {e}", host_s=t1 - t0)
        t2 = time.perf_counter()
    detail = "" if got == want else f"differs: usf {got!r} host {want!r}"
    return Outcome(fn.name, fn.suite, not detail, detail, t2 - t1, t1 - t0)


def run(image: ImageArchive, functions: list[Function],
        say: Callable[[str], None] = print) -> list[Outcome]:
    store = ModuleStore()
    outcomes = []
    with services(set().union(*(f.needs() for f in functions))) as urls:
        for fn in functions:
            outcome = run_one(image, fn, store, urls)
            say(format_outcome(outcome))
            outcomes.append(outcome)
    return outcomes


def format_outcome(o: Outcome) -> str:
    first = o.detail.strip().splitlines()[-1][:300] if o.detail else ""
    verdict = "pass" if o.passed else "FAIL"
    return f"{verdict}  {o.name:20} {o.suite:15} usf {o.usf_s:6.2f} s  host {o.host_s:5.2f} s" + (
        f"  {first}" if first else "")


def format_summary(outcomes: list[Outcome]) -> str:
    passed = sum(o.passed for o in outcomes)
    return f"{passed}/{len(outcomes)} passed ({100 * passed / max(1, len(outcomes)):.0f}%)"
