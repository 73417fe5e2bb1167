"""An HTTP server inside the function, on 127.0.0.1 in a thread (a mock backend, as tests
and sidecar-style handlers run), called with urllib; and a socketserver echo service."""

import json
import socket
import socketserver
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Api(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path, "thread": threading.current_thread().name != ""})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.readline()[::-1])


def handler(event, context):
    api = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    echo = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05})
               for s in (api, echo)]
    for t in threads:
        t.start()
    try:
        base = f"http://127.0.0.1:{api.server_address[1]}"
        got = [json.load(urllib.request.urlopen(f"{base}/item/{i}", timeout=30))
               for i in range(event["requests"])]
        with socket.create_connection(echo.server_address, timeout=30) as s:
            s.sendall(b"olleh\n")
            reversed_ = s.makefile().readline()
    finally:
        for s in (api, echo):
            s.shutdown()
            s.server_close()
        for t in threads:
            t.join(30)
    return {"paths": [g["path"] for g in got], "echo": reversed_.strip()}
