"""Real third-party code in a USF, against real servers on 127.0.0.1 (issue 11's acceptance).

Each function is deployed as the platform deploys one: its requirements are
installed by the module store, packed, mounted read-only (and imported from the
module region) and put on sys.path by the KVM backend's entry module, and its
code is mounted at /code.
"""

import textwrap

import pytest
from test_tls import tls_server  # noqa: F401 (a fixture: a TLS server with a CA made here)

from usetl.image.modstore import ModuleStore
from usetl.platform.backend import FunctionSpec
from usetl.platform.kvm_backend import ENTRY, entry_source, function_mounts
from usetl.usf import UsfConfig, start_usf

pytestmark = pytest.mark.kvm


def deploy(usf, tmp_path, source: str, requirements: list[str]) -> None:
    """Load `source` as fn.py:handler with `requirements` from the module store."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "fn.py").write_text(textwrap.dedent(source))
    spec = FunctionSpec(key="real-code", code_dir=code, handler="fn.py:handler",
                        module_dirs=ModuleStore().install(requirements))
    mounts, module_mounts = function_mounts(spec)  # packed, imported from memory
    for name, archive in mounts.items():
        usf.mount(name, archive)
    loaded = usf.load_function("handler", source=entry_source(spec, module_mounts),
                               filename=ENTRY,
                               timeout=120)
    assert loaded.error is None, (loaded.error, loaded.stderr)


def call(usf, event, timeout=60):
    r = usf.call(event, timeout=timeout)
    assert r.error is None, (r.error, r.stderr)
    return r.value


HTTPX_ASYNC = """
import asyncio, hashlib
import httpx

async def fetch_all(base, paths):
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        replies = await asyncio.gather(*(client.get(p) for p in paths))
        posted = await client.post("/up", content=b"y" * 100000)
    return [(r.status_code, hashlib.sha256(r.content).hexdigest()) for r in replies], posted.json()

def handler(event, context):
    got, posted = asyncio.run(fetch_all(event["base"], event["paths"]))
    return {"got": got, "posted": posted["size"]}
"""


def test_httpx_async_client_gathers_requests_over_the_socket_path(image, tmp_path,
                                                                 module_http_server):
    import hashlib
    import os

    server = module_http_server
    blobs = {f"/async/{i}": os.urandom(200000 + i) for i in range(5)}
    for path, body in blobs.items():
        server.add(path, body)
    with start_usf(image, UsfConfig(allow=(server.base + "/",))) as u:
        deploy(u, tmp_path, HTTPX_ASYNC, ["httpx"])
        value = call(u, {"base": server.base, "paths": [*blobs, "/async/missing"]})
    want = [[200, hashlib.sha256(b).hexdigest()] for b in blobs.values()]
    assert value["got"][:5] == want
    assert value["got"][5][0] == 404
    assert value["posted"] == 100000


REQUESTS_HTTPS = """
import ssl
import requests

def handler(event, context):
    url = event["url"]
    try:
        requests.get(url, timeout=30)  # certifi's bundle, as requests defaults to
    except requests.exceptions.SSLError as e:
        refused = "CERTIFICATE_VERIFY_FAILED" in str(e)
    trust = ssl.get_default_verify_paths().cafile  # the image's bundle, with the operator's roots
    with requests.Session() as s:
        bodies = [s.get(url, verify=trust, timeout=30).text for _ in range(3)]
    return {"refused_by_certifi": refused, "bodies": bodies}
"""


def test_requests_over_https_to_a_local_tls_server(image, tmp_path, tls_server):  # noqa: F811
    port, ca_pem = tls_server
    url = f"https://localhost:{port}/x"
    with start_usf(image, UsfConfig(allow=(f"https://localhost:{port}/",), ca_certs=ca_pem)) as u:
        deploy(u, tmp_path, REQUESTS_HTTPS, ["requests"])
        value = call(u, {"url": url})
    assert value == {"refused_by_certifi": True, "bodies": ["secret over tls"] * 3}


@pytest.fixture
def s3_server():
    """moto's S3-compatible server on 127.0.0.1, a subprocess of this test."""
    import socket
    import subprocess
    import sys

    from waiting import wait_until

    pytest.importorskip("moto.server", reason="the dev extra 'moto[server]' is needed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                               "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def listening():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_until(listening, "moto's server to listen", timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(30)


BOTO3_TRANSFER = """
import hashlib, threading
import boto3

def handler(event, context):
    s3 = boto3.client("s3", endpoint_url=event["endpoint"], region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    workers = set()  # the threads that moved bytes (s3transfer calls back from them)
    progress = lambda _: workers.add(threading.get_ident())
    # The default TransferConfig: 8 MiB parts, 10 threads.
    s3.download_file("data", "in.bin", "/tmp/in.bin", Callback=progress)
    with open("/tmp/in.bin", "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    s3.upload_file("/tmp/in.bin", "data", "out.bin", Callback=progress)
    parts = s3.head_object(Bucket="data", Key="out.bin")["ETag"].strip('"').split("-")
    return {"sha256": digest, "parts": int(parts[1]) if len(parts) == 2 else 1,
            "threaded": threading.get_ident() not in workers and len(workers) > 1}
"""


def test_boto3_threaded_download_and_upload_of_20_mib(image, tmp_path, s3_server):
    import hashlib
    import os

    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    s3.create_bucket(Bucket="data")
    data = os.urandom(20 << 20)
    s3.put_object(Bucket="data", Key="in.bin", Body=data)
    config = UsfConfig(mem_mib=512, tmpfs_mib=128, allow=(s3_server + "/",))
    with start_usf(image, config) as u:
        deploy(u, tmp_path, BOTO3_TRANSFER, ["boto3"])
        value = call(u, {"endpoint": s3_server}, timeout=120)
    want = hashlib.sha256(data).hexdigest()
    assert value == {"sha256": want, "parts": 3, "threaded": True}
    stored = s3.get_object(Bucket="data", Key="out.bin")["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == want


CHILD_INTERPRETERS = """
import subprocess, sys

def handler(event, context):
    probe = "import six, sys; print(six.__file__, sys.flags.ignore_environment)"
    plain = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    # multiprocessing's and joblib's helpers start children with the parent's flags
    flagged = subprocess.run([sys.executable, *subprocess._args_from_interpreter_flags(), "-c",
                              probe], capture_output=True, text=True)
    return [plain.stdout.strip() or plain.stderr, flagged.stdout.strip() or flagged.stderr]
"""


def test_child_interpreters_import_the_functions_requirements(image, tmp_path):
    """joblib's workers and resource tracker are `python -m`/`-c` children: the requirements
    reach them through PYTHONPATH, which the interpreter's flags must not make it ignore."""
    with start_usf(image) as u:
        deploy(u, tmp_path, CHILD_INTERPRETERS, ["six"])
        value = call(u, {})
    assert value == ["/m0/six.py 0", "/m0/six.py 0"]


PYARROW_PARQUET = """
import os
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

def handler(event, context):
    n = event["rows"]
    table = pa.table({"id": pa.array(range(n), pa.int64()),
                      "name": pa.array([f"row-{i}" for i in range(n)]),
                      "amount": pa.array([i * 0.5 for i in range(n)])})
    pq.write_table(table, "/tmp/t.parquet", compression="zstd", row_group_size=n // 4)
    back = pq.read_table("/tmp/t.parquet")
    meta = pq.ParquetFile("/tmp/t.parquet").metadata
    return {"equal": back.equals(table), "row_groups": meta.num_row_groups,
            "total": pc.sum(back["amount"]).as_py(), "bytes": os.path.getsize("/tmp/t.parquet")}
"""


def test_pyarrow_writes_and_reads_parquet_in_tmp(image, tmp_path):
    rows = 100000
    with start_usf(image, UsfConfig(mem_mib=512)) as u:
        deploy(u, tmp_path, PYARROW_PARQUET, ["pyarrow"])
        value = call(u, {"rows": rows})
    assert value["equal"] and value["row_groups"] == 4 and value["bytes"] > 0
    assert value["total"] == sum(i * 0.5 for i in range(rows))


def test_multiprocessing_thread_pools_and_locks_use_posix_semaphores_in_dev_shm(image):
    with start_usf(image) as u:
        r = u.run_code(textwrap.dedent("""
            import multiprocessing, multiprocessing.dummy, multiprocessing.pool, os
            with multiprocessing.pool.ThreadPool(3) as p:
                print(p.map(lambda x: x + 1, range(5)))
            with multiprocessing.dummy.Pool(2) as p:
                print(sum(p.imap_unordered(abs, range(-10, 0))))
            lock, sem = multiprocessing.Lock(), multiprocessing.BoundedSemaphore(2)
            print(lock.acquire(), lock.acquire(timeout=0.05), sem.acquire(), sem.get_value())
            lock.release(); sem.release()
            try:
                sem.release()
            except ValueError as e:
                print(e)
            print(os.listdir("/dev/shm"))
            """), timeout=60)
    assert r.error is None, (r.error, r.stderr)
    assert r.stdout.splitlines() == ["[1, 2, 3, 4, 5]", "55", "True False True 1",
                                     "semaphore or lock released too many times", "[]"]


def test_a_shared_mapping_of_a_tmpfs_file_reaches_the_file_at_msync_and_munmap(image):
    with start_usf(image) as u:
        r = u.run_code(textwrap.dedent("""
            import mmap, os
            fd = os.open("/tmp/m", os.O_RDWR | os.O_CREAT)
            os.write(fd, bytes(4096))
            m = mmap.mmap(fd, 4096)
            m[:5] = b"hello"
            m.flush()
            print(os.pread(fd, 5, 0))
            m[5:11] = b" world"
            m.close()
            print(os.pread(fd, 12, 0), os.fstat(fd).st_size)
            ro = os.open("/tmp/m", os.O_RDONLY)
            try:
                mmap.mmap(ro, 4096)
            except PermissionError as e:
                print(e.errno == __import__("errno").EACCES)
            print(mmap.mmap(ro, 4096, access=mmap.ACCESS_READ)[:5])
            """), timeout=60)
    assert r.error is None, (r.error, r.stderr)
    assert r.stdout.splitlines() == ["b'hello'", "b'hello world\\x00' 4096", "True", "b'hello'"]


def test_sqlite_in_wal_mode_with_a_connection_per_thread(image):
    """WAL maps its -shm index shared and asks F_GETLK whether another process uses it."""
    with start_usf(image) as u:
        r = u.run_code(textwrap.dedent("""
            import fcntl, os, sqlite3, struct, threading
            db = sqlite3.connect("/tmp/db.sqlite")
            print(db.execute("pragma journal_mode=wal").fetchone()[0])
            db.execute("create table t (x)"); db.commit()
            def insert(i):
                c = sqlite3.connect("/tmp/db.sqlite", timeout=30)
                for j in range(25):
                    c.execute("insert into t values (?)", (i * 100 + j,)); c.commit()
                c.close()
            ts = [threading.Thread(target=insert, args=(i,)) for i in range(4)]
            for t in ts: t.start()
            for t in ts: t.join()
            print(db.execute("select count(*), sum(x) from t").fetchone())
            db.execute("pragma wal_checkpoint(truncate)"); db.close()
            print(sqlite3.connect("/tmp/db.sqlite").execute("select count(*) from t").fetchone())
            fd = os.open("/tmp/db.sqlite", os.O_RDWR)
            asked = struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0)
            print(struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_GETLK, asked))[0] == fcntl.F_UNLCK)
            """), timeout=60)
    assert r.error is None, (r.error, r.stderr)
    assert r.stdout.splitlines() == ["wal", str((100, sum(i * 100 + j for i in range(4)
                                                        for j in range(25)))), "(100,)", "True"]


FFMPEG_TRANSCODE = """
import subprocess
import imageio_ffmpeg

W, H, FRAMES = 64, 48, 10

def ffmpeg(*args, data):
    r = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error",
                        *args], input=data, capture_output=True)
    assert r.returncode == 0, r.stderr
    return r.stdout

def handler(event, context):
    raw = bytes((x * 4 + f * 16) % 256 for f in range(FRAMES) for x in range(W * H * 3))
    video = ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-r", "10",
                   "-i", "pipe:0", "-c:v", "mpeg4", "-f", "matroska", "pipe:1", data=raw)
    back = ffmpeg("-i", "pipe:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1", data=video)
    return {"matroska": video[:4].hex(), "frames": len(back) // (W * H * 3)}
"""


def test_ffmpeg_from_a_wheel_transcodes_a_generated_video(image, tmp_path):
    """imageio-ffmpeg's prebuilt ffmpeg (from the module store, mode bits kept) run twice as
    a child program, through pipes both ways."""
    with start_usf(image, UsfConfig(mem_mib=512)) as u:
        deploy(u, tmp_path, FFMPEG_TRANSCODE, ["imageio-ffmpeg"])
        value = call(u, {}, timeout=120)
    assert value == {"matroska": "1a45dfa3", "frames": 10}
