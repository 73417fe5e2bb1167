"""The host's HTTP client against a real server on 127.0.0.1: bodies, errors, redirects, policy."""

import hashlib
import json
import os
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from usetl.etl import EtlError, HttpClient, IoAccount, UrlPolicy
from waiting import wait_until

MiB = 1 << 20
TLS_BODY = os.urandom(3 * MiB + 5)  # many TLS records, none a whole number of slices


def client_for(server, *extra: str, **kwargs) -> HttpClient:
    return HttpClient(UrlPolicy([server.base + "/", *extra]), **kwargs)


def fetch_error(client: HttpClient, url: str) -> EtlError:
    with pytest.raises(EtlError) as e:
        client.get(url, memoryview(bytearray(4096)))
    return e.value


@pytest.mark.parametrize("size", [0, 1024, 3 * MiB + 17])
@pytest.mark.parametrize("length_header", [True, False])
def test_get_streams_the_body_into_dest(http_server, size, length_header):
    body = os.urandom(size)
    http_server.add("/blob", body)
    dest = bytearray(b"\xaa") * (size + 100)
    url = http_server.base + ("/blob" if length_header else "/nolength/blob")
    with client_for(http_server) as client:
        t = client.get(url, memoryview(dest))
    assert (t.url, t.status, t.size) == (url, 200, size)
    assert hashlib.sha256(dest[:size]).hexdigest() == hashlib.sha256(body).hexdigest()
    assert dest[size:] == b"\xaa" * 100  # nothing written past the body
    assert t.headers["content-type"] == "application/octet-stream"
    a = t.account
    assert (a.requests, a.bytes_in, a.bytes_out) == (1, size, 0)
    assert a.wall_s > 0 and a.host_cpu_s > 0
    assert a.as_dict()["bytes_in"] == size


@pytest.mark.parametrize("size", [1024, 2 * MiB + 5])
def test_post_round_trip(http_server, size):
    payload = bytearray(os.urandom(size))
    dest = bytearray(1024)
    with client_for(http_server) as client:
        t = client.post(http_server.base + "/in", memoryview(payload), memoryview(dest), "text/csv")
    path, content_type, received = http_server.posts[-1]
    assert (path, content_type) == ("/in", "text/csv")
    assert received == payload
    answer = json.loads(dest[: t.size])
    assert answer == {"size": size, "sha256": hashlib.sha256(payload).hexdigest()}
    assert (t.account.bytes_out, t.account.bytes_in) == (size, t.size)


def test_io_accounts_add_up(http_server):
    http_server.add("/a", b"x" * 1000)
    total = IoAccount()
    with client_for(http_server) as client:
        for _ in range(3):
            total.add(client.get(http_server.base + "/a", memoryview(bytearray(1000))).account)
        post = client.post(http_server.base + "/p", b"12345", memoryview(bytearray(200)))
    total.add(post.account)
    assert (total.requests, total.bytes_in, total.bytes_out) == (4, 3000 + post.size, 5)
    assert total.wall_s >= post.account.wall_s > 0


def test_http_error_status(http_server):
    with client_for(http_server) as client:
        e = fetch_error(client, http_server.base + "/missing")
    assert (e.kind, e.status) == ("http_status", 404)
    assert str(e) == f"{http_server.base}/missing: HTTP 404 Not Found"


def test_connection_refused(closed_port):
    url = f"http://127.0.0.1:{closed_port}/x"
    with HttpClient(UrlPolicy([url])) as client:
        e = fetch_error(client, url)
    assert e.kind == "refused"
    assert url in str(e)
    assert (e.account.requests, e.account.bytes_in, e.account.bytes_out) == (1, 0, 0)


def test_timeout(stalling_port):
    url = f"http://127.0.0.1:{stalling_port}/x"
    with HttpClient(UrlPolicy([url]), timeout=0.3) as client:
        assert fetch_error(client, url).kind == "timeout"


def test_body_too_large(http_server):
    http_server.add("/big", os.urandom(5000))
    with client_for(http_server) as client:
        for path in ("/big", "/nolength/big"):  # refused from the header, or while streaming
            e = fetch_error(client, http_server.base + path)
            assert e.kind == "too_large", path
            assert e.account.requests == 1 and e.account.wall_s > 0  # billed all the same
        assert e.account.bytes_in > 4096  # streamed until the body overflowed dest
        # Exactly the size of dest fits.
        assert client.get(http_server.base + "/big", memoryview(bytearray(5000))).size == 5000


def test_url_outside_the_allow_list_makes_no_request(http_server):
    http_server.add("/private/key", b"secret")
    with HttpClient(UrlPolicy([http_server.base + "/public/"])) as client:
        e = fetch_error(client, http_server.base + "/private/key")
    assert e.kind == "denied"
    assert http_server.requests == []


def test_redirects_are_followed_within_the_policy(http_server):
    http_server.add("/public/data", b"payload")
    http_server.redirect("/public/old", "/public/moved")
    http_server.redirect("/public/moved", http_server.base + "/public/data", 301)
    dest = bytearray(100)
    with client_for(http_server) as client:
        t = client.get(http_server.base + "/public/old", memoryview(dest))
    assert (t.url, t.size, bytes(dest[: t.size])) == (
        http_server.base + "/public/data",
        7,
        b"payload",
    )
    assert t.account.requests == 1


@pytest.mark.parametrize("location", ["http://169.254.169.254/latest/meta-data/", "other-port"])
def test_redirect_to_a_denied_address_is_refused(http_server, other_http_server, location):
    if location == "other-port":
        other_http_server.add("/secret", b"secret")
        location = other_http_server.base + "/secret"
    http_server.redirect("/public/go", location)
    with HttpClient(UrlPolicy([http_server.base + "/public/"])) as client:
        e = fetch_error(client, http_server.base + "/public/go")
    assert e.kind == "denied"
    assert e.url == location
    assert other_http_server.requests == []


def test_redirect_loop_ends(http_server):
    http_server.redirect("/a", "/b")
    http_server.redirect("/b", "/a")
    with client_for(http_server, max_redirects=3) as client:
        e = fetch_error(client, http_server.base + "/a")
    assert e.kind == "connection"
    assert "more than 3 redirects" in str(e)
    assert len(http_server.requests) == 4


def test_post_redirected_with_303_becomes_get(http_server):
    http_server.add("/result", b"done")
    http_server.redirect("/submit", "/result", 303)
    dest = bytearray(10)
    with client_for(http_server) as client:
        t = client.post(http_server.base + "/submit", b"abc", memoryview(dest))
    assert bytes(dest[: t.size]) == b"done"
    assert [r[:2] for r in http_server.requests] == [("POST", "/submit"), ("GET", "/result")]


def test_connects_to_the_checked_address_and_sends_the_name(http_server):
    http_server.add("/x", b"hi")
    url = f"http://localhost:{http_server.port}/x"
    with HttpClient(UrlPolicy([f"http://localhost:{http_server.port}/"])) as client:
        assert client.get(url, memoryview(bytearray(2))).size == 2
    assert http_server.requests[-1] == ("GET", "/x", f"localhost:{http_server.port}")


def test_dns_failure_is_an_etl_error():
    with HttpClient(UrlPolicy(["http://no-such-host.invalid/"])) as client:
        assert fetch_error(client, "http://no-such-host.invalid/x").kind == "dns"


@pytest.fixture
def https_server(tmp_path):
    """An HTTPS server on 127.0.0.1 whose self-signed certificate names only 'localhost'."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext",
         "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    seen_sni: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keeps the connection

        def log_message(self, format, *args):
            pass

        def do_GET(self):
            body = TLS_BODY if self.path == "/big" else b"over tls"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.sni_callback = lambda sock, name, _: seen_sni.append(name)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True).start()
    yield httpd.server_address[1], ssl.create_default_context(cafile=str(cert)), seen_sni
    httpd.shutdown()
    httpd.server_close()


def test_https_checks_the_certificate_against_the_name(https_server):
    port, trust, seen_sni = https_server
    allow = [f"https://localhost:{port}/", f"https://127.0.0.1:{port}/"]
    dest = bytearray(100)
    with HttpClient(UrlPolicy(allow), verify=trust) as client:
        t = client.get(f"https://localhost:{port}/x", memoryview(dest))
        assert bytes(dest[: t.size]) == b"over tls"
        assert seen_sni == ["localhost"]  # connected to 127.0.0.1, SNI is the name
        # The certificate does not name 127.0.0.1: the check is real.
        e = fetch_error(client, f"https://127.0.0.1:{port}/x")
    assert e.kind == "connection"
    assert "CERTIFICATE_VERIFY_FAILED" in str(e) or "certificate" in str(e).lower()


def test_https_large_body_arrives_whole_and_connection_is_kept(https_server):
    port, trust, seen_sni = https_server
    dest = bytearray(len(TLS_BODY) + 10)
    with HttpClient(UrlPolicy([f"https://localhost:{port}/"]), verify=trust) as client:
        for _ in range(2):
            t = client.get(f"https://localhost:{port}/big", memoryview(dest))
            assert t.size == len(TLS_BODY)
            assert hashlib.sha256(dest[: t.size]).digest() == hashlib.sha256(TLS_BODY).digest()
    assert seen_sni == ["localhost"]  # one handshake: the second GET reused the connection


class ScriptedServer:
    """A server on 127.0.0.1 that answers each request with the next scripted bytes and
    then closes the connection if the script says so: responses no real server library
    would send (a body cut short, a chunked body)."""

    def __init__(self, script: list[tuple[bytes, bool]]):
        import socket

        self.script = list(script)
        self.connections = 0
        self.closed = 0  # connections it has closed
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.script:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                while self.script:
                    request = b""
                    while b"\r\n\r\n" not in request:
                        data = conn.recv(4096)
                        if not data:
                            break
                        request += data
                    if not request:
                        break
                    answer, close = self.script.pop(0)
                    conn.sendall(answer)
                    if close:
                        break
            self.closed += 1

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def scripted():
    servers: list[ScriptedServer] = []

    def start(*script: tuple[bytes, bool]) -> ScriptedServer:
        servers.append(ScriptedServer(list(script)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_body_cut_short_is_a_connection_error(scripted):
    server = scripted((b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 400, True))
    with client_for(server) as client:
        e = fetch_error(client, server.base + "/x")
    assert e.kind == "connection"
    assert "after 400 B of the body, 600 B short" in e.reason
    assert e.account.bytes_in == 400


@pytest.mark.parametrize("complete", [True, False])
def test_chunked_body(scripted, complete):
    chunks = b"5\r\nhello\r\n7\r\n, world\r\n" + (b"0\r\n\r\n" if complete else b"")
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
    server = scripted(*[(answer, not complete)] * 3)
    dest = bytearray(64)
    with client_for(server) as client:
        if not complete:
            assert fetch_error(client, server.base + "/x").kind == "connection"
            return
        t = client.get(server.base + "/x", memoryview(dest))
        assert bytes(dest[: t.size]) == b"hello, world"
        # Exactly the body's size fits; one byte less does not.
        assert client.get(server.base + "/x", memoryview(bytearray(12))).size == 12
        with pytest.raises(EtlError) as e:
            client.get(server.base + "/x", memoryview(bytearray(11)))
        assert e.value.kind == "too_large"


def test_kept_connection_closed_by_the_server_is_not_reused(scripted):
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    server = scripted((ok, False), (ok, True), (ok, False))
    with client_for(server) as client:
        for i in range(3):
            assert client.get(server.base + "/x", memoryview(bytearray(2))).size == 2
            if i == 1:  # the next request comes once the server has closed it
                wait_until(lambda: server.closed == 1, "the server's close")
    assert server.connections == 2  # kept alive once, then a new one after the close


def test_idle_connections_are_bounded(scripted):
    from usetl.etl.http import MAX_IDLE

    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    servers = [scripted((ok, False)) for _ in range(MAX_IDLE + 2)]
    with HttpClient(UrlPolicy([s.base + "/" for s in servers])) as client:
        for server in servers:
            assert client.get(server.base + "/x", memoryview(bytearray(2))).size == 2
        # The least recently used were closed; the last MAX_IDLE are kept.
        assert sorted(port for _, _, port, _ in client._idle) == sorted(
            s.port for s in servers[2:])
