"""mmap as data handlers use it on files: a file mapped and searched, written through the
map and read back with read(), resized, a copy-on-write view (ACCESS_COPY) that leaves the
file alone, madvise, a shared anonymous map written by a forked child, and a map of a file
written through another fd."""

import mmap
import os
import tempfile


def handler(event, context):
    out = {}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "data.bin")
        rows = b"".join(b"%08d,record,%d\n" % (i, i * i) for i in range(event["rows"]))
        with open(path, "wb") as f:
            f.write(rows)
        with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
            out["size"] = len(m)
            out["find"] = m.find(b"00000042,")
            out["rfind"] = m.rfind(b"record")
            out["line"] = m[out["find"]:m.find(b"\n", out["find"])].decode()
            m[0:8] = b"XXXXXXXX"
            m.flush()
            m.madvise(mmap.MADV_SEQUENTIAL)
            m.resize(len(m) + 4096)
            m[-4:] = b"tail"
            m.move(0, 9, 6)
        with open(path, "rb") as f:
            back = f.read()
        out["written"] = [back[:16].decode(), back[-4:].decode(), len(back)]
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) as c:
            c[:4] = b"copy"
            out["copy_view"] = c[:4].decode()
        with open(path, "rb") as f:
            out["file_after_copy"] = f.read(4).decode()
        with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
            os.pwrite(f.fileno(), b"PWRITE", 100)
            out["seen_by_map"] = m[100:106].decode()
        shared = mmap.mmap(-1, 4096, flags=mmap.MAP_SHARED)
        pid = os.fork()
        if pid == 0:
            shared[:11] = b"from child!"
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        out["fork_shared"] = [shared[:11].decode(), os.waitstatus_to_exitcode(status)]
        private = mmap.mmap(-1, 4096, flags=mmap.MAP_PRIVATE)
        pid = os.fork()
        if pid == 0:
            private[:5] = b"lost!"
            os._exit(0)
        os.waitpid(pid, 0)
        out["fork_private"] = private[:5] == b"\0" * 5
        shared.close()
        private.close()
    return out
