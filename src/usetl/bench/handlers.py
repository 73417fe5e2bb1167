"""`usetl bench handlers`: realistic ETL handlers in USFs and in host processes, side by side.

The handlers are in etl_functions/, written for this benchmark: a Pillow thumbnail of a
1-megapixel JPEG, a pandas group-by over a 10 MB CSV and a JSON reshaping of orders, each
fetched from a local HTTP server (etl.get in a USF, urllib on the host); a Jinja2 HTML
render; a numpy 512x512 matmul; a boto3 get_object against moto's S3-compatible server.
Each is measured four ways in one run:

- USF warm: deployed on the platform (KVM backend, its requirements from the module
  store; with its event as the deploy's warm-up where the handler does lazy work on its
  first call), then invoked through the pool, each call on a recycled (rolled-back)
  instance: the monitor's time from request to reply, and the pool's wall time around it;
- USF new clone: a clone forked from the function's template and invoked once (fork, first
  touches and the call);
- USF warm without a warm-up, for handlers that have one: the same deploy without it, so
  the template generation the platform learned from its calls' imports serves (if any);
- host warm: the handler's second and later calls in one host process;
- host cold: a new host process that imports the handler and calls it once (start to exit).

Warm calls of the USF and of the host alternate, so that both see the same machine load.
Host processes run with one BLAS thread, as a USF does.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from usetl.api.launcher import free_port
from usetl.bench.config import BenchConfig
from usetl.bench.errors import BenchError
from usetl.bench.stats import summary

FUNCTIONS = Path(__file__).resolve().parent / "etl_functions"
SHARED_FILES = ("fetch.py",)  # in every function's files
# Goals (issue 12): USF warm median at most this many times the host warm median; a new
# clone at most the host's cold start.
WARM_GOAL = 1.5
CLONE_GOAL = 1.0
HANDLER_TIMEOUT_S = 120.0
ONE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Handler:
    name: str
    label: str
    requirements: tuple[str, ...]
    warmup: bool  # deployed with its event as the warm-up (it does lazy work on a first call)
    memory_mib: int = 512
    files: tuple[str, ...] = ()  # more files of the function's, besides its module name.py


HANDLERS = [
    Handler("thumbnail", "Pillow thumbnail of a 1-megapixel JPEG (etl.get)", ("pillow",), True),
    Handler("groupby", "pandas group-by over a 10 MB CSV (etl.get)", ("pandas",), True, 1024),
    Handler("reshape", "JSON reshaping of 5,000 orders (etl.get)", (), False),
    Handler("render", "Jinja2 HTML render of 200 rows", ("jinja2",), True,
            files=("report.html",)),
    Handler("matmul", "numpy 512x512 matmul", ("numpy",), True),
    Handler("s3get", "boto3 get_object of 1 MiB from moto's S3 server", ("boto3",), True),
]


# -- inputs -------------------------------------------------------------------------


def jpeg_1mp() -> bytes:
    """A 1000x1000 JPEG with a photograph's mix of smooth areas and detail."""
    from PIL import Image

    size = (1000, 1000)
    fractal = Image.effect_mandelbrot(size, (-2.0, -1.25, 0.75, 1.25), 64)
    noise = Image.effect_noise(size, 40)
    gradient = Image.linear_gradient("L").resize(size)
    image = Image.merge("RGB", (fractal, gradient, noise))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def sales_csv(target_bytes: int = 10 << 20, seed: int = 12) -> bytes:
    rng = random.Random(seed)
    regions = ["north", "south", "east", "west", "central"]
    products = [f"p{i:03d}" for i in range(40)]
    lines = ["order_id,date,region,product,quantity,amount"]
    size = len(lines[0])
    i = 0
    while size < target_bytes:
        line = (f"{i},2026-{1 + i % 12:02d}-{1 + i % 28:02d},{rng.choice(regions)},"
                f"{rng.choice(products)},{rng.randint(-1, 20)},{rng.uniform(1, 2000):.2f}")
        lines.append(line)
        size += len(line) + 1
        i += 1
    return ("\n".join(lines) + "\n").encode()


def orders_json(count: int = 5000, seed: int = 13) -> bytes:
    rng = random.Random(seed)
    countries = ["de", "fr", "us", "jp", "br", "in", "ng", "au"]
    orders = [{"id": i, "customer": {"id": rng.randrange(3000), "country": rng.choice(countries),
                                     "name": f"customer {i % 977}"},
               "items": [{"sku": f"sku-{rng.randrange(500)}", "qty": rng.randint(1, 5),
                          "price": round(rng.uniform(1, 300), 2)}
                         for _ in range(rng.randint(1, 5))]}
              for i in range(count)]
    return json.dumps(orders).encode()


def report_rows(count: int = 200, seed: int = 14) -> list[dict]:
    rng = random.Random(seed)
    return [{"customer": f"customer {rng.randrange(1000)}", "amount": round(rng.uniform(1, 999), 2),
             "region": rng.choice(["north", "south", "east", "west"])} for _ in range(count)]


def _wait_listening(port: int, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"{what} did not start listening on port {port}")
        time.sleep(0.05)


class Inputs:
    """The handlers' data: files on a local HTTP server and an object in moto's S3 server,
    each a process of its own; events per handler; what the functions may reach."""

    BUCKET, KEY = "bench", "object.bin"

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="usetl-handlers-")
        root = Path(self.dir.name)
        (root / "photo.jpg").write_bytes(jpeg_1mp())
        (root / "sales.csv").write_bytes(sales_csv())
        (root / "orders.json").write_bytes(orders_json())
        self.procs: list[subprocess.Popen] = []
        self.http = self._serve([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                                 "--directory", str(root)], "the HTTP server")
        self.s3 = self._serve([sys.executable, "-m", "moto.server", "-H", "127.0.0.1"],
                              "moto's S3 server", port_flag="-p")
        self._put_object()
        self.allow = [self.http + "/", self.s3 + "/"]
        self.env = {"S3_ENDPOINT": self.s3}

    def _serve(self, command: list[str], what: str, port_flag: str | None = None) -> str:
        port = free_port()
        command = [*command, port_flag, str(port)] if port_flag else [*command, str(port)]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        _wait_listening(port, proc, what)
        return f"http://127.0.0.1:{port}"

    def _put_object(self) -> None:
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.s3, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
        s3.create_bucket(Bucket=self.BUCKET)
        s3.put_object(Bucket=self.BUCKET, Key=self.KEY, Body=random.Random(15).randbytes(1 << 20))

    def event(self, handler: Handler) -> Any:
        return {
            "thumbnail": {"url": f"{self.http}/photo.jpg", "size": 128},
            "groupby": {"url": f"{self.http}/sales.csv", "top": 5},
            "reshape": {"url": f"{self.http}/orders.json", "top": 10},
            "render": {"title": "Sales report", "rows": report_rows()},
            "matmul": {"seed": 7, "n": 512},
            "s3get": {"bucket": self.BUCKET, "key": self.KEY},
        }[handler.name]

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.wait(30)
        self.dir.cleanup()


# -- the host baseline ----------------------------------------------------------------

# Runs in a plain host process (python -I -S: no site, no usetl): imports the handler, then
# calls it once per event line on stdin, answering each with its time, CPU time and value.
HOST_WORKER = r"""
import json, sys, time
sys.path[:0] = json.loads(sys.argv[1])
handler = __import__(sys.argv[2]).handler
for line in sys.stdin:
    t, cpu = time.perf_counter(), time.process_time()
    value = handler(json.loads(line), None)
    print(json.dumps({"ms": (time.perf_counter() - t) * 1e3,
                      "cpu_ms": (time.process_time() - cpu) * 1e3, "value": value}), flush=True)
"""


class HostProcess:
    """The handler in a host process of its own, with the benchmark's installed packages."""

    def __init__(self, handler: Handler, env: dict[str, str]):
        paths = [str(FUNCTIONS), sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", HOST_WORKER, json.dumps(paths), handler.name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=FUNCTIONS,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **ONE_BLAS_THREAD, **env},
        )

    def call(self, event: Any) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(event) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError(f"the host process died (exit status {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(60)


def host_cold_ms(handler: Handler, event: Any, env: dict[str, str]) -> tuple[float, Any]:
    """A new process: interpreter start, imports, one call, exit."""
    t0 = time.perf_counter()
    host = HostProcess(handler, env)
    value = host.call(event)["value"]
    status = host.close()
    ms = (time.perf_counter() - t0) * 1e3
    if status != 0:
        raise BenchError(f"the host process of {handler.name} exited with {status}")
    return ms, value


# -- the USF side -----------------------------------------------------------------------


class UsfSide:
    """The handlers deployed on a platform in this process, on the KVM backend."""

    def __init__(self, state_dir: Path):
        from usetl.image.modstore import ModuleStore
        from usetl.platform.kvm_backend import KvmBackend
        from usetl.platform.pool import PoolConfig
        from usetl.platform.service import Platform

        # Templates stay in memory while the run lasts; instances are never idle long.
        config = PoolConfig(memory_budget_bytes=16 << 30, idle_s=3600)
        self.platform = Platform(KvmBackend(), state_dir, ModuleStore(), config)
        self.tenant, _ = self.platform.registry.add_tenant("bench")
        self.learn_after = config.learn_after

    def deploy(self, handler: Handler, inputs: Inputs, warmup: bool) -> Any:
        """The handler as a function of its own; with `warmup`, its event is the warm-up."""
        from usetl.platform.service import DeployRequest

        names = (f"{handler.name}.py", *SHARED_FILES, *handler.files)
        files = {n: base64.b64encode((FUNCTIONS / n).read_bytes()).decode() for n in names}
        request = DeployRequest(
            handler=f"{handler.name}.py:handler", files=files,
            requirements=list(handler.requirements), memory_mib=handler.memory_mib,
            timeout_s=HANDLER_TIMEOUT_S, allow=inputs.allow, env=inputs.env,
            warmup=inputs.event(handler) if warmup else None,
        )
        name = handler.name if warmup else f"{handler.name}-learned"
        return self.platform.deploy(self.tenant, name, request).version

    def call(self, version: Any, event: Any) -> tuple[float, Any]:
        """One invocation on a recycled instance: the pool's wall time and the result."""
        from usetl.invocation import invocation_context

        context = invocation_context(version.memory_mib, version.timeout_s)
        t0 = time.perf_counter()
        result = self.platform.pool.invoke(version.key, event, context)
        wall_ms = (time.perf_counter() - t0) * 1e3
        _check(result, version.name)
        return wall_ms, result

    def status(self, version: Any) -> dict:
        return next(s for s in self.platform.pool.status() if s["function"] == version.key)

    def settle(self, version: Any) -> dict:
        """Wait for a learned generation being built (its calls import what it learns)."""
        deadline = time.monotonic() + 300
        while (status := self.status(version))["learning"]:
            if time.monotonic() > deadline:
                raise BenchError(f"the next generation of {version.name} took over 300 s")
            time.sleep(0.05)
        return status

    def new_clone(self, version: Any, event: Any) -> float:
        """Fork a clone of the function's template and invoke it once: milliseconds."""
        from usetl.invocation import invocation_context

        template = self.platform.pool.pools[version.key].template
        if template is None:
            raise BenchError(f"the template of {version.name} was evicted")
        context = invocation_context(version.memory_mib, version.timeout_s)
        t0 = time.perf_counter()
        instance = template.fork()
        result = instance.invoke(event, context, version.timeout_s)
        ms = (time.perf_counter() - t0) * 1e3
        instance.close()
        _check(result, version.name)
        return ms

    def close(self) -> None:
        self.platform.close()


def _check(result: Any, name: str) -> None:
    if result.error is not None:
        raise BenchError(f"{name} failed in the USF: {result.error.type}: "
                         f"{result.error.message}\n{result.error.traceback[-2000:]}")


# -- the experiment ---------------------------------------------------------------------


@dataclass(frozen=True)
class Runs:
    warm: int = 10  # timed warm calls per side
    clones: int = 3  # new clones, each invoked once
    colds: int = 3  # new host processes


class UsfSeries:
    """A deployed version's timed warm calls: the monitor's and the pool's times, syscalls."""

    def __init__(self, usf: UsfSide, version: Any):
        self.usf, self.version = usf, version
        self.monitor: list[float] = []
        self.wall: list[float] = []
        self.syscalls: list[int] = []
        self.syscall_ms: list[float] = []
        self.cpu: list[float] = []
        self.value: Any = None

    def prepare(self, event: Any) -> dict:
        """Untimed calls, enough for a learned generation if the calls import lazily."""
        for _ in range(self.usf.learn_after + 1):
            self.usf.call(self.version, event)
        return self.usf.settle(self.version)

    def call(self, event: Any) -> None:
        ms, result = self.usf.call(self.version, event)
        self.monitor.append(result.total_ms)
        self.wall.append(ms)
        self.syscalls.append(result.syscalls)
        self.syscall_ms.append(result.syscall_ms)
        # The host's CPU for the call: the vCPU thread's (guest and monitor) and the I/O
        # done for it elsewhere (etl.get's download by the egress broker).
        self.cpu.append(result.guest_cpu_ms + result.io.host_cpu_s * 1e3)
        self.value = result.value

    def numbers(self, status: dict, host_warm: list[float], host_cpu: list[float]) -> dict:
        return {"ms": summary(self.monitor), "platform_ms": summary(self.wall),
                "generation": status["generation"], "learned": status["learned"],
                "syscalls_per_call": statistics.median(self.syscalls),
                "syscall_ms_per_call": round(statistics.median(self.syscall_ms), 3),
                "cpu_ms": summary(self.cpu),
                "ratio": round(statistics.median(self.monitor) / statistics.median(host_warm),
                               3),
                "cpu_ratio": round(statistics.median(self.cpu) / statistics.median(host_cpu),
                                   3)}


def measure(handler: Handler, inputs: Inputs, usf: UsfSide, runs: Runs,
            say: Callable[[str], None]) -> dict:
    """The ways of running one handler, side by side; without a warm-up too where it has one
    (then the platform's learned template generation is what serves)."""
    event = inputs.event(handler)
    say(f"{handler.name}: deploying (requirements from the module store)")
    kinds = [True, False] if handler.warmup else [False]
    series = {warm: UsfSeries(usf, usf.deploy(handler, inputs, warm)) for warm in kinds}
    host = HostProcess(handler, inputs.env)
    try:
        host_value = host.call(event)["value"]  # its first call, untimed
        say(f"{handler.name}: untimed calls")
        statuses = {warm: s.prepare(event) for warm, s in series.items()}
        host_warm, host_cpu = [], []
        for i in range(runs.warm):
            say(f"{handler.name}: warm call {i + 1}/{runs.warm}")
            timed = host.call(event)
            host_warm.append(timed["ms"])
            host_cpu.append(timed["cpu_ms"])
            for s in series.values():
                s.call(event)
    finally:
        host.close()
    say(f"{handler.name}: new clones and new host processes")
    best = series[handler.warmup]
    clones = [usf.new_clone(best.version, event) for _ in range(runs.clones)]
    colds = [host_cold_ms(handler, event, inputs.env)[0] for _ in range(runs.colds)]
    usf_warm = best.numbers(statuses[handler.warmup], host_warm, host_cpu)
    clone_ratio = statistics.median(clones) / statistics.median(colds)
    return {
        "label": handler.label, "requirements": list(handler.requirements),
        "warmup": handler.warmup,
        "same_result": all(s.value == host_value for s in series.values()),
        "usf_warm": usf_warm,
        "usf_no_warmup": (series[False].numbers(statuses[False], host_warm, host_cpu)
                          if handler.warmup else None),
        "usf_clone_ms": summary(clones), "host_warm_ms": summary(host_warm),
        "host_warm_cpu_ms": summary(host_cpu), "warm_cpu_ratio": usf_warm["cpu_ratio"],
        "host_cold_ms": summary(colds),
        "warm_ratio": usf_warm["ratio"], "clone_ratio": round(clone_ratio, 3),
        "warm_goal_met": usf_warm["ratio"] <= WARM_GOAL,
        "clone_goal_met": clone_ratio <= CLONE_GOAL,
    }


def run(runs: Runs, only: list[str] | None = None,
        say: Callable[[str], None] = lambda _: None) -> dict:
    chosen = [h for h in HANDLERS if only is None or h.name in only]
    if not chosen:
        raise BenchError(f"no handler named {only}; there are {[h.name for h in HANDLERS]}")
    inputs = Inputs()
    state = tempfile.TemporaryDirectory(prefix="usetl-handlers-state-")
    usf = UsfSide(Path(state.name))
    try:
        measured = {h.name: measure(h, inputs, usf, runs, say) for h in chosen}
    finally:
        usf.close()
        inputs.close()
        state.cleanup()
    return {
        "runs": {"warm": runs.warm, "clones": runs.clones, "colds": runs.colds},
        "goals": {"warm_ratio_at_most": WARM_GOAL, "clone_ratio_at_most": CLONE_GOAL},
        "worst_warm_ratio": max(m["warm_ratio"] for m in measured.values()),
        "worst_clone_ratio": max(m["clone_ratio"] for m in measured.values()),
        "handlers": measured,
    }


def format_report(result: dict) -> str:
    """The table, medians in milliseconds, and what each ratio is against its goal."""
    lines = [
        "| handler | USF warm (platform) | host warm | ratio | CPU: USF, host, ratio | without "
        "warm-up: USF warm, generation | USF new clone | host cold | ratio | syscalls/call |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in result["handlers"].items():
        warm, learned = m["usf_warm"], m["usf_no_warmup"]
        flags = ["" if m[goal] else " (missed)" for goal in ("warm_goal_met", "clone_goal_met")]
        plain = "same: no warm-up" if learned is None else (
            f"{learned['ms']['median']:.1f} ({learned['ratio']:.2f}x), "
            f"gen {learned['generation']}")
        lines.append(
            f"| {name}: {m['label']}{' (warm-up)' if m['warmup'] else ''} "
            f"| {warm['ms']['median']:.1f} ({warm['platform_ms']['median']:.1f}) "
            f"| {m['host_warm_ms']['median']:.1f} | {m['warm_ratio']:.2f}x{flags[0]} "
            f"| {warm['cpu_ms']['median']:.1f}, {m['host_warm_cpu_ms']['median']:.1f}, "
            f"{m['warm_cpu_ratio']:.2f}x | {plain} "
            f"| {m['usf_clone_ms']['median']:.1f} | {m['host_cold_ms']['median']:.0f} "
            f"| {m['clone_ratio']:.2f}x{flags[1]} | {warm['syscalls_per_call']:.0f} |")
    lines.append("")
    lines.append(
        f"Medians in ms. Goals: USF warm at most {WARM_GOAL:g}x host warm; a new clone at most "
        "the host's cold start. USF warm is the monitor's request-to-reply time on a "
        "rolled-back instance (the pool's wall time in brackets), for a deploy with the "
        "handler's event as its warm-up where marked; without one, the template generation "
        "the platform learned from the calls' imports serves (gen 1: nothing learned). CPU: "
        "the host CPU time of a warm call (the USF's vCPU thread, guest and monitor, with the "
        "I/O done for it elsewhere; the host process's), which a loaded machine moves less.")
    return "\n".join(lines)


def run_experiment(cfg: BenchConfig, ctx: Any) -> dict:
    """`usetl bench all`'s handlers experiment, with the run's configured counts."""
    runs = Runs(warm=cfg.handlers_runs, clones=cfg.handlers_clones, colds=cfg.handlers_colds)
    return run(runs, say=ctx.say)
