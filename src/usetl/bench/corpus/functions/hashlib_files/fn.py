"""Checksums and signatures as ingestion handlers compute them over files: hashlib's
file_digest, hashes of a file read in blocks and through mmap agreeing, blake2b keyed
and personalised, sha3 and shake, an HMAC streamed over a file and checked with
compare_digest, a manifest of a tree, and hashes computed on threads (the GIL released)."""

import hashlib
import hmac
import mmap
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor


def blocks(path, name):
    h = hashlib.new(name)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def handler(event, context):
    out = {}
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i in range(event["files"]):
            path = os.path.join(d, f"part-{i}.bin")
            with open(path, "wb") as f:
                for j in range(event["kib"]):
                    f.write(hashlib.sha256(b"%d-%d" % (i, j)).digest() * 32)
            paths.append(path)
        with open(paths[0], "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        with open(paths[0], "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            mapped = hashlib.sha256(m).hexdigest()
        out["agree"] = digest == mapped == blocks(paths[0], "sha256")
        out["sha256"] = digest[:16]
        out["blake2b"] = hashlib.blake2b(b"payload", key=b"k" * 32, person=b"corpus",
                                         digest_size=16).hexdigest()
        out["sha3"] = hashlib.sha3_256(b"payload").hexdigest()[:16]
        out["shake"] = hashlib.shake_256(b"payload").hexdigest(10)
        mac = hmac.new(b"secret", digestmod="sha512")
        with open(paths[1], "rb") as f:
            while chunk := f.read(8192):
                mac.update(chunk)
        with open(paths[1], "rb") as f:
            whole = hmac.digest(b"secret", f.read(), "sha512")
        out["hmac_ok"] = hmac.compare_digest(mac.digest(), whole)
        with ThreadPoolExecutor(4) as pool:
            manifest = dict(zip((os.path.basename(p) for p in paths),
                                pool.map(lambda p: blocks(p, "sha1"), paths), strict=True))
        out["manifest"] = {k: v[:10] for k, v in sorted(manifest.items())}
        out["algorithms"] = sorted(a for a in ("md5", "sha1", "sha512", "blake2s", "sha3_512")
                                   if a in hashlib.algorithms_available)
    return out
