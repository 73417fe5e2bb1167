"""The socket compatibility path: unmodified urllib and http.client in a VM, under the policy."""

import hashlib
import json
import os

import pytest

from guest_code import run_ok
from usetl.etl import UrlPolicy
from usetl.usf import start_usf

pytestmark = pytest.mark.kvm


def run_io(usf, code, timeout=30):
    """The guest's stdout and the invocation's I/O account; the code must not raise."""
    r = run_ok(usf, code, timeout)
    return r.stdout, r.io


def run(usf, code, timeout=30):
    return run_io(usf, code, timeout)[0]


def test_urllib_fetches_an_allowed_url_by_address_and_by_name(usf, http_server):
    body = os.urandom((1 << 20) + 3)
    http_server.add("/data/blob", body)
    port = http_server.port
    usf.kernel.allow_sockets(
        UrlPolicy([http_server.base + "/", f"http://localhost:{port}/"])
    )
    out = run(usf, f"""
        import hashlib, socket, urllib.request
        for host in ("127.0.0.1", "localhost"):
            data = urllib.request.urlopen(f"http://{{host}}:{port}/data/blob").read()
            print(len(data), hashlib.sha256(data).hexdigest())
        print(sorted({{a[4][0] for a in socket.getaddrinfo("localhost", {port})}}))
        """)
    line = f"{len(body)} {hashlib.sha256(body).hexdigest()}"
    assert out.splitlines()[:2] == [line, line]
    assert "127.0.0.1" in out.splitlines()[2]
    assert [r[2] for r in http_server.requests] == [f"127.0.0.1:{port}", f"localhost:{port}"]


def test_a_denied_address_is_refused_without_a_connection(usf, http_server, other_http_server):
    other = other_http_server  # listening, but not in the allow-list
    usf.kernel.allow_sockets(UrlPolicy([http_server.base + "/data/"]))
    out = run(usf, f"""
        import urllib.request, urllib.error
        for url in ("{other.base}/data/x", "http://10.0.0.1/x", "http://169.254.169.254/"):
            try:
                urllib.request.urlopen(url, timeout=5)
            except urllib.error.URLError as e:
                print(type(e.reason).__name__, e.reason.errno)
        try:
            urllib.request.urlopen("http://example.com/")  # not in /etc/hosts, no DNS
        except urllib.error.URLError as e:
            print(type(e.reason).__name__)
        """)
    # loopback is the guest's own, where nothing listens; the others are refused
    assert out.splitlines() == (["ConnectionRefusedError 111"] + ["PermissionError 13"] * 2
                                + ["gaierror"])
    assert other.requests == []


def test_http_client_post_round_trip(usf, http_server):
    usf.kernel.allow_sockets(UrlPolicy([http_server.base + "/"]))
    out = run_io(usf, f"""
        import http.client, json
        conn = http.client.HTTPConnection("127.0.0.1", {http_server.port}, timeout=10)
        payload = bytes(range(256)) * 1024 + b"tail"
        for _ in range(2):  # two requests on one kept-alive connection
            conn.request("POST", "/upload", body=payload, headers={{"Content-Type": "text/csv"}})
            resp = conn.getresponse()
            print(resp.status, resp.read().decode())
        conn.close()
        """)
    expected = bytes(range(256)) * 1024 + b"tail"
    answer = {"size": len(expected), "sha256": hashlib.sha256(expected).hexdigest()}
    lines, io = out
    lines = lines.splitlines()
    assert [(int(s), json.loads(j)) for s, j in (line.split(" ", 1) for line in lines)] == [
        (200, answer), (200, answer)
    ]
    assert [(p, ct, b == expected) for p, ct, b in http_server.posts] == [
        ("/upload", "text/csv", True)
    ] * 2
    # The socket path is billed like ETL requests: one connection, both bodies out.
    assert io.requests == 1 and io.bytes_out > 2 * len(expected)
    assert 0 < io.bytes_in < 4096 and io.host_cpu_s > 0


def test_raw_sockets_are_refused_and_host_sockets_limited(usf, http_server):
    usf.kernel.allow_sockets(UrlPolicy([http_server.base + "/"]))
    out = run(usf, f"""
        import errno, socket
        def attempt(what, fn):
            try:
                fn()
                print(what, "ok")
            except OSError as e:
                print(what, errno.errorcode[e.errno])
        attempt("raw", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, 1))
        attempt("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
        attempt("udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close())
        attempt("socketpair", socket.socketpair)
        address = ("127.0.0.1", {http_server.port})
        many = []
        def connect_many():
            for _ in range(65):
                many.append(socket.socket())
                many[-1].connect(address)
        attempt("65 host connections", connect_many)
        print(len(many))
        for m in many:
            m.close()
        attempt("after closing", lambda: socket.create_connection(address).close())
        """)
    assert out.splitlines() == [
        "raw EPERM", "packet EAFNOSUPPORT", "udp ok", "socketpair ok",
        "65 host connections EMFILE", "65", "after closing ok",
    ]  # fmt: skip


def test_without_a_policy_no_socket_can_be_made(usf):
    usf.kernel.allow_sockets(None)
    out = run(usf, """
        import socket
        for address in (("10.0.0.1", 80), ("127.0.0.1", 80)):
            try:
                socket.create_connection(address)
            except OSError as e:
                print(type(e).__name__, e.errno)
        """)
    # loopback is the guest's own, where nothing listens
    assert out.splitlines() == ["PermissionError 13", "ConnectionRefusedError 111"]


def test_a_prefix_with_a_path_grants_no_raw_tcp(usf, http_server):
    http_server.add("/data/x", b"0123456789")
    usf.kernel.allow_sockets(UrlPolicy([http_server.base + "/data/"]))
    out = run(usf, f"""
        import urllib.request, urllib.error
        try:
            urllib.request.urlopen("{http_server.base}/data/x", timeout=5)
        except urllib.error.URLError as e:
            print(type(e.reason).__name__, e.reason.errno)
        """)
    # etl.get may, a socket may not: on loopback the guest's own, where nothing listens
    assert out.splitlines() == ["ConnectionRefusedError 111"]


def test_socket_calls_poll_select_and_timeouts(usf, http_server, stalling_port):
    http_server.add("/data/x", b"0123456789")
    port = http_server.port
    usf.kernel.allow_sockets(
        UrlPolicy([f"tcp://127.0.0.1:{port}", f"http://127.0.0.1:{stalling_port}/"])
    )
    out = run(usf, f"""
        import errno, select, socket, time
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        # made by the time it returns: 0, as Linux gives when it can connect at once
        print("connect", s.connect_ex(("127.0.0.1", {port})))
        p = select.poll()
        p.register(s, select.POLLOUT)
        print("poll", p.poll(5000) == [(s.fileno(), select.POLLOUT)])
        print("so_error", s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
        s.setblocking(True)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        print("nodelay", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0)
        print("type", s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM)
        print("peer", s.getpeername() == ("127.0.0.1", {port}), s.getsockname()[0])
        request = [b"GET /data/x HTTP/1.1\\r\\n", b"Host: h\\r\\nConnection: close\\r\\n\\r\\n"]
        print("sendmsg", s.sendmsg(request) == sum(map(len, request)))
        print("select", select.select([s], [], [], 5) == ([s], [], []))
        print("select-files", select.select([0], [1], [], 0) == ([0], [1], []))
        data = s.recv(12, socket.MSG_WAITALL)
        print("waitall", data)
        parts = [bytearray(3), bytearray(4)]
        n = s.recvmsg_into(parts)[0]
        print("recvmsg", n, bytes(parts[0] + parts[1]))
        data += bytes(parts[0] + parts[1])[:n]
        while chunk := s.recv(7):
            data += chunk
        print("body", data.split(b"\\r\\n\\r\\n", 1)[1])
        s.close()
        # A guest-side timeout on a server that never answers.
        t = socket.create_connection(("127.0.0.1", {stalling_port}), timeout=0.3)
        t0 = time.monotonic()
        try:
            t.recv(10)
        except TimeoutError:
            print("timeout", time.monotonic() - t0 >= 0.3)  # not before the timeout
        t.settimeout(None)
        timeval = (0).to_bytes(8, "little") + (200000).to_bytes(8, "little")  # 0.2 s
        t.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        try:
            t.recv(10)
        except BlockingIOError:
            print("rcvtimeo")
        print("select-timeout", select.select([t], [], [], 0.2))
        """)
    assert out.splitlines() == [
        "connect 0", "poll True", "so_error 0", "nodelay True", "type True",
        "peer True 127.0.0.1", "sendmsg True", "select True", "select-files True",
        "waitall b'HTTP/1.1 200'", "recvmsg 7 b' OK\\r\\nSe'", "body b'0123456789'",
        "timeout True", "rcvtimeo", "select-timeout ([], [], [])",
    ]  # fmt: skip


def test_the_invocation_deadline_ends_a_blocked_recv(image, stalling_port):
    with start_usf(image) as u:
        u.kernel.allow_sockets(UrlPolicy([f"http://127.0.0.1:{stalling_port}/"]))
        r = u.run_code(
            f"import socket; socket.create_connection(('127.0.0.1', {stalling_port})).recv(1)",
            timeout=1,
        )
    assert r.error.type == "Timeout"  # the server never answers: only the deadline ends it


def test_the_monitor_writes_the_resolver_files_read_only(usf, http_server, monkeypatch):
    import socket as host_socket

    real = host_socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):  # a public name for the allow-list, resolved here
        if host == "data.example.com":
            return [(host_socket.AF_INET, host_socket.SOCK_STREAM, 6, "", ("93.184.216.34", 80))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(host_socket, "getaddrinfo", getaddrinfo)
    usf.kernel.allow_sockets(UrlPolicy(["http://data.example.com/", http_server.base + "/"]))
    out = run(usf, """
        import errno, os
        # ssl: the image's trust store; services, protocols, os-release: the host's, in the
        # image; ld.so.cache: the image's libraries
        print(sorted(set(os.listdir("/etc"))
                     - {"ssl", "services", "protocols", "os-release", "ld.so.cache"}))
        print(open("/etc/nsswitch.conf").read().strip())
        print(open("/etc/hosts").read().splitlines())
        try:
            open("/etc/hosts", "a")
        except OSError as e:
            print(errno.errorcode[e.errno])
        """)
    assert out.splitlines() == [
        "['group', 'hosts', 'nsswitch.conf', 'passwd']",
        "hosts: files",
        "['127.0.0.1 localhost', '::1 localhost', '127.0.1.1 usf', "
        "'93.184.216.34 data.example.com']",
        "EROFS",
    ]
