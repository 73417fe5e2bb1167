"""Archives as streams, as ETL handlers pipe them: a tar written in stream mode ("w|gz")
into a child's stdin and read back in stream mode from another child's stdout, a zip
written to a non-seekable pipe, zipfile.Path, a deterministic gzip (mtime 0) digest,
multi-member gzip and multi-stream bz2, zlib's streaming objects with a sync flush, and
shutil's archive formats."""

import bz2
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import zipfile
import zlib


def members(n):
    return {f"logs/day-{i}.txt": ("\n".join(f"{i}:{j}" for j in range(2000)) + "\n").encode()
            for i in range(n)}


def tar_through_children(d, files):
    path = os.path.join(d, "stream.tar.gz")
    with open(path, "wb") as out:
        cat = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=out)
        with tarfile.open(fileobj=cat.stdin, mode="w|gz") as tar:
            for name, body in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
        cat.stdin.close()
        cat.wait(30)
    reader = subprocess.Popen(["cat", path], stdout=subprocess.PIPE)
    seen = {}
    with tarfile.open(fileobj=reader.stdout, mode="r|*") as tar:
        for member in tar:
            seen[member.name] = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
    reader.wait(30)
    return seen == {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}


def zip_to_pipe(files):
    r, w = os.pipe()
    received = []
    t = threading.Thread(target=lambda: received.append(b"".join(iter(
        lambda: os.read(r, 65536), b""))))
    t.start()
    with os.fdopen(w, "wb") as pipe:
        with zipfile.ZipFile(pipe, "w", zipfile.ZIP_DEFLATED) as z:
            for name, body in files.items():
                with z.open(name, "w") as member:
                    member.write(body)
    t.join()
    os.close(r)
    with zipfile.ZipFile(io.BytesIO(received[0])) as z:
        root = zipfile.Path(z)
        listed = sorted(p.name for p in (root / "logs").iterdir())
        first = (root / "logs" / "day-0.txt").read_text().splitlines()[1]
        return z.testzip() is None, listed, first


def handler(event, context):
    files = members(event["files"])
    blob = b"".join(files.values())
    with tempfile.TemporaryDirectory() as d:
        out = {"tar_stream": tar_through_children(d, files)}
        out["zip_pipe"] = zip_to_pipe(files)
        out["gzip_digest"] = hashlib.sha256(gzip.compress(blob, mtime=0)).hexdigest()[:16]
        out["multi_gzip"] = gzip.decompress(gzip.compress(b"one ") + gzip.compress(b"two"))\
            .decode()
        out["multi_bz2"] = bz2.decompress(bz2.compress(b"a" * 10) + bz2.compress(b"b")).decode()
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        parts = [comp.compress(blob[:5000]) + comp.flush(zlib.Z_SYNC_FLUSH)]
        partial = zlib.decompressobj(-15).decompress(parts[0])
        parts.append(comp.compress(blob[5000:]) + comp.flush())
        out["zlib_sync"] = [partial == blob[:5000], zlib.decompress(b"".join(parts), -15) == blob,
                            zlib.crc32(blob) == zlib.crc32(blob[5000:], zlib.crc32(blob[:5000]))]
        src = os.path.join(d, "src")
        for name, body in files.items():
            os.makedirs(os.path.dirname(os.path.join(src, name)), exist_ok=True)
            with open(os.path.join(src, name), "wb") as f:
                f.write(body)
        formats = {}
        for fmt in ("zip", "tar", "gztar", "bztar", "xztar"):
            archive = shutil.make_archive(os.path.join(d, "out-" + fmt), fmt, src)
            dest = os.path.join(d, "unpacked-" + fmt)
            shutil.unpack_archive(archive, dest)
            formats[fmt] = sorted(os.listdir(os.path.join(dest, "logs")))
        out["formats"] = formats
    return out
