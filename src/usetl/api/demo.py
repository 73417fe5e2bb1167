"""`usetl demo`: the platform end to end on this machine, in a few seconds.

Starts a local HTTP server holding a CSV of sales, starts `usetl serve` on a
free port with a fresh state directory, deploys the ETL function in
examples/sales_etl.py (download the CSV, keep the large sales, total them by
region, post JSON back), invokes it twice and shows the results, what the
HTTP server received and each invocation's timings.
"""

from __future__ import annotations

import json
import random
import tempfile
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .client import Client
from .launcher import ServerProcess

EXAMPLE = Path(__file__).resolve().parent / "examples" / "sales_etl.py"
REGIONS = ("north", "south", "east", "west")


def sales_csv(rows: int = 20000, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    lines = ["date,region,amount"]
    for i in range(rows):
        lines.append(f"2026-{1 + i % 12:02d}-{1 + i % 28:02d},{rng.choice(REGIONS)},"
                     f"{rng.uniform(1, 1000):.2f}")
    return ("\n".join(lines) + "\n").encode()


class DataServer:
    """Serves GET /sales.csv and records the bodies POSTed to it, on `host`."""

    def __init__(self, csv: bytes, host: str = "127.0.0.1"):
        self.posts: list[bytes] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                body = csv if self.path == "/sales.csv" else b"not found"
                self.send_response(200 if self.path == "/sales.csv" else 404)
                self.send_header("Content-Type", "text/csv")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                server.posts.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.base = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def run(backend: str, say: Callable[[str], None] = print) -> dict:
    data = DataServer(sales_csv())
    with tempfile.TemporaryDirectory(prefix="usetl-demo-") as state:
        server = ServerProcess(Path(state), None, backend)
        try:
            server.start()
            say(f"demo: usetl serve --backend {backend} on {server.url}")
            client = Client(server.url, server.admin_token)
            v = client.deploy("sales", EXAMPLE, allow=[data.base + "/"])
            say(f"demo: deployed {v['name']} v{v['version']} ({v['handler']}), "
                f"allowed to reach {data.base}/")
            event = {"source": data.base + "/sales.csv", "sink": data.base + "/totals",
                     "min_amount": 250}
            records = [client.invoke("sales", event) for _ in range(2)]
            client.close()
        finally:
            server.stop()
            data.close()
    for label, record in zip(("first invocation", "second invocation"), records, strict=True):
        if record["error"]:
            raise RuntimeError(f"the demo function failed: {record['error']['message']}")
        m = record["metrics"]
        say(f"demo: {label}: {m['duration_ms']:.1f} ms in the function, guest CPU "
            f"{m['guest_cpu_ms']:.1f} ms, {m['io_requests']} ETL requests, "
            f"{m['bytes_in']} bytes in / {m['bytes_out']} out, host CPU for its I/O "
            f"{m['host_cpu_s'] * 1e3:.2f} ms")
    result = records[-1]["result"]
    say(f"demo: result: {json.dumps(result['summary'])}")
    say(f"demo: the HTTP server received: {data.posts[-1].decode()}")
    return {"records": records, "posted": [p.decode() for p in data.posts]}
