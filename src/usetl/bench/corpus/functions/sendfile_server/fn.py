"""socket.sendfile (os.sendfile from a file in /tmp to a socket), as static file servers
send, to a client in another thread; and os.sendfile between two files."""

import hashlib
import os
import socket
import threading


def handler(event, context):
    data = os.urandom(16) * (event["kib"] * 64)
    with open("/tmp/sendfile-src.bin", "wb") as f:
        f.write(data)
    listener = socket.create_server(("127.0.0.1", 0))
    got = []

    def client():
        with socket.create_connection(listener.getsockname(), timeout=30) as c:
            chunks = []
            while chunk := c.recv(65536):
                chunks.append(chunk)
            got.append(b"".join(chunks))

    t = threading.Thread(target=client)
    t.start()
    conn, _ = listener.accept()
    with conn, open("/tmp/sendfile-src.bin", "rb") as f:
        sent = conn.sendfile(f)
    t.join(30)
    listener.close()
    src = os.open("/tmp/sendfile-src.bin", os.O_RDONLY)
    dst = os.open("/tmp/sendfile-dst.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    copied = os.sendfile(dst, src, 0, len(data))
    os.close(src)
    os.close(dst)
    same = hashlib.sha256(open("/tmp/sendfile-dst.bin", "rb").read()).digest() == \
        hashlib.sha256(data).digest()
    return {"sent": sent, "received": len(got[0]), "intact": got[0] == data,
            "copied": copied, "same": same}
