"""Crash-safe writes as handlers that update state files make them: a temporary file in
the target's directory, fsync, os.replace over the old file and an fsync of the directory;
an O_TMPFILE file given a name with linkat through /proc/self/fd; rename refusing a
non-empty directory; a SpooledTemporaryFile rolling over to disk; and shutil.move between
/tmp and /dev/shm, which are different filesystems."""

import errno
import json
import os
import shutil
import tempfile


def atomic_write(path, data):
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def handler(event, context):
    out = {}
    with tempfile.TemporaryDirectory() as d:
        state = os.path.join(d, "state.json")
        for version in range(event["versions"]):
            atomic_write(state, {"version": version})
        with open(state) as f:
            out["state"] = json.load(f)
        out["leftovers"] = sorted(n for n in os.listdir(d) if n.startswith(".tmp-"))
        fd = os.open(d, os.O_TMPFILE | os.O_WRONLY, 0o644)
        os.write(fd, b"anonymous until linked")
        out["tmpfile_unlisted"] = os.listdir(d) == ["state.json"]
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:  # a dir fd makes os.link call linkat with AT_SYMLINK_FOLLOW, as open(2) shows
            os.link(f"/proc/self/fd/{fd}", "linked.txt", dst_dir_fd=dfd)
        finally:
            os.close(dfd)
        os.close(fd)
        with open(os.path.join(d, "linked.txt")) as f:
            out["linked"] = f.read()
        os.makedirs(os.path.join(d, "full/x"))
        os.mkdir(os.path.join(d, "empty"))
        os.rename(os.path.join(d, "empty"), os.path.join(d, "renamed"))
        try:
            os.rename(os.path.join(d, "renamed"), os.path.join(d, "full"))
        except OSError as e:
            out["rename_onto_full"] = errno.errorcode[e.errno] in ("ENOTEMPTY", "EEXIST")
        with tempfile.SpooledTemporaryFile(max_size=1024, dir=d) as spool:
            spool.write(b"x" * 100)
            small = spool._rolled
            spool.write(b"y" * 2000)
            out["spooled"] = [small, spool._rolled, spool.tell()]
        shm = tempfile.mkdtemp(dir="/dev/shm")
        try:
            src = os.path.join(d, "linked.txt")
            out["different_fs"] = os.stat(d).st_dev != os.stat(shm).st_dev
            try:
                os.rename(src, os.path.join(shm, "direct.txt"))
                out["cross_rename"] = "renamed"
            except OSError as e:
                out["cross_rename"] = errno.errorcode[e.errno]
            moved = shutil.move(src if os.path.exists(src) else os.path.join(shm, "direct.txt"),
                                os.path.join(shm, "moved.txt"))
            with open(moved) as f:
                out["moved"] = f.read()
            shutil.move(os.path.join(d, "full"), os.path.join(shm, "full"))
            out["moved_tree"] = os.listdir(os.path.join(shm, "full"))
        finally:
            shutil.rmtree(shm)
    return out
