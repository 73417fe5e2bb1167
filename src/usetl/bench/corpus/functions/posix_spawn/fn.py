"""os.posix_spawn and posix_spawnp as process launchers use them (CPython's subprocess
does too): file actions that open, dup2 and close, a new session, a signal mask and
default actions reset, the child's environment, and waitpid, wait4's usage and
waitstatus_to_exitcode."""

import os
import signal
import sys
import tempfile


def handler(event, context):
    out = {}
    with tempfile.TemporaryDirectory() as d:
        log = os.path.join(d, "child.log")
        pid = os.posix_spawn(sys.executable, [sys.executable, "-c",
                                              "import os, sys; print(os.environ['STAGE']); "
                                              "print('err', file=sys.stderr); sys.exit(4)"],
                             {"STAGE": event["stage"]},
                             file_actions=[(os.POSIX_SPAWN_OPEN, 1, log,
                                            os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
                                           (os.POSIX_SPAWN_DUP2, 1, 2)])
        _, status = os.waitpid(pid, 0)
        out["exit"] = os.waitstatus_to_exitcode(status)
        with open(log) as f:
            out["log"] = f.read().split()
        r, w = os.pipe()
        pid = os.posix_spawnp("sh", ["sh", "-c", "echo $0 from sh; ps -o sid= -p $$ >/dev/null"
                                     " 2>&1; echo done"], os.environ,
                              file_actions=[(os.POSIX_SPAWN_DUP2, w, 1),
                                            (os.POSIX_SPAWN_CLOSE, r)],
                              setsid=True)
        os.close(w)
        with os.fdopen(r) as f:
            out["spawnp"] = f.read().split()
        _, status, usage = os.wait4(pid, 0)
        out["spawnp_exit"] = os.waitstatus_to_exitcode(status)
        out["rusage"] = usage.ru_maxrss > 0
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        code = "import signal; print(sorted(s.name for s in signal.pthread_sigmask(" \
               "signal.SIG_BLOCK, [])))"
        r, w = os.pipe()
        pid = os.posix_spawn(sys.executable, [sys.executable, "-c", code], os.environ,
                             file_actions=[(os.POSIX_SPAWN_DUP2, w, 1)],
                             setsigmask={signal.SIGUSR2}, setsigdef={signal.SIGINT})
        os.close(w)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
        with os.fdopen(r) as f:
            out["child_mask"] = f.read().strip()
        os.waitpid(pid, 0)
        try:
            os.posix_spawn("/no/such/program", ["x"], os.environ)
        except OSError as e:
            out["missing"] = e.strerror
        pid = os.posix_spawn("/bin/sh", ["sh", "-c", "kill -TERM $$"], os.environ)
        _, status = os.waitpid(pid, 0)
        out["signalled"] = [os.WIFSIGNALED(status), os.WTERMSIG(status)]
    return out
