"""FunctionBench gzip_compression: a file in /tmp compressed with gzip and read back."""

import gzip
import hashlib
import os
import random


def handler(event, context):
    rng = random.Random(event["seed"])
    size = event["file_size"] << 20
    data = bytes(rng.choice(b"ACGT \n") for _ in range(size // 64)) * 64
    with open("/tmp/gzip-in.txt", "wb") as f:
        f.write(data)
    with open("/tmp/gzip-in.txt", "rb") as src, gzip.open("/tmp/gzip-out.gz", "wb", 6) as dst:
        dst.writelines(src)
    compressed = os.path.getsize("/tmp/gzip-out.gz")
    with gzip.open("/tmp/gzip-out.gz", "rb") as f:
        same = hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
    os.remove("/tmp/gzip-in.txt")
    os.remove("/tmp/gzip-out.gz")
    return {"size": size, "smaller": compressed < size, "same": same}
