"""I/O overlap with guest threads: N etl.get calls one after another, then on N threads.

Each request goes to a local server that waits `delay_ms` before it answers
with `size_mib` MiB. Both series run in the same USF, in one guest program,
timed inside the guest. One after another, each request waits out its delay;
on threads, host threads serve the requests at once while the vCPU runs the
other guest threads, so the delays overlap.
"""

from __future__ import annotations

import json
import statistics

from usetl.bench.download import Server
from usetl.bench.errors import BenchError
from usetl.image import ImageArchive
from usetl.usf import UsfConfig, start_usf

GUEST = """import json, time
from concurrent.futures import ThreadPoolExecutor
from usetl import etl
urls = {urls!r}
def fetch(i, tag):
    return etl.get(urls[i], name=f"{{tag}}{{i}}").size
t0 = time.perf_counter()
sizes = [fetch(i, "seq") for i in range(len(urls))]
sequential = time.perf_counter() - t0
t0 = time.perf_counter()
with ThreadPoolExecutor(len(urls)) as pool:
    sizes += list(pool.map(fetch, range(len(urls)), ["thr"] * len(urls)))
threaded = time.perf_counter() - t0
print(json.dumps({{"sequential_s": sequential, "threaded_s": threaded, "sizes": sizes}}))
"""


def run_series(image: ImageArchive, requests: int = 8, size_mib: int = 8, delay_ms: int = 50,
               runs: int = 3) -> dict:
    server = Server()
    try:
        region = 2 * requests * size_mib + 64
        config = UsfConfig(allow=[server.base + "/"], allow_private=True,
                           host_region_mib=region + region % 2)
        urls = [f"{server.url(size_mib << 20)}?delay_ms={delay_ms}" for _ in range(requests)]
        code = GUEST.format(urls=urls)
        seq, thr = [], []
        with start_usf(image, config) as usf:
            for _ in range(runs):
                r = usf.run_code(code, timeout=300)
                if r.error:
                    raise BenchError(f"{r.error.type}: {r.error.message}")
                got = json.loads(r.stdout)
                if got["sizes"] != [size_mib << 20] * (2 * requests):
                    raise BenchError(f"the downloads had the wrong sizes: {got['sizes']}")
                seq.append(got["sequential_s"] * 1e3)
                thr.append(got["threaded_s"] * 1e3)
    finally:
        server.close()
    seq_ms, thr_ms = statistics.median(seq), statistics.median(thr)
    return {"requests": requests, "size_mib": size_mib, "delay_ms": delay_ms, "runs": runs,
            "sequential_ms": seq_ms, "threaded_ms": thr_ms, "speedup": seq_ms / thr_ms,
            "sequential_all_ms": seq, "threaded_all_ms": thr}


def format_report(r: dict) -> str:
    return (f"{r['requests']} etl.get of {r['size_mib']} MiB, each answered after "
            f"{r['delay_ms']} ms (median of {r['runs']} runs, one USF):\n"
            f"  one after another  {r['sequential_ms']:8.1f} ms\n"
            f"  on {r['requests']} threads       {r['threaded_ms']:8.1f} ms\n"
            f"  speed-up           {r['speedup']:8.2f}x")


def run(cfg, ctx) -> dict:
    """The `threads` experiment of `usetl bench all`."""
    ctx.say("threads: 8 etl.get one after another, then on 8 threads")
    return run_series(ctx.image, runs=cfg.threads_runs)
