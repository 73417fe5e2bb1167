"""The platform under load: invocations per second and latency, HTTP and Python API.

For each backend (KVM, process) and each API (HTTP through a `usetl serve`
process on 127.0.0.1, Python through a `Platform` object in this process),
two functions are deployed, a no-op and the demo ETL function (get a CSV
from an HTTP server on 127.0.0.1 through the ETL API, filter and aggregate
it, post the JSON result back), and invoked by
`load_concurrency` clients back to back, `load_requests` times, after
untimed warm-ups. Each invocation is timed from the request to its result;
throughput is completed invocations over the wall time of the whole run.
"""

from __future__ import annotations

import base64
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from usetl.bench.config import BenchConfig
from usetl.bench.download import Server
from usetl.bench.errors import BenchError, FeatureMissing
from usetl.bench.stats import summary

NOOP = "def handler(event, context):\n    return None\n"
# The demo ETL function: extract a CSV over the ETL API, transform, load JSON back.
ETL = '''import csv, io, json

from usetl import etl


def handler(event, context):
    rows = csv.DictReader(io.StringIO(etl.get(event["source"]).text()))
    totals = {}
    for row in rows:
        if int(row["qty"]) > 2:
            totals[row["city"]] = totals.get(row["city"], 0) + int(row["qty"])
    result = {"cities": len(totals), "total": sum(totals.values())}
    if etl.post(event["sink"], json.dumps(result)).status != 200:
        raise RuntimeError("the sink refused the result")
    return result
'''
CSV_ROWS = 500
ETL_RESULT = {"cities": 5, "total": sum(i % 7 for i in range(CSV_ROWS) if i % 7 > 2)}
FUNCTION_LABELS = {"noop": "no-op", "etl": "ETL (get CSV, aggregate, post JSON)"}


def functions(server: Server) -> dict[str, tuple[str, Any, Any, list[str]]]:
    """name -> (source, event, expected result, URL allow-list)."""
    etl_event = {"source": f"{server.base}/csv/{CSV_ROWS}", "sink": f"{server.base}/sink"}
    return {"noop": (NOOP, {}, None, []),
            "etl": (ETL, etl_event, ETL_RESULT, [server.base + "/"])}


def platform_modules() -> Any:
    try:
        from usetl.api.client import Client
        from usetl.platform.backends import choose_backend
        from usetl.platform.pool import PoolConfig
        from usetl.platform.service import DeployRequest, Platform
    except ImportError as e:
        raise FeatureMissing(f"the platform (issue 5) has not landed: {e}") from e
    return Client, choose_backend, PoolConfig, DeployRequest, Platform


def load(call: Callable[[], None], requests: int, concurrency: int) -> dict:
    """Run `requests` calls from `concurrency` threads; latency and throughput."""
    latencies: list[float] = []
    errors: list[str] = []
    remaining = iter(range(requests))
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                if next(remaining, None) is None:
                    return
            t0 = time.perf_counter()
            try:
                call()
            except Exception as e:  # counted and reported, the load goes on
                with lock:
                    errors.append(f"{type(e).__name__}: {e}"[:200])
                continue
            with lock:
                latencies.append((time.perf_counter() - t0) * 1e3)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if not latencies:
        raise BenchError(f"every invocation failed: {errors[0] if errors else 'no calls'}")
    return {"ms": summary(latencies), "per_second": round(len(latencies) / wall, 1),
            "errors": len(errors), "first_error": errors[0] if errors else ""}


def checked(record: dict, expected: Any) -> None:
    if record.get("status") != "succeeded" or record.get("result") != expected:
        raise BenchError(f"invocation {record.get('status')}: {record.get('error') or record}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def http_platform(backend: str, root: Path) -> Iterator[Callable[[], Any]]:
    """A `usetl serve` process; yields a factory of authenticated clients."""
    client_cls = platform_modules()[0]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "usetl", "serve", "--backend", backend, "--port", str(port),
         "--state", str(root / "state"), "--modules", str(root / "modules")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        token_file = root / "state" / "admin.token"
        while True:
            if proc.poll() is not None:
                raise BenchError(f"usetl serve exited: {proc.stdout.read()[-500:]}")
            if token_file.exists():
                try:
                    client = client_cls(url, token_file.read_text().strip(), timeout=60)
                    client.request("GET", "/healthz")
                    client.close()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
            if time.monotonic() > deadline:
                raise BenchError("usetl serve did not answer /healthz within 60 s")
            time.sleep(0.1)
        yield lambda: client_cls(url, token_file.read_text().strip(), timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_http(cfg: BenchConfig, backend: str, fn: tuple, root: Path, say) -> dict:
    name, (source, event, expected, allow) = fn
    with http_platform(backend, root) as make_client:
        admin = make_client()
        files = {"fn.py": base64.b64encode(source.encode()).decode()}
        admin.request("PUT", f"/v1/functions/{name}",
                      json={"handler": "fn.py:handler", "files": files, "requirements": [],
                            "allow": allow})
        for _ in range(cfg.warmups):
            checked(admin.invoke(name, event), expected)
        local = threading.local()

        def call() -> None:
            if not hasattr(local, "client"):
                local.client = make_client()
            checked(local.client.invoke(name, event), expected)

        say(f"HTTP, {backend}, {name}: {cfg.load_requests} invocations")
        result = load(call, cfg.load_requests, cfg.load_concurrency)
        admin.close()
        return result


def run_python(cfg: BenchConfig, backend: str, fn: tuple, root: Path, say) -> dict:
    _, choose_backend, pool_config, deploy_request, platform_cls = platform_modules()
    from usetl.image.modstore import ModuleStore

    name, (source, event, expected, allow) = fn
    modules = ModuleStore(root / "modules")
    platform = platform_cls(
        choose_backend(backend, hide=[root / "state", modules.root.parent]),
        root / "state", modules, pool_config(),
    )
    try:
        tenant, _ = platform.registry.add_tenant("bench")
        files = {"fn.py": base64.b64encode(source.encode()).decode()}
        platform.deploy(tenant, name, deploy_request(handler="fn.py:handler", files=files,
                                                     requirements=[], allow=allow))
        for _ in range(cfg.warmups):
            checked(platform.invoke(tenant, name, event), expected)
        say(f"Python API, {backend}, {name}: {cfg.load_requests} invocations")
        return load(lambda: checked(platform.invoke(tenant, name, event), expected),
                    cfg.load_requests, cfg.load_concurrency)
    finally:
        platform.close()


def run(cfg: BenchConfig, ctx) -> dict:
    platform_modules()
    server = Server()
    series = {}
    try:
        for api, runner, api_label in (("http", run_http, "HTTP"),
                                       ("python", run_python, "Python")):
            for backend in ("kvm", "process"):
                for fn in functions(server).items():
                    label = f"{api_label} API, {backend} backend, {FUNCTION_LABELS[fn[0]]}"

                    def one(runner=runner, backend=backend, fn=fn) -> dict:
                        # Not under the cache: the process backend hides it from sandboxes.
                        root = Path(tempfile.mkdtemp(prefix="usetl-bench-platform-"))
                        try:
                            return runner(cfg, backend, fn, root, ctx.say)
                        finally:
                            shutil.rmtree(root, ignore_errors=True)

                    series[f"{api}_{backend}_{fn[0]}"] = ctx.attempt(label, one)
    finally:
        server.close()
    return {"series": series}


