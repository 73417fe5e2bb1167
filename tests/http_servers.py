"""Real HTTP servers on 127.0.0.1 for tests (imported by name: `from http_servers import ...`,
since several conftest.py files share the module name `conftest`)."""


class Gate:
    """A URL whose GET is answered only once the test opens the gate.

    A function blocked in etl.get(gate.url) is known to be running for as long
    as the test needs: tests order events by waiting for arrivals, not by sleeping.
    """

    def __init__(self, url: str) -> None:
        import threading

        self.url = url
        self.arrivals = 0
        self._changed = threading.Condition()
        self._open = threading.Event()

    def arrive(self) -> None:
        with self._changed:
            self.arrivals += 1
            self._changed.notify_all()
        self._open.wait()

    def wait_for(self, arrivals: int, timeout: float = 120.0) -> None:
        """Until `arrivals` requests wait at the gate (the timeout only guards a hang)."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: self.arrivals >= arrivals, timeout)
        assert arrived, f"{self.arrivals} of {arrivals} requests reached {self.url}"

    def open(self) -> None:
        self._open.set()


class Receiver:
    """A real HTTP server on 127.0.0.1 whose paths answer their first `failures[path]`
    requests with 503, then 200 (a GET with `bodies[path]`); every POST is kept."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        receiver = self
        self.failures: dict[str, int] = {}
        self.bodies: dict[str, bytes] = {}
        self.seen: dict[str, int] = {}
        self.posts: list[tuple[str, int, bytes]] = []  # path, status answered, body
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):
                pass

            def _answer(self, body: bytes) -> int:
                with receiver.lock:
                    n = receiver.seen[self.path] = receiver.seen.get(self.path, 0) + 1
                status = 503 if n <= receiver.failures.get(self.path, 0) else 200
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return status

            def do_GET(self):
                self._answer(receiver.bodies.get(self.path, b""))

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = self._answer(b"thanks")
                with receiver.lock:
                    receiver.posts.append((self.path, status, body))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()

    def posts_to(self, path: str) -> list[tuple[int, bytes]]:
        with self.lock:
            return [(status, body) for p, status, body in self.posts if p == path]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class LocalHttpServer:
    """A real HTTP server on 127.0.0.1 (or `host`) for ETL and socket tests.

    GET serves what add() stored (with Content-Length, or without it and then
    closing, under /nolength/...), redirect() answers a path with a redirect,
    a gate() answers once the test opens it, a stall() sends half its body and then
    waits for the test, anything else is 404. POST stores
    the body and answers JSON with its size and sha256. Every request is
    recorded in `requests` (method, path, Host header).
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):
                pass

            def do_GET(self):
                server.requests.append(("GET", self.path, self.headers.get("Host")))
                if self.path in server.gates:
                    server.gates[self.path].arrive()
                if self.path in server.redirects:
                    status, location = server.redirects[self.path]
                    self.send_response(status)
                    self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path in server.stalls:
                    self._stall(server.stalls[self.path])
                    return
                path = self.path.removeprefix("/nolength")
                body = b"open" if path in server.gates else server.blobs.get(path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if path == self.path:
                    self.send_header("Content-Length", str(len(body)))
                else:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(body)

            def _stall(self, stall):
                gate, body = stall
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                gate.arrive()
                self.wfile.write(body[len(body) // 2 :])

            def do_POST(self):
                import hashlib
                import json

                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server.requests.append(("POST", self.path, self.headers.get("Host")))
                server.posts.append((self.path, self.headers.get("Content-Type"), body))
                if self.path in server.redirects:
                    status, location = server.redirects[self.path]
                    self.send_response(status)
                    self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                answer = json.dumps(
                    {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.blobs: dict[str, bytes] = {}
        self.redirects: dict[str, tuple[int, str]] = {}
        self.gates: dict[str, Gate] = {}
        self.stalls: dict[str, tuple[Gate, bytes]] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.posts: list[tuple[str, str | None, bytes]] = []
        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def add(self, path: str, body: bytes) -> str:
        self.blobs[path] = body
        return self.base + path

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        self.redirects[path] = (status, location)
        return self.base + path

    def gate(self, path: str) -> Gate:
        self.gates[path] = Gate(self.base + path)
        return self.gates[path]

    def stall(self, path: str, body: bytes) -> Gate:
        """GET `path` answers its headers and the first half of `body`, then waits at the
        gate this returns; the rest follows once the test opens it."""
        gate = Gate(self.base + path)
        self.stalls[path] = (gate, body)
        return gate

    def close(self) -> None:
        for gate in [*self.gates.values(), *(g for g, _ in self.stalls.values())]:
            gate.open()  # no request thread is left waiting
        self.httpd.shutdown()
        self.httpd.server_close()
