"""Pipes and socket pairs multiplexed with selectors and select.poll, fed by threads, with
timeouts that expire and non-blocking reads that would block."""

import os
import select
import selectors
import socket
import threading


def handler(event, context):
    r, w = os.pipe()
    a, b = socket.socketpair()
    sel = selectors.DefaultSelector()
    sel.register(r, selectors.EVENT_READ, "pipe")
    sel.register(a, selectors.EVENT_READ, "socket")
    empty = sel.select(timeout=0.05)
    n = event["messages"]

    def feed():
        for i in range(n):
            os.write(w, b"p%03d" % i)
            b.sendall(b"s%03d" % i)
        os.close(w)
        b.shutdown(socket.SHUT_WR)

    threading.Thread(target=feed).start()
    got = {"pipe": b"", "socket": b""}
    open_ = 2
    while open_:
        for key, _ in sel.select(timeout=30):
            data = os.read(r, 4096) if key.data == "pipe" else a.recv(4096)
            if not data:
                sel.unregister(key.fileobj)
                open_ -= 1
            got[key.data] += data
    sel.close()
    r2, w2 = os.pipe()
    os.set_blocking(r2, False)
    try:
        os.read(r2, 10)
        would_block = False
    except BlockingIOError:
        would_block = True
    poller = select.poll()
    poller.register(r2, select.POLLIN)
    before = poller.poll(50)
    os.write(w2, b"x")
    after = [ev & select.POLLIN != 0 for _, ev in poller.poll(1000)]
    readable, _, _ = select.select([r2], [], [], 1.0)
    for fd in (r, r2, w2):
        os.close(fd)
    a.close()
    b.close()
    return {"empty": empty, "pipe": len(got["pipe"]), "socket": len(got["socket"]),
            "in_order": got["pipe"][:8] == b"p000p001", "would_block": would_block,
            "poll_before": before, "poll_after": after, "select": len(readable)}
