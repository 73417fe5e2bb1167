"""The ETL channel end to end: usetl.etl in a real USF against a real HTTP server on 127.0.0.1."""

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import zlib

import pytest

from usetl.libos.handoff import HandedFile, HandedFiles, HandOff, new_memory_file
from usetl.usf import UsfConfig, start_usf

pytestmark = pytest.mark.kvm


@pytest.fixture(scope="module")
def ports():
    """A port nothing listens on (refused) and one that accepts and never answers (timeout)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    stall = socket.socket()
    stall.bind(("127.0.0.1", 0))
    stall.listen(8)
    yield closed, stall.getsockname()[1]
    stall.close()


@pytest.fixture(scope="module")
def server(module_http_server):
    return module_http_server


@pytest.fixture(scope="module")
def usf(image, server, ports):
    closed, stall = ports
    allow = (server.base + "/", f"http://127.0.0.1:{closed}/", f"http://127.0.0.1:{stall}/")
    u = start_usf(image, UsfConfig(allow=allow, etl_timeout=1.0, guest_region_mib=128))
    yield u
    u.close()


def run(usf, code):
    r = usf.run_code(textwrap.dedent(code), timeout=60)
    assert r.error is None, r.error.traceback
    return r


def test_get_streams_into_the_host_region_and_the_guest_hashes_it_in_place(usf, server):
    blobs = {"/empty": b"", "/kib": os.urandom(1024), "/big.bin": os.urandom(64 << 20)}
    urls = [server.add(path, body) for path, body in blobs.items()]
    r = run(usf, f"""
        import hashlib
        from usetl import etl
        for url in {urls!r}:
            f = etl.get(url)
            print(f.name, f.region, f.size, hashlib.sha256(f.view()).hexdigest())
    """)
    del server.blobs["/big.bin"]
    assert r.stdout.splitlines() == [
        f"{path[1:]} host {len(body)} {hashlib.sha256(body).hexdigest()}"
        for path, body in blobs.items()
    ]
    assert r.io.requests == 3
    assert r.io.bytes_in == sum(len(b) for b in blobs.values())
    assert r.io.wall_s > 0 and r.io.host_cpu_s > 0


def test_post_sends_guest_memory_and_the_server_receives_it(usf, server):
    url = server.base + "/upload"
    r = run(usf, f"""
        from usetl import etl
        for data in (bytes(range(256)) * 4, bytes(range(256)) * (1 << 18)):
            resp = etl.post({url!r}, data)
            print(resp.status, resp.json()["size"], resp.json()["sha256"])
    """)
    sent = [bytes(range(256)) * 4, bytes(range(256)) * (1 << 18)]
    assert r.stdout.splitlines() == [
        f"200 {len(d)} {hashlib.sha256(d).hexdigest()}" for d in sent
    ]
    received = [body for path, _, body in server.posts if path == "/upload"]
    assert received[-2:] == sent
    assert r.io.bytes_out == sum(len(d) for d in sent)
    server.posts.clear()


def test_post_sends_a_str_an_etl_file_and_a_tmp_file(usf, server):
    source = server.add("/source.bin", b"downloaded " * 1000)
    url = server.base + "/sink"
    run(usf, f"""
        import pathlib
        from usetl import etl
        etl.post({url!r}, etl.get({source!r}))
        etl.post({url!r}, "h\\u00e9llo")
        pathlib.Path("/tmp/out.csv").write_bytes(b"a,b\\n1,2\\n")
        etl.post({url!r}, pathlib.Path("/tmp/out.csv"), content_type="text/csv")
    """)
    assert [(ctype, body) for path, ctype, body in server.posts if path == "/sink"] == [
        ("application/octet-stream", b"downloaded " * 1000),
        ("text/plain; charset=utf-8", "h\u00e9llo".encode()),
        ("text/csv", b"a,b\n1,2\n"),
    ]
    server.posts.clear()


CHAINED = '''
import csv, io, json
from usetl import etl

def handler(event, context):
    totals = {}
    for row in csv.DictReader(io.StringIO(etl.get(event["source"]).text())):
        totals[row["city"]] = totals.get(row["city"], 0) + int(row["amount"])
    resp = etl.post(event["sink"], json.dumps(totals), content_type="application/json")
    return {"status": resp.status, "stored": resp.json(), "cities": len(totals)}
'''


def test_a_chained_handler_gets_a_csv_transforms_it_and_posts_json(usf, server):
    csv_text = "city,amount\n" + "".join(
        f"{city},{n}\n" for n, city in enumerate(["Austin", "Oslo", "Lima"] * 100)
    )
    source = server.add("/sales.csv", csv_text.encode())
    loaded = usf.load_function("handler", source=CHAINED, filename="chain.py")
    assert loaded.ok, loaded.error
    r = usf.call({"source": source, "sink": server.base + "/totals"}, timeout=30)
    assert r.error is None, r.error
    expected = {
        city: sum(n for n in range(300) if n % 3 == i)
        for i, city in enumerate(["Austin", "Oslo", "Lima"])
    }
    path, ctype, body = server.posts[-1]
    assert (path, ctype, json.loads(body)) == ("/totals", "application/json", expected)
    assert r.value == {
        "status": 200,
        "stored": {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()},
        "cities": 3,
    }
    assert r.io.requests == 2 and r.io.bytes_out == len(body)


def test_404_refused_and_timeout_are_etl_errors_the_function_can_catch(usf, server, ports):
    closed, stall = ports
    urls = [server.base + "/missing", f"http://127.0.0.1:{closed}/x", f"http://127.0.0.1:{stall}/x"]
    r = run(usf, f"""
        from usetl import etl
        for url in {urls!r}:
            try:
                etl.get(url)
            except etl.EtlError as e:
                print(e.kind, e.status, e.url == url)
    """)
    assert r.stdout.splitlines() == [
        "http_status 404 True", "refused None True", "timeout None True",
    ]


def test_urls_outside_the_allow_list_and_redirects_to_denied_addresses_are_refused(usf, server):
    hop = server.redirect("/hop", "http://169.254.169.254/latest/meta-data/")
    r = run(usf, f"""
        from usetl import etl
        for call in (lambda: etl.get("http://example.com/data"),
                     lambda: etl.post("http://127.0.0.1:9/", b"secret"),
                     lambda: etl.get({hop!r})):
            try:
                call()
            except etl.EtlError as e:
                print(e.kind, e.url)
    """)
    assert r.stdout.splitlines() == [
        "denied http://example.com/data",
        "denied http://127.0.0.1:9/",
        "denied http://169.254.169.254/latest/meta-data/",
    ]
    assert ("GET", "/hop", f"127.0.0.1:{server.port}") in server.requests


def test_a_host_region_file_cannot_change_but_a_copy_can(usf, server):
    url = server.add("/orig.txt", b"original text")
    r = run(usf, f"""
        from usetl import etl
        f = etl.get({url!r})
        try:
            f.view()[0] = 0
        except TypeError as e:
            print("read-only:", e)
        with etl.open("orig.txt", "r+b") as w:
            w.write(b"CHANGED")
        print(f.bytes())
        print(etl.open("orig.txt", "rb").read())
        with etl.open("notes.txt", "w") as t:
            t.write("caf\\u00e9")
        with etl.open("notes.txt", "a") as t:
            t.write("!")
        print(etl.open("notes.txt").read())
        print(sorted((x.name, x.region, x.size) for x in etl.ls()))
    """)
    assert r.stdout.splitlines() == [
        "read-only: cannot modify read-only memory",
        "b'original text'",
        "b'CHANGEDl text'",
        "caf\u00e9!",
        "[('notes.txt', 'guest', 6), ('orig.txt', 'guest', 13), ('orig.txt', 'host', 13)]",
    ]


def test_full_regions_are_clean_etl_errors_and_the_host_region_faults_on_a_write(image, server):
    big = server.add("/three-mib", b"z" * (3 << 20))
    small = server.add("/small", b"fits")
    config = UsfConfig(mem_mib=64, allow=(server.base + "/",), host_region_mib=2,
                       guest_region_mib=2)
    with start_usf(image, config) as u:
        r = run(u, f"""
            from usetl import etl
            try:
                etl.get({big!r})
            except etl.EtlError as e:
                print(e.kind, "host region is full" in e.reason)
            try:
                with etl.open("out.bin", "wb") as w:
                    w.write(b"y" * (3 << 20))
            except etl.EtlError as e:
                print(e.kind, e.reason)
            print(etl.get({small!r}).bytes(), [f.name for f in etl.ls()])
        """)
        assert r.stdout.splitlines() == [
            "too_large True",
            "too_large the guest region is full: 3145728 B asked, 2097152 B of 2097152 B free",
            "b'fits' ['small']",
        ]
        # Below Python's read-only view, the page tables and the memslot refuse writes too.
        host = u.vm.regions["host"].gpa
        r = u.run_code(f"import ctypes; ctypes.memset({host:#x}, 1, 1)")
        assert r.error.type == "GuestFault"
        assert f"page fault (#PF) at address {host:#x}" in r.error.message


RAISES = '''
import sys

def parse(row):
    raise ValueError(f"bad row: {row!r}")

def handler(event, context):
    print("processing", event["row"])
    print("careful", file=sys.stderr)
    return parse(event["row"])
'''


def test_an_exception_returns_type_message_traceback_and_the_output(usf):
    assert usf.load_function("handler", source=RAISES, filename="rows.py").ok
    r = usf.call({"row": "x,y"})
    assert r.value is None
    assert (r.error.type, r.error.message) == ("ValueError", "bad row: 'x,y'")
    assert 'File "rows.py", line 5, in parse' in r.error.traceback
    assert 'raise ValueError(f"bad row: {row!r}")' in r.error.traceback
    assert (r.stdout, r.stderr) == ("processing x,y\n", "careful\n")


COUNTER = '''
print("importing")
calls = 0

def handler(event, context):
    global calls
    calls += 1
    return {"calls": calls, "size": len(json.dumps(event)), "request_id": context.request_id,
            "memory_mib": context.memory_mib, "has_deadline": context.remaining_ms() > 0}

import json
'''


def test_load_runs_module_code_once_and_invoke_calls_the_handler(usf):
    loaded = usf.load_function("handler", source=COUNTER, filename="counter.py")
    assert loaded.ok and loaded.stdout == "importing\n"
    assert loaded.extra["import_ms"] > 0 and loaded.extra["modules"] > 10
    first = usf.call({"n": 1}, context={"request_id": "req-1"}, timeout=30)
    big_event = {"rows": ["x" * 100] * 2000}  # > 64 KiB: sent as a host-region file
    second = usf.call(big_event, timeout=30)
    assert first.value == {"calls": 1, "size": 8, "request_id": "req-1", "memory_mib": 256,
                           "has_deadline": True}
    assert second.value["calls"] == 2 and second.value["size"] == len(json.dumps(big_event))
    assert first.stdout == second.stdout == ""
    assert first.guest_ms >= 0 and first.guest_cpu_ms >= 0


def test_a_handler_of_the_event_alone_and_an_async_handler_are_called_as_written(usf):
    assert usf.load_function("handler", source="def handler(event):\n    return event * 2\n").ok
    assert usf.call(21).value == 42
    method = "class F:\n    def run(self, event):\n        return -event\nhandler = F().run\n"
    assert usf.load_function("handler", source=method).ok
    assert usf.call(5).value == -5
    coroutine = ("import asyncio\nasync def handler(event, context):\n"
                 "    await asyncio.sleep(0.01)\n    return [event, context.request_id]\n")
    assert usf.load_function("handler", source=coroutine).ok
    assert usf.call("e", context={"request_id": "r-2"}).value == ["e", "r-2"]


def test_a_return_value_that_is_not_json_is_an_error_naming_its_type(usf):
    assert usf.load_function("handler", source="def handler(e, c):\n    return {1, 2}\n").ok
    r = usf.call(None)
    assert r.error.type == "TypeError" and "set" in r.error.message
    assert r.value is None


def test_a_function_file_cannot_replace_a_loaded_module(usf):
    r = usf.load_function("handler", source="def handler(e, c):\n    return 1\n",
                          filename="json.py")
    assert r.error.type == "ImportError" and "'json'" in r.error.message
    assert usf.run_code("import json; print(json.dumps([1]))").stdout == "[1]\n"


def test_load_by_guest_path_imports_a_package_with_its_sys_path(usf):
    files = {
        "pkgs/doubler/__init__.py": b"from .core import handler\n",
        "pkgs/doubler/core.py": b"import helper\n\ndef handler(e, c):\n"
                                b"    return helper.twice(e)\n",
        "deps/helper.py": b"def twice(x):\n    return 2 * x\n",
    }
    loaded = usf.load_function("handler", path="/tmp/pkgs/doubler", sys_path=["/tmp/deps"],
                               files=files)
    assert loaded.ok, loaded.error
    assert usf.call(21).value == 42


def test_cli_runs_a_handler_with_an_event_and_reports_value_and_io(image_path, server, tmp_path):
    url = server.add("/cli.txt", b"0123456789")
    fn = tmp_path / "fn.py"
    fn.write_text(
        "from usetl import etl\n\n"
        "def handler(event, context):\n"
        "    return {'size': etl.get(event['url']).size}\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "usetl", "vm", "run", "--image", str(image_path), "--json",
         "--allow", server.base + "/", "--handler", f"{fn}:handler",
         "--event", json.dumps({"url": url})],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["value"] == {"size": 10}
    assert report["io"]["requests"] == 1 and report["io"]["bytes_in"] == 10


def test_the_allow_list_also_governs_the_guests_own_sockets(usf, server):
    url = server.add("/via-socket.txt", b"over the socket path")
    r = run(usf, f"""
        import urllib.request
        print(urllib.request.urlopen({url!r}, timeout=10).read())
        try:
            urllib.request.urlopen("http://127.0.0.1:9/", timeout=10)
        except OSError as e:
            print("refused:", repr(e.reason))
    """)
    assert r.stdout.splitlines() == [
        "b'over the socket path'",
        "refused: ConnectionRefusedError(111, 'Connection refused')",  # the guest's loopback
    ]


CRC_HANDED = """
import zlib
from usetl import etl
def handler(event, context):
    return zlib.crc32(etl.stat("blob.bin").view())
"""


def handed_in(data: bytes, huge: bool) -> HandOff:
    """A pipeline stage's file as the next stage gets it: in a sealed memory file."""
    fd = new_memory_file(len(data), huge=huge)
    os.pwrite(fd, data, 0)
    return HandOff.sealed(fd, HandedFiles(len(data), [HandedFile("blob.bin", 0, len(data))]))


@pytest.mark.parametrize("huge", [True, False])
def test_a_handed_in_file_costs_its_reader_one_first_touch_per_host_page(usf, huge):
    """KVM maps a handed-in file as the host does: read whole, a memory file on huge pages
    costs the stage one first touch per 2 MiB, one on small pages one per 4 KiB."""
    assert usf.load_function("handler", source=CRC_HANDED, filename="crc.py").ok
    data = os.urandom(16 << 20)
    for size in (4096, len(data)):  # the first call touches the handler's own path
        handoff = handed_in(data[:size], huge)
        try:
            r = usf.call(None, handoff=handoff)
        finally:
            handoff.close()
        assert r.ok and r.value == zlib.crc32(data[:size]), r.error
    pages = len(data) // ((2 << 20) if huge else 4096)
    assert pages <= r.first_touches < pages + 64
