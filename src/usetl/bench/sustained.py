"""`usetl bench platform`: sustained invocations per second and latency, side by side.

For each backend (KVM, process), API (HTTP through a `usetl serve` process,
Python through a `Platform` object in this process) and function (a no-op;
the demo ETL function, which downloads a CSV from a local HTTP server with
etl.get, aggregates it and posts JSON back): deploy, then `clients` threads
invoke back to back for `warmup_s` untimed seconds (the pool grows to the
concurrency it sees), then for `seconds` timed ones. Each invocation is
timed from request to result; throughput is completed invocations over the
timed window. A serial pass (one client) gives the warm latency.

Beside them, in the same run: the same load client against a bare ASGI
endpoint on the API's own server stack (bench/asgi_ceiling.py: the ceiling
of the HTTP path), and, for the KVM backend, a clone of the no-op's
function template invoked after each rollback (the recycled request the
platform's path is built around), so the API's costs are ratios to both.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from usetl import abi
from usetl.api.client import Client
from usetl.api.demo import EXAMPLE, DataServer, sales_csv
from usetl.api.launcher import SRC, ServerProcess, free_port
from usetl.bench.stats import summary
from usetl.errors import UsetlError
from usetl.image.modstore import ModuleStore
from usetl.platform.backends import choose_backend
from usetl.platform.service import DeployRequest, Platform

NOOP = "def handler(event, context):\n    return event\n"


class LoadClient:
    """One load client's keep-alive HTTP/1.1 connection (http.client), POSTing JSON with the
    bearer token. With httpx's Client (the API client's) the load measured its own client:
    against the bare endpoint, one client took 1.2-6 ms a request with it, 0.5-0.6 ms with
    this one (a raw socket: 0.17 ms), and 8 clients got 145-326 /s with it, 860-1,380 /s
    with this one (2-core host, load 5-6)."""

    def __init__(self, url: str, token: str):
        where = urlsplit(url)
        self.connection = http.client.HTTPConnection(where.hostname, where.port)
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

    def post(self, path: str, body: bytes) -> Any:
        """The answer's JSON; RuntimeError for a status other than 200."""
        try:
            self.connection.request("POST", path, body=body, headers=self.headers)
            response = self.connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()  # the next request connects again
            raise
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
        return json.loads(data)

    def invoke(self, name: str, event: Any) -> dict:
        return self.post(f"/v1/functions/{name}/invoke", json.dumps(event).encode())


def each_thread(make: Callable[[], LoadClient]) -> Callable[[], LoadClient]:
    """The calling thread's own client, made on its first call."""
    local = threading.local()

    def client() -> LoadClient:
        if not hasattr(local, "client"):
            local.client = make()
        return local.client

    return client


def drive(call: Callable[[], Any], clients: int, seconds: float) -> dict:
    """`clients` threads calling back to back for `seconds`; latency and throughput."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client() -> None:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                call()
            except Exception as e:  # counted and reported; the load goes on
                with lock:
                    errors.append(f"{type(e).__name__}: {e}"[:200])
                continue
            with lock:
                latencies.append((time.perf_counter() - t0) * 1e3)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if not latencies:
        raise RuntimeError(f"every invocation failed: {errors[:1]}")
    return {"per_second": round(len(latencies) / wall, 1), "ms": summary(latencies),
            "errors": len(errors), "first_error": errors[0] if errors else ""}


def checked(record: dict) -> dict:
    if record["status"] != "succeeded":
        raise RuntimeError(f"{record['error']['type']}: {record['error']['message']}")
    return record


def measure(invoke: Callable[[], dict], clients: int, seconds: float, warmup_s: float) -> dict:
    call = lambda: checked(invoke())  # noqa: E731
    drive(call, clients, warmup_s)
    loaded = drive(call, clients, seconds)
    serial = drive(call, 1, min(seconds, 3.0))
    return {"load": loaded, "serial_ms": serial["ms"]}


def functions(data: DataServer) -> dict[str, tuple[str, dict, Any]]:
    """name -> (files, deploy options, event)."""
    noop = {"fn.py": base64.b64encode(NOOP.encode()).decode()}
    etl = {EXAMPLE.name: base64.b64encode(EXAMPLE.read_bytes()).decode()}
    event = {"source": data.base + "/sales.csv", "sink": data.base + "/totals",
             "min_amount": 250}
    return {
        "noop": (noop, {"handler": "fn.py:handler"}, 1),
        "etl": (etl, {"handler": f"{EXAMPLE.name}:handler", "allow": [data.base + "/"]}, event),
    }


def run_http(backend: str, root: Path, data: DataServer, clients: int, seconds: float,
             warmup_s: float, say: Callable[[str], None]) -> dict:
    out = {}
    with ServerProcess(root / "state", root / "modules", backend) as server:
        admin = Client(server.url, server.admin_token)
        client = each_thread(lambda: LoadClient(server.url, server.admin_token))
        for name, (files, options, event) in functions(data).items():
            admin.request("PUT", f"/v1/functions/{name}",
                          json={"files": files, "concurrency": clients, **options})
            say(f"HTTP API, {backend} backend, {name}")
            out[name] = measure(lambda n=name, e=event: client().invoke(n, e), clients,
                                seconds, warmup_s)
        admin.close()
    return out


def run_python(backend: str, root: Path, data: DataServer, clients: int, seconds: float,
               warmup_s: float, say: Callable[[str], None]) -> dict:
    out = {}
    modules = ModuleStore(root / "modules")
    platform = Platform(choose_backend(backend, hide=[root]), root / "state", modules)
    try:
        tenant, _ = platform.registry.add_tenant("bench")
        for name, (files, options, event) in functions(data).items():
            platform.deploy(tenant, name, DeployRequest(
                files=files, requirements=[], concurrency=clients, **options))
            say(f"Python API, {backend} backend, {name}")
            out[name] = measure(lambda n=name, e=event: platform.invoke(tenant, n, e), clients,
                                seconds, warmup_s)
    finally:
        platform.close()
    return out


@contextmanager
def ceiling_server(timeout: float = 30.0) -> Iterator[str]:
    """A bare ASGI endpoint (bench/asgi_ceiling.py) on a free port; yields its URL."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)}
    process = subprocess.Popen([sys.executable, "-m", "usetl.bench.asgi_ceiling", str(port)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.post(url, timeout=1)
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise UsetlError("the ASGI ceiling server did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait()


def run_ceiling(clients: int, seconds: float, warmup_s: float) -> dict:
    """The same load client against the bare endpoint: what the server stack allows."""
    with ceiling_server() as url:
        client = each_thread(lambda: LoadClient(url, "bench"))
        return measure(lambda: client().post("/", b"1"), clients, seconds, warmup_s)


def run_recycled(runs: int = 200) -> dict:
    """The no-op in a clone of its function template, rolled back before each invocation:
    request to result (ms) from this process."""
    from usetl.hyperfork import Template

    with Template.start() as base, base.load_function(
            {"kind": abi.LOAD, "source": NOOP, "filename": "fn.py", "handler": "handler"}
    ) as template, template.fork() as clone:
        samples = []
        for _ in range(runs):
            clone.rollback()
            t0 = time.perf_counter()
            result = clone.invoke(1)
            samples.append((time.perf_counter() - t0) * 1e3)
            if result.error is not None:
                raise RuntimeError(f"{result.error.type}: {result.error.message}")
    return {"ms": summary(samples)}


def _side_by_side(backends: list[str], clients: int, seconds: float, warmup_s: float,
                  say: Callable[[str], None]) -> dict:
    """The ceiling and (with the KVM backend) the recycled request, each ok or failed."""
    series: dict = {}
    jobs = [("http/ceiling", "bare ASGI endpoint", lambda: run_ceiling(clients, seconds,
                                                                         warmup_s))]
    if "kvm" in backends:
        jobs.append(("recycled/kvm/noop", "recycled no-op in a clone", run_recycled))
    for key, label, job in jobs:
        say(label)
        try:
            series[key] = job()
        except Exception as e:  # a failed series is a result, with its reason
            series[key] = {"failed": f"{type(e).__name__}: {e}"}
    return series


def run(backends: list[str], clients: int = 8, seconds: float = 5.0, warmup_s: float = 2.0,
        say: Callable[[str], None] = lambda message: None) -> dict:
    data = DataServer(sales_csv())
    results: dict = {"clients": clients, "seconds": seconds, "warmup_s": warmup_s,
                     "series": _side_by_side(backends, clients, seconds, warmup_s, say)}
    try:
        for backend in backends:
            for api, runner in (("http", run_http), ("python", run_python)):
                root = Path(tempfile.mkdtemp(prefix="usetl-bench-platform-"))
                try:
                    for name, numbers in runner(backend, root, data, clients, seconds,
                                                warmup_s, say).items():
                        results["series"][f"{api}/{backend}/{name}"] = numbers
                except Exception as e:  # a failed series is a result, with its reason
                    results["series"][f"{api}/{backend}"] = {"failed": f"{type(e).__name__}: {e}"}
                finally:
                    shutil.rmtree(root, ignore_errors=True)
    finally:
        data.close()
    return results


def format_report(results: dict) -> str:
    lines = [f"{results['clients']} clients, {results['seconds']:g} s after "
             f"{results['warmup_s']:g} s of warm-up; serial = one client",
             f"{'API/backend/function':24} {'per s':>7} {'median':>8} {'p99':>8} "
             f"{'serial median':>14} {'errors':>6}"]
    for key, v in results["series"].items():
        if "failed" in v:
            lines.append(f"{key:24} failed: {v['failed']}")
            continue
        if "load" not in v:  # the recycled request: one caller, back to back
            lines.append(f"{key:24} {'':>7} {v['ms']['median']:>6.2f}ms "
                         f"{v['ms']['p99']:>6.2f}ms")
            continue
        load = v["load"]
        lines.append(f"{key:24} {load['per_second']:>7.1f} {load['ms']['median']:>6.2f}ms "
                     f"{load['ms']['p99']:>6.2f}ms {v['serial_ms']['median']:>12.2f}ms "
                     f"{load['errors']:>6}")
    return "\n".join(lines)
