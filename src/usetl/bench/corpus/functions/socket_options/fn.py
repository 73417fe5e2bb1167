"""Socket options and calls client libraries rely on, between a server thread and a
client on 127.0.0.1: TCP_NODELAY, SO_KEEPALIVE and its timers, buffer sizes, SO_LINGER,
MSG_PEEK and MSG_DONTWAIT, recv_into and sendmsg with scattered buffers, a half-close
with shutdown(SHUT_WR), timeouts, and getpeername/getsockname agreeing."""

import socket
import struct
import threading


def serve(listener, log):
    conn, _ = listener.accept()
    with conn:
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
        log.append(len(data))
        conn.sendall(b"got %d bytes" % len(data))


def handler(event, context):
    listener = socket.create_server(("127.0.0.1", 0))
    log = []
    thread = threading.Thread(target=serve, args=(listener, log))
    thread.start()
    c = socket.create_connection(listener.getsockname(), timeout=30)
    out = {}
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 5)
    out["options"] = [c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0,
                      c.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0,
                      c.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                      c.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                      c.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)]
    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    out["sndbuf"] = c.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 65536
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 5))
    out["linger"] = list(struct.unpack("ii", c.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                          8)))
    out["type"] = [c.family.name, c.type.name, c.getsockopt(socket.SOL_SOCKET,
                                                            socket.SO_TYPE)]
    out["names"] = c.getpeername() == listener.getsockname()
    sent = c.sendmsg([b"a" * 1000, b"b" * 2000, memoryview(b"c" * 3000)])
    payload = b"d" * event["kib"] * 1024
    c.sendall(payload)
    c.shutdown(socket.SHUT_WR)
    peeked = c.recv(3, socket.MSG_PEEK)
    buf = bytearray(100)
    n = c.recv_into(buf)
    out["reply"] = [peeked.decode(), buf[:n].decode(), sent]
    c.settimeout(0.1)
    out["eof"] = c.recv(10)
    thread.join(30)
    out["server_got"] = log
    c.close()
    listener.close()
    a, b = socket.socketpair()
    try:
        a.recv(10, socket.MSG_DONTWAIT)
        out["dontwait"] = "data"
    except BlockingIOError:
        out["dontwait"] = "would block"
    a.settimeout(0.05)
    try:
        a.recv(1)
        out["timeout"] = "data"
    except TimeoutError:
        out["timeout"] = "timed out"
    a.close()
    b.close()
    out["eof"] = out["eof"].decode()
    return out
