"""Resource limits as sandboxing functions set them for their work: RLIMIT_NOFILE lowered
until open fails with EMFILE, RLIMIT_FSIZE cutting a write short at the limit and failing
the next with EFBIG (SIGXFSZ ignored), a child started with lower limits (preexec_fn,
prlimit), RLIMIT_CPU read back, and getrusage of the process and of its children."""

import errno
import os
import resource
import signal
import subprocess
import sys
import tempfile


def open_until_emfile(limit):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    opened, failure = [], None
    try:
        while len(opened) < limit + 10:
            opened.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as e:
        failure = errno.errorcode[e.errno]
    finally:
        for fd in opened:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return failure, max(opened) < limit


def write_past_fsize(limit):
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        with tempfile.TemporaryFile() as f:
            written = [os.write(f.fileno(), b"x" * (limit - 100)),
                       os.write(f.fileno(), b"y" * 1000)]  # short: up to the limit
            try:
                written.append(os.write(f.fileno(), b"z"))
                return written, "wrote"
            except OSError as e:
                return written, errno.errorcode[e.errno]
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


CHILD = "import resource; print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])"


def handler(event, context):
    emfile, below = open_until_emfile(event["nofile"])
    written, efbig = write_past_fsize(event["fsize"])
    limited = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))).stdout.split()
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    before = resource.prlimit(child.pid, resource.RLIMIT_CORE)
    resource.prlimit(child.pid, resource.RLIMIT_CORE, (0, before[1]))
    after = resource.prlimit(child.pid, resource.RLIMIT_CORE)
    child.communicate(b"")
    cpu = resource.getrlimit(resource.RLIMIT_CPU)
    usage, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (10, 5))
        inverted = None
    except ValueError as e:
        inverted = str(e)
    return {"emfile": emfile, "below_limit": below, "written": written, "efbig": efbig,
            "child_limits": limited, "prlimit_core": after[0], "cpu_unlimited":
            cpu == (resource.RLIM_INFINITY, resource.RLIM_INFINITY),
            "rusage": usage.ru_utime > 0 and usage.ru_maxrss > 0,
            "children_rusage": kids.ru_utime + kids.ru_stime > 0, "inverted": inverted}
