"""zipfile, tarfile (gz, bz2, xz), lzma and bz2: files packed into each and unpacked again."""

import bz2
import hashlib
import io
import lzma
import os
import shutil
import tarfile
import zipfile


def files(n):
    return {f"data/part-{i}.csv": ("\n".join(f"{i},{j},{j * j}" for j in range(3000))).encode()
            for i in range(n)}


def handler(event, context):
    contents = files(event["files"])
    root = "/tmp/archives"
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root + "/src/data")
    for name, body in contents.items():
        with open(os.path.join(root, "src", name), "wb") as f:
            f.write(body)
    want = {k: hashlib.sha256(v).hexdigest() for k, v in contents.items()}
    checks = {}
    with zipfile.ZipFile(root + "/a.zip", "w", zipfile.ZIP_DEFLATED) as z:
        for name in contents:
            z.write(os.path.join(root, "src", name), name)
    with zipfile.ZipFile(root + "/a.zip") as z:
        checks["zip"] = {n: hashlib.sha256(z.read(n)).hexdigest() for n in z.namelist()} == want
    for mode in ("gz", "bz2", "xz"):
        path = f"{root}/a.tar.{mode}"
        with tarfile.open(path, "w:" + mode) as t:
            t.add(os.path.join(root, "src", "data"), arcname="data")
        out = f"{root}/out-{mode}"
        with tarfile.open(path) as t:
            t.extractall(out, filter="data")
        checks[mode] = all(hashlib.sha256(open(os.path.join(out, n), "rb").read()).hexdigest()
                           == h for n, h in want.items())
    blob = b"".join(contents.values())
    checks["lzma"] = lzma.decompress(lzma.compress(blob, preset=1)) == blob
    checks["bz2"] = bz2.decompress(bz2.compress(blob, 3)) == blob
    with lzma.open(io.BytesIO(lzma.compress(blob, format=lzma.FORMAT_ALONE))) as f:
        checks["lzma_alone"] = f.read() == blob
    shutil.rmtree(root)
    return checks
