"""Waiting for children the modern ways: os.pidfd_open polled until the child exits,
os.waitid on P_PID and P_PIDFD with WNOHANG and WEXITED, os.wait4's resource usage,
pidfd_send_signal, exit statuses decoded with waitstatus_to_exitcode, and asyncio's
PidfdChildWatcher running subprocesses."""

import asyncio
import os
import select
import signal
import subprocess
import sys


def poll_pidfd(code):
    child = subprocess.Popen([sys.executable, "-c", f"import sys; sys.exit({code})"])
    pidfd = os.pidfd_open(child.pid)
    p = select.poll()
    p.register(pidfd, select.POLLIN)
    ready = p.poll(30000)
    info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
    os.close(pidfd)
    child.returncode = info.si_status  # reaped here, not by Popen
    return {"ready": [e for _, e in ready] == [select.POLLIN], "status": info.si_status,
            "code": os.CLD_EXITED == info.si_code, "pid": info.si_pid == child.pid}


def waitid_nohang():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(3)
    os.close(r)
    early = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG)
    os.write(w, b"x")
    os.close(w)
    _, status, usage = os.wait4(pid, 0)
    return {"early": early, "exit": os.waitstatus_to_exitcode(status),
            "usage": usage.ru_maxrss > 0 and usage.ru_utime >= 0}


def signalled():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    pidfd = os.pidfd_open(child.pid)
    signal.pidfd_send_signal(pidfd, signal.SIGTERM)
    _, status = os.waitpid(child.pid, 0)
    child.returncode = -signal.SIGTERM
    os.close(pidfd)
    return {"signalled": os.WIFSIGNALED(status), "signal": os.WTERMSIG(status),
            "exitcode": os.waitstatus_to_exitcode(status)}


async def with_watcher(n):
    async def one(i):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", f"print({i} * {i})", stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        return [int(out), proc.returncode]

    return await asyncio.gather(*(one(i) for i in range(n)))


def handler(event, context):
    watcher = asyncio.PidfdChildWatcher()
    asyncio.set_child_watcher(watcher)
    try:
        children = asyncio.run(with_watcher(event["children"]))
    finally:
        asyncio.set_child_watcher(None)
    return {"pidfd": poll_pidfd(event["code"]), "waitid": waitid_nohang(),
            "signalled": signalled(), "asyncio": children}
