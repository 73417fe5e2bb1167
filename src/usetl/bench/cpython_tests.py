"""CPython's own test modules, in a USF and on the host, side by side (`make compat`).

Each module runs with unittest in a fresh USF whose code mount is the
host's standard library directory (where CPython's `test` package is), and
in a host process of the same interpreter; the table compares what passed,
failed, errored and was skipped. A module the guest could not finish (an
abort, a fault, the timeout) says so instead of counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
from dataclasses import dataclass

from usetl.image.archive import ImageArchive
from usetl.libos.hostfs import HostDirFS
from usetl.usf import UsfConfig, start_usf

# The modules issue 11 names: threads, timed waits, asyncio, selectors, sockets, TLS,
# signals, files, and a few pure ones as a control.
MODULES = [
    "test.test_threading", "test.test_thread", "test.test_threading_local", "test.test_queue",
    "test.test_concurrent_futures", "test.test_asyncio.test_events",
    "test.test_asyncio.test_futures", "test.test_asyncio.test_locks",
    "test.test_asyncio.test_queues", "test.test_asyncio.test_tasks",
    "test.test_asyncio.test_streams", "test.test_select", "test.test_selectors",
    "test.test_epoll", "test.test_socket", "test.test_ssl", "test.test_signal", "test.test_os",
    "test.test_json", "test.test_re", "test.test_hashlib", "test.test_decimal",
    "test.test_zoneinfo",
]
# Test classes left out on both sides: on a host whose vsock module is loaded but has
# no transport, test_socket's VSOCK stream test blocks in accept() for ever (in a USF,
# with no AF_VSOCK, it is skipped).
LEFT_OUT = {"test.test_socket": ["ThreadedVSOCKSocketStreamTest"]}
MOUNT = "cpython"  # the guest sees the host's stdlib directory at /cpython
# What the tests import besides the image's stdlib, at the end of sys.path: the `test`
# package, and the `_test*` extension modules (_testcapi, ...) the image leaves out, from
# the host's lib-dynload. Programs the tests start (support.script_helper runs
# `python -I -c ...`, without the runner's sys.path) get them from a .pth file in the
# interpreter's site-packages, over the image, as the host's stdlib has them on its own.
EXTRA_PATHS = [f"/{MOUNT}", f"/{MOUNT}/lib-dynload"]
SITE_PTH = "usetl-cpython-tests.pth"
RUNNER = textwrap.dedent("""
    import io, json, os, sys, unittest
    sys.path += {paths!r}  # after the image's stdlib: only what it lacks comes from here
    os.chdir({cwd!r})
    def flat(suite):
        for t in suite:
            yield from flat(t) if isinstance(t, unittest.TestSuite) else [t]
    tests = unittest.defaultTestLoader.loadTestsFromName({name!r})
    suite = unittest.TestSuite(t for t in flat(tests)
                               if not any(c in t.id() for c in {left_out!r}))
    r = unittest.TextTestRunner(stream=io.StringIO(), verbosity=0).run(suite)
    print("USETL-RESULT " + json.dumps({{
        "run": r.testsRun, "failures": len(r.failures), "errors": len(r.errors),
        "skipped": len(r.skipped), "bad": [t.id() for t, _ in r.failures + r.errors][:30]}}))
""")


@dataclass
class Outcome:
    """One module's counts on one side, or why it has none."""

    run: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    bad: list[str] | None = None
    ended: str | None = None  # the module did not finish: abort, fault, timeout

    @property
    def passed(self) -> int:
        return self.run - self.failures - self.errors - self.skipped


def _parse(stdout: str) -> Outcome | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith("USETL-RESULT "):
            return Outcome(**json.loads(line[len("USETL-RESULT "):]))
    return None


def run_host(name: str, timeout: float) -> Outcome:
    with tempfile.TemporaryDirectory() as cwd:
        code = RUNNER.format(paths=[], cwd=cwd, name=name, left_out=LEFT_OUT.get(name, []))
        try:
            p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=timeout, cwd=cwd)
        except subprocess.TimeoutExpired:
            return Outcome(ended=f"timeout after {timeout:g} s")
    return _parse(p.stdout) or Outcome(ended=f"exit status {p.returncode}: {p.stderr[-300:]}")


def run_usf(name: str, timeout: float, image: ImageArchive | None = None) -> Outcome:
    site = sysconfig.get_path("purelib", vars={"base": sys.base_prefix,
                                               "platbase": sys.base_exec_prefix})
    with start_usf(image, UsfConfig(mem_mib=1024, start_timeout=120)) as usf:
        usf.kernel.ns.mount(MOUNT, HostDirFS(sysconfig.get_paths()["stdlib"]))
        usf.kernel.ns.put_file(f"{site}/{SITE_PTH}", "".join(f"{p}\n" for p in EXTRA_PATHS)
                               .encode())
        code = RUNNER.format(paths=EXTRA_PATHS, cwd="/tmp", name=name,
                             left_out=LEFT_OUT.get(name, []))
        result = usf.run_code(code, timeout=timeout)
    parsed = _parse(result.stdout)
    if parsed is not None:
        return parsed
    error = result.error
    why = f"{error.type}: {error.message.splitlines()[-1][:300]}" if error else "no result"
    return Outcome(ended=why)


def run(modules: list[str], timeout: float, say=print,
        image: ImageArchive | None = None) -> list[dict]:
    rows = []
    for i, name in enumerate(modules, 1):
        say(f"{name} ({i}/{len(modules)}): host")
        host = run_host(name, timeout)
        say(f"{name} ({i}/{len(modules)}): USF")
        usf = run_usf(name, timeout, image)
        rows.append({"module": name, "host": host.__dict__, "usf": usf.__dict__,
                     "host_passed": host.passed, "usf_passed": usf.passed})
    return rows


def _cell(side: dict, passed: int) -> str:
    if side["ended"]:
        return f"ended: {side['ended'][:60]}"
    return f"{passed}/{side['run']} pass, {side['failures']} fail, {side['errors']} err, " \
           f"{side['skipped']} skip"


def format_table(rows: list[dict]) -> str:
    lines = ["| module | host | USF | USF/host passed |", "| --- | --- | --- | --- |"]
    for r in rows:
        ratio = (f"{r['usf_passed'] / r['host_passed']:.0%}" if r["host_passed"] > 0
                 and not r["usf"]["ended"] else "-")
        lines.append(f"| {r['module'].removeprefix('test.')} | {_cell(r['host'], r['host_passed'])}"
                     f" | {_cell(r['usf'], r['usf_passed'])} | {ratio} |")
    return "\n".join(lines)
