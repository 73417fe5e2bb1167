"""Signals as long-running handlers use them for graceful shutdown and watchdogs: handlers
for SIGTERM and SIGUSR1 raised by os.kill and signal.raise_signal, a blocked signal left
pending and collected with sigwait, set_wakeup_fd waking a selector, an interval timer
counting ticks, SIGCHLD from an exiting child, and pthread_kill to the main thread."""

import os
import selectors
import signal
import socket
import subprocess
import threading
import time


def handler(event, context):
    seen = []
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGALRM,
                                             signal.SIGCHLD, signal.SIGUSR2)}
    signal.signal(signal.SIGTERM, lambda s, f: seen.append("TERM"))
    signal.signal(signal.SIGUSR1, lambda s, f: seen.append("USR1"))
    os.kill(os.getpid(), signal.SIGTERM)
    signal.raise_signal(signal.SIGUSR1)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    os.kill(os.getpid(), signal.SIGUSR2)
    pending = signal.SIGUSR2 in signal.sigpending()
    waited = signal.sigwait({signal.SIGUSR2}).name
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})
    rsock, wsock = socket.socketpair()
    rsock.setblocking(False)
    wsock.setblocking(False)
    previous_fd = signal.set_wakeup_fd(wsock.fileno())
    signal.signal(signal.SIGUSR2, lambda s, f: None)
    threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR2)).start()
    with selectors.DefaultSelector() as sel:
        sel.register(rsock, selectors.EVENT_READ)
        woke = [int.from_bytes(rsock.recv(16), "little") for _ in sel.select(timeout=10)]
    signal.set_wakeup_fd(previous_fd)
    ticks = []
    signal.signal(signal.SIGALRM, lambda s, f: ticks.append(1))
    signal.setitimer(signal.ITIMER_REAL, 0.02, 0.02)
    deadline = time.monotonic() + 10
    while len(ticks) < event["ticks"] and time.monotonic() < deadline:
        signal.pause()
    signal.setitimer(signal.ITIMER_REAL, 0)
    children = []
    signal.signal(signal.SIGCHLD, lambda s, f: children.append(s))
    subprocess.run(["true"])
    main = threading.main_thread().ident
    threading.Thread(target=signal.pthread_kill, args=(main, signal.SIGUSR1)).start()
    deadline = time.monotonic() + 10
    while seen.count("USR1") < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # the handler runs on the main thread between bytecodes
    for s, h in old.items():
        signal.signal(s, h)
    rsock.close()
    wsock.close()
    return {"seen": seen, "pending": pending, "sigwait": waited, "woke": woke,
            "ticks": len(ticks) >= event["ticks"], "sigchld": bool(children),
            "names": [signal.Signals(n).name for n in (1, 2, 9, 15)],
            "strsignal": signal.strsignal(signal.SIGSEGV)}
