"""The SIGALRM timeout pattern around blocking calls, where the handler's exception must
break the wait (PEP 475 retries an interrupted call only when the handler returns): a
socket recv, a pipe read, a lock acquire, queue.get, select, subprocess.wait and
time.sleep each cut short by setitimer, and a handler that returns letting recv resume."""

import contextlib
import os
import queue
import select
import signal
import socket
import subprocess
import threading
import time


class Expired(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds):
    def expire(signum, frame):
        raise Expired()

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def interrupted(fn):
    started = time.monotonic()
    try:
        with deadline(0.1):
            fn()
        return "returned"
    except Expired:
        return "expired" if time.monotonic() - started < 10 else "late"


def handler(event, context):
    a, b = socket.socketpair()
    r, w = os.pipe()
    lock = threading.Lock()
    lock.acquire()
    sleeper = subprocess.Popen(["sleep", "30"])
    calls = {"recv": lambda: a.recv(10), "read": lambda: os.read(r, 10),
             "lock": lambda: lock.acquire(), "queue": lambda: queue.Queue().get(),
             "select": lambda: select.select([r], [], [], 30),
             "wait": lambda: sleeper.wait(), "sleep": lambda: time.sleep(30)}
    out = {name: interrupted(fn) for name, fn in calls.items()}
    sleeper.kill()
    sleeper.wait()
    ticks = []
    signal.signal(signal.SIGALRM, lambda s, f: ticks.append(s))
    signal.setitimer(signal.ITIMER_REAL, 0.05)
    threading.Timer(0.3, b.send, (b"late data",)).start()
    out["resumed_recv"] = a.recv(100).decode()
    out["handler_ran"] = len(ticks)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    for s in (a, b):
        s.close()
    os.close(r)
    os.close(w)
    return out
