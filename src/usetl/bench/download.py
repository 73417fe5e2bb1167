"""Download (the paper's Figure 5): fetch N MiB from a local HTTP server, four ways.

(a) etl.get inside a USF: the host streams the body into the USF's host region;
(b) urllib inside a USF, over the socket compatibility path (one exit per call);
(c) a host client writing to /dev/shm; (d) a host client writing to disk, with
fsync. Every path is timed by the program that downloads, from the request to
the last byte in place (inside the guest for (a) and (b)), and checks the size.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from usetl.bench.config import BenchConfig
from usetl.bench.errors import BenchError, FeatureMissing
from usetl.bench.stats import summary
from usetl.etl.policy import UrlPolicy
from usetl.image import ImageArchive, cache_root
from usetl.usf import Usf, UsfConfig, start_usf

MIB = 1 << 20
COPY_CHUNK = 1 << 20

GUEST_ETL = """import time
from usetl import etl
t0 = time.perf_counter()
f = etl.get({url!r})
elapsed = time.perf_counter() - t0
print(elapsed, f.size)
"""

GUEST_URLLIB = """import time, urllib.request
t0 = time.perf_counter()
buf = bytearray({size})
view = memoryview(buf)
got = 0
with urllib.request.urlopen({url!r}) as r:
    while True:
        n = r.readinto(view[got:got + {chunk}])
        if not n:
            break
        got += n
elapsed = time.perf_counter() - t0
print(elapsed, got)
"""


class Server:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "usetl.bench.httpserver"], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.base = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"

    def url(self, size: int) -> str:
        return f"{self.base}/bytes/{size}"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def host_download(url: str, path: Path, size: int, sync: bool) -> float:
    t0 = time.perf_counter()
    got = 0
    with urllib.request.urlopen(url) as r, open(path, "wb") as out:
        buf = bytearray(COPY_CHUNK)
        while n := r.readinto(buf):
            out.write(memoryview(buf)[:n])
            got += n
        if sync:
            out.flush()
            os.fsync(out.fileno())
    elapsed = time.perf_counter() - t0
    path.unlink()
    if got != size:
        raise BenchError(f"host download got {got} bytes, expected {size}")
    return elapsed


def network_usf(image: ImageArchive, server: Server, mem_mib: int, region_mib: int) -> Usf:
    """A USF allowed to fetch from the local server (the ETL channel's URL policy)."""
    try:
        config = UsfConfig(mem_mib=mem_mib, allow=[server.base + "/"], allow_private=True,
                           host_region_mib=region_mib)
    except TypeError as e:
        raise FeatureMissing(f"the ETL channel (issue 3) has not landed: {e}") from e
    usf = start_usf(image, config)
    # The socket path obeys the same URL policy (set on the kernel, as the socket tests do).
    usf.kernel.allow_sockets(UrlPolicy(list(config.allow), config.allow_private))
    return usf


def guest_download(usf: Usf, code: str, size: int) -> float:
    result = usf.run_code(code, timeout=600)
    if result.error:
        raise BenchError(f"{result.error.type}: {result.error.message}")
    elapsed, got = result.stdout.split()
    if int(got) != size:
        raise BenchError(f"guest download got {got} bytes, expected {size}")
    return float(elapsed)


def run(cfg: BenchConfig, ctx) -> dict:
    server = Server()
    scratch = cache_root() / "bench" / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    # The urllib path holds the body in guest RAM; etl.get in the host region.
    usf_mem = max(cfg.usf_mem_mib, 2 * max(cfg.download_sizes_mib) + 256)
    region_mib = max(cfg.download_sizes_mib) + 64
    usfs: dict[str, Usf] = {}

    def in_usf(kind: str, template: str) -> Callable[[str, int], float]:
        def fetch(url: str, size: int) -> float:
            if kind not in usfs:
                usfs[kind] = network_usf(ctx.image, server, usf_mem, region_mib)
            code = template.format(url=url, size=size, chunk=COPY_CHUNK)
            return guest_download(usfs[kind], code, size)
        return fetch

    paths: list[tuple[str, str, Callable[[str, int], float]]] = [
        ("usf_etl", "etl.get in a USF", in_usf("etl", GUEST_ETL)),
        ("usf_socket", "urllib in a USF (socket path)", in_usf("socket", GUEST_URLLIB)),
        ("host_shm", "host to /dev/shm",
         lambda url, size: host_download(url, Path("/dev/shm/usetl-bench-download"), size,
                                         False)),
        ("host_disk", "host to disk (fsync)",
         lambda url, size: host_download(url, scratch / "download", size, True)),
    ]

    def one(fetch: Callable[[str, int], float], label: str) -> dict:
        points = []
        for mib in cfg.download_sizes_mib:
            url, size = server.url(mib * MIB), mib * MIB
            fetch(url, size)  # warm-up: connection set-up, first-touch of buffers
            samples = []
            for i in range(cfg.download_runs):
                ctx.say(f"{label}: {mib} MiB, run {i + 1}/{cfg.download_runs}")
                samples.append(fetch(url, size) * 1e3)
            points.append({"mib": mib, "ms": summary(samples),
                           "mib_per_s": round(mib / (sum(samples) / len(samples) / 1e3), 1)})
        return {"points": points}

    try:
        series = {name: ctx.attempt(label, lambda fetch=fetch, label=label: one(fetch, label))
                  for name, label, fetch in paths}
    finally:
        for usf in usfs.values():
            usf.close()
        server.close()
    return {"series": series}
