"""The pre-fork server pattern (gunicorn's, uWSGI's): a parent opens a listening TCP
socket, forks workers that each accept on the inherited socket and answer with their own
pid, clients spread across them, and the parent stops the workers with SIGTERM and reaps
them."""

import os
import signal
import socket
import sys


def serve(listener):
    signal.signal(signal.SIGTERM, lambda s, f: os._exit(0))
    while True:
        conn, _ = listener.accept()
        with conn:
            request = conn.recv(100)
            conn.sendall(b"%d %s" % (os.getpid(), request.upper()))


def handler(event, context):
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    address = listener.getsockname()
    workers = []
    for _ in range(event["workers"]):
        pid = os.fork()
        if pid == 0:
            try:
                serve(listener)
            finally:
                os._exit(1)
        workers.append(pid)
    listener.close()
    answers = []
    for i in range(event["requests"]):
        with socket.create_connection(address, timeout=30) as c:
            c.sendall(b"request %d" % i)
            answers.append(c.recv(100).decode())
    pids = {int(a.split()[0]) for a in answers}
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    codes = sorted(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in workers)
    sys.stdout.flush()
    return {"answers": sorted(a.split(" ", 1)[1] for a in answers),
            "served_by_workers": pids <= set(workers), "codes": codes}
