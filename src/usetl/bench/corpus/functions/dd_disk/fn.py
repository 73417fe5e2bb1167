"""FaaSdom's and ServerlessBench's disk tests run dd: blocks to /tmp with fsync, read back,
and the byte counts dd reports."""

import re
import subprocess


def dd(*args):
    done = subprocess.run(["dd", *args], capture_output=True, text=True, check=True)
    return int(re.search(r"(\d+) bytes", done.stderr).group(1))


def handler(event, context):
    count = str(event["count"])
    written = dd("if=/dev/zero", "of=/tmp/dd.bin", "bs=1M", f"count={count}", "conv=fsync")
    read = dd("if=/tmp/dd.bin", "of=/dev/null", "bs=64k")
    copied = dd("if=/tmp/dd.bin", "of=/tmp/dd2.bin", "bs=4k", "skip=16", "count=64")
    cmp = subprocess.run(["cmp", "-n", "1024", "/tmp/dd.bin", "/tmp/dd2.bin"]).returncode
    return {"written": written, "read": read, "copied": copied, "same_zeros": cmp == 0}
