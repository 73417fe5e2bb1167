"""fcntl's record locks between processes, as job runners guard shared files: a child
holds lockf on a range, the parent's non-blocking lock fails with EAGAIN or EACCES and
F_GETLK names the holder, a byte range elsewhere is free, the lock goes when the child
exits; and the fd flags (O_NONBLOCK, FD_CLOEXEC, F_DUPFD_CLOEXEC, the pipe size)."""

import errno
import fcntl
import os
import struct
import subprocess
import sys
import tempfile

HOLDER = ("import fcntl, sys\nf = open(sys.argv[1], 'r+')\n"
          "fcntl.lockf(f, fcntl.LOCK_EX, 100, 0)\nprint('locked', flush=True)\nsys.stdin.read()\n")


def getlk(fd, start, length):
    query = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, start, length, 0)
    kind, _, s, n, pid = struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_GETLK, query))
    return kind, s, n, pid


def handler(event, context):
    out = {}
    with tempfile.NamedTemporaryFile("w+") as f:
        f.write("x" * 1000)
        f.flush()
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, f.name],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        out["child"] = holder.stdout.readline().strip()
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 50)
            out["contended"] = "granted"
        except OSError as e:
            out["contended"] = e.errno in (errno.EAGAIN, errno.EACCES)
        kind, start, length, pid = getlk(f.fileno(), 0, 10)
        out["getlk"] = [kind == fcntl.F_WRLCK, start, length, pid == holder.pid]
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 100, 500)
        out["other_range"] = "granted"
        out["free_range"] = getlk(f.fileno(), 500, 100)[0] == fcntl.F_UNLCK
        holder.communicate("")
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 50)
        out["after_exit"] = "granted"
        fcntl.lockf(f, fcntl.LOCK_UN)
    r, w = os.pipe()
    flags = fcntl.fcntl(r, fcntl.F_GETFL)
    fcntl.fcntl(r, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    out["nonblock"] = bool(fcntl.fcntl(r, fcntl.F_GETFL) & os.O_NONBLOCK)
    out["cloexec"] = bool(fcntl.fcntl(r, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
    dup = fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, 100)
    out["dup"] = [dup >= 100, bool(fcntl.fcntl(dup, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)]
    out["pipe_size"] = fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)
    out["pipe_size_set"] = fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)
    for fd in (r, w, dup):
        os.close(fd)
    return out
