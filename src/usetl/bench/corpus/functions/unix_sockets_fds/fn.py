"""Unix-domain sockets as local services and worker pools use them: a threaded
socketserver on a path, SO_PEERCRED naming the peer, file descriptors passed with
send_fds and recv_fds (the receiver reading a file it never opened), an abstract-namespace
datagram socket, SOCK_SEQPACKET keeping message boundaries, and socket.fromfd."""

import os
import socket
import socketserver
import struct
import tempfile
import threading


class Upper(socketserver.StreamRequestHandler):
    def handle(self):
        creds = self.request.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                        struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", creds)
        line = self.rfile.readline()
        self.wfile.write(line.upper() + f"{pid == os.getpid()} {uid == os.getuid()}\n".encode())


def handler(event, context):
    out = {}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "svc.sock")
        server = socketserver.ThreadingUnixStreamServer(path, Upper)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(path)
            c.sendall(b"hello unix\n")
            out["stream"] = c.makefile().read().splitlines()
        server.shutdown()
        server.server_close()
        thread.join(30)
        secret = os.path.join(d, "secret.txt")
        with open(secret, "w") as f:
            f.write(event["secret"])
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fd = os.open(secret, os.O_RDONLY)
        r, w = os.pipe()
        socket.send_fds(a, [b"two fds"], [fd, w])
        os.close(fd)
        os.close(w)
        msg, fds, _, _ = socket.recv_fds(b, 100, 4)
        out["passed"] = [msg.decode(), len(fds), os.read(fds[0], 100).decode()]
        os.write(fds[1], b"through the passed pipe")
        os.close(fds[1])
        out["pipe_end"] = os.read(r, 100).decode()
        os.close(fds[0])
        os.close(r)
        dup = socket.fromfd(a.fileno(), socket.AF_UNIX, socket.SOCK_STREAM)
        dup.sendall(b"via fromfd")
        out["fromfd"] = b.recv(100).decode()
        for s in (a, b, dup):
            s.close()
    name = f"\0corpus-{os.getpid()}"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(name)
    tx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    for i in range(3):
        tx.sendto(b"datagram %d" % i, name)
    out["abstract"] = [rx.recv(100).decode() for _ in range(3)]
    out["abstract_name"] = rx.getsockname().startswith(b"\0corpus-")
    rx.close()
    tx.close()
    p, q = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    p.send(b"first")
    p.send(b"second message")
    out["seqpacket"] = [q.recv(3).decode(), q.recv(100).decode()]
    p.close()
    out["seqpacket_eof"] = q.recv(100)
    q.close()
    out["seqpacket_eof"] = out["seqpacket_eof"].decode()
    return out
