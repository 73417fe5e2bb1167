"""ServerlessBench/FaaSdom disk I/O: blocks written to /tmp with fsync, read back, seeked,
truncated, renamed and listed."""

import hashlib
import os


def handler(event, context):
    block = bytes(range(256)) * (event["block_kib"] * 4)
    path = "/tmp/disk-io.bin"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    for _ in range(event["blocks"]):
        os.write(fd, block)
    os.fsync(fd)
    os.close(fd)
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(1 << 16):
            digest.update(chunk)
        f.seek(-len(block) // 2, os.SEEK_END)
        tail = f.read()
    os.truncate(path, len(block))
    os.rename(path, path + ".old")
    listed = sorted(n for n in os.listdir("/tmp") if n.startswith("disk-io"))
    st = os.stat(path + ".old")
    os.remove(path + ".old")
    return {"sha256": digest.hexdigest(), "tail": len(tail), "listed": listed,
            "size_after": st.st_size, "mode": oct(st.st_mode & 0o777)}
