"""`python -m usetl.bench.httpserver`: a local HTTP server for the download experiment.

GET /bytes/N answers N bytes (a fixed random megabyte, repeated) with a
Content-Length; with ?delay_ms=D it first waits D milliseconds (a slow
service, for the threads experiment). POST /store/KEY keeps the body in memory
and GET /store/KEY answers it (an object store, for the pipeline experiment).
It runs in its own process so that serving does not share the benchmark's
interpreter; it prints its port, then serves until killed.
"""

from __future__ import annotations

import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = os.urandom(1 << 20)
STORE: dict[str, bytes] = {}
STORE_PREFIX = "/store/"


class BytesHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are separate writes: with Nagle's algorithm the body would wait
    # for the client's delayed ACK (40 ms on Linux), a stall of the server, not the client.
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length", "")
        if not self.path.startswith(STORE_PREFIX) or not length.isdigit():
            self.send_error(404 if length.isdigit() else 411)
            return
        STORE[self.path[len(STORE_PREFIX):]] = self.rfile.read(int(length))
        self.send_response(204)
        self.end_headers()

    def _stored(self) -> None:
        body = STORE.get(self.path[len(STORE_PREFIX):])
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.startswith(STORE_PREFIX):
            self._stored()
            return
        prefix = "/bytes/"
        path, _, query = self.path.partition("?")
        delay = query.removeprefix("delay_ms=")
        if not path.startswith(prefix) or not path[len(prefix):].isdigit() or (
                query and (not query.startswith("delay_ms=") or not delay.isdigit())):
            self.send_error(404)
            return
        size = int(path[len(prefix):])
        if query:
            time.sleep(int(delay) / 1000)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        view = memoryview(CHUNK)
        while size > 0:
            n = min(size, len(view))
            self.wfile.write(view[:n])
            size -= n

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BytesHandler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
