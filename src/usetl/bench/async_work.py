"""`usetl bench etl-platform`: what schedules, callbacks and secrets cost, through a real
`usetl serve` on 127.0.0.1.

- secrets: a no-op function deployed with three secrets against the same one without,
  invoked alternately over HTTP (each call of the first opens its secrets and redacts its
  output); the medians and their ratio;
- schedules: an every-second schedule, how late each tick's invocation was created after
  the tick (the scheduler wakes at the tick; the rest is the claim's transaction);
- callbacks: async invocations with a callback to a local receiver, from the record's
  finish time to the receiver's arrival (one clock: both on this machine).
"""

from __future__ import annotations

import base64
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from usetl.api.client import Client
from usetl.api.launcher import ServerProcess

NOOP = b"def handler(event, context):\n    return event\n"
SECRETS = ("DB_USER", "DB_PASSWORD", "API_TOKEN")


class _Receiver:
    """Records when each callback arrives, by invocation id."""

    def __init__(self):
        arrivals = self.arrivals = {}

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                arrivals[json.loads(body)["id"]] = time.time()
                self.send_response(204)
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/done"
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _deploy(client: Client, name: str, **options) -> None:
    body = {"handler": "fn.py:handler", "files": {"fn.py": base64.b64encode(NOOP).decode()},
            **options}
    client.request("PUT", f"/v1/functions/{name}", json=body)


def _ms(seconds: list[float]) -> dict:
    ms = sorted(s * 1e3 for s in seconds)
    return {"median_ms": statistics.median(ms), "max_ms": ms[-1], "n": len(ms)}


def _secrets(client: Client, invocations: int) -> dict:
    for name in SECRETS:
        client.set_secret(name, f"value-of-{name}-" + "x" * 24)
    _deploy(client, "plain")
    _deploy(client, "with-secrets", secrets=list(SECRETS))
    times: dict[str, list[float]] = {"plain": [], "with-secrets": []}
    for i in range(invocations + 10):  # the first ten of each untimed
        for name, series in times.items():
            t0 = time.perf_counter()
            client.invoke(name, i)
            if i >= 10:
                series.append(time.perf_counter() - t0)
    plain, secret = _ms(times["plain"]), _ms(times["with-secrets"])
    return {"plain": plain, "with_secrets": secret,
            "ratio": secret["median_ms"] / plain["median_ms"]}


def _schedules(client: Client, ticks: int) -> dict:
    _deploy(client, "ticks")
    schedule = client.add_schedule("ticks", "* * * * * *", None)
    deadline = time.monotonic() + ticks + 30
    runs: list[dict] = []
    while len(runs) < ticks and time.monotonic() < deadline:
        time.sleep(0.2)
        runs = [r for r in client.logs("ticks", limit=100) if r["trigger"]]
    client.delete_schedule(schedule["id"])
    return _ms([r["created"] - r["trigger"]["tick"] for r in runs[:ticks]])


def _callbacks(client: Client, receiver: _Receiver, invocations: int) -> dict:
    _deploy(client, "calls-back")
    ids = [client.invoke_async("calls-back", i, callback_url=receiver.url)
           for i in range(invocations)]
    deadline = time.monotonic() + 60
    while len(receiver.arrivals) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _ms([receiver.arrivals[i] - client.invocation(i)["finished"]
                for i in ids if i in receiver.arrivals])


def run(backend: str, invocations: int, ticks: int,
        say: Callable[[str], None] = lambda _: None) -> dict:
    receiver = _Receiver()
    with tempfile.TemporaryDirectory(prefix="usetl-bench-") as root:
        server = ServerProcess(Path(root) / "state", Path(root) / "modules", backend,
                               "--callback-allow", receiver.url)
        try:
            server.start()
            client = Client(server.url, server.admin_token)
            say("etl-platform: secrets")
            secrets = _secrets(client, invocations)
            say("etl-platform: schedules")
            schedules = _schedules(client, ticks)
            say("etl-platform: callbacks")
            callbacks = _callbacks(client, receiver, invocations)
            client.close()
        finally:
            server.stop()
            receiver.close()
    return {"backend": backend, "secrets": secrets, "schedule_lateness": schedules,
            "callback_delay": callbacks}


def format_report(r: dict) -> str:
    s, late, cb = r["secrets"], r["schedule_lateness"], r["callback_delay"]
    return "\n".join([
        f"backend {r['backend']}, HTTP API",
        f"invoke, no-op: {s['plain']['median_ms']:.2f} ms median without secrets, "
        f"{s['with_secrets']['median_ms']:.2f} ms with {len(SECRETS)} "
        f"({s['ratio']:.2f}x; {s['plain']['n']} calls each, alternating)",
        f"every-second schedule: invocation created {late['median_ms']:.1f} ms after its tick "
        f"(median; max {late['max_ms']:.1f} ms; {late['n']} ticks)",
        f"callback: received {cb['median_ms']:.1f} ms after the invocation finished (median; "
        f"max {cb['max_ms']:.1f} ms; {cb['n']} callbacks)",
    ])
