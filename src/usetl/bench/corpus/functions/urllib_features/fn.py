"""urllib as scripts without requests use it, against an http.server API in a thread:
redirects followed (and a 303 turning a POST into a GET), cookies kept by an
HTTPCookieProcessor, basic auth answered after a 401 challenge, a gzip body decoded, a
chunked response, HEAD, HTTPError's body and headers, a JSON POST, and query strings."""

import base64
import gzip
import http.cookiejar
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

AUTH = "Basic " + base64.b64encode(b"etl:s3cret").decode()


class Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.reply(200, b"x" * 1234, [("X-Size", "1234")])

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/old":
            self.reply(301, headers=[("Location", "/new")])
        elif url.path == "/new":
            self.reply(200, b"moved here")
        elif url.path == "/login":
            self.reply(200, b"ok", [("Set-Cookie", "session=abc123; Path=/")])
        elif url.path == "/me":
            self.reply(200, self.headers.get("Cookie", "none").encode())
        elif url.path == "/private":
            if self.headers.get("Authorization") != AUTH:
                self.reply(401, b"who are you", [("WWW-Authenticate", 'Basic realm="etl"')])
            else:
                self.reply(200, b"secret data")
        elif url.path == "/gz":
            self.reply(200, gzip.compress(b"compressed " * 100), [("Content-Encoding", "gzip")])
        elif url.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(5):
                part = f"chunk{i};".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif url.path == "/query":
            self.reply(200, json.dumps(urllib.parse.parse_qs(url.query)).encode())
        else:
            self.reply(404, b'{"error": "not found"}', [("Content-Type", "application/json")])

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/submit":
            self.reply(303, headers=[("Location", "/new")])
        else:
            self.reply(200, json.dumps({"got": json.loads(body),
                                        "type": self.headers["Content-Type"]}).encode())

    def log_message(self, *args):
        pass


def handler(event, context):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    out = {}
    try:
        with urllib.request.urlopen(f"{base}/old", timeout=30) as r:
            out["redirect"] = [r.url.rsplit("/", 1)[1], r.read().decode()]
        jar = http.cookiejar.CookieJar()
        passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        passwords.add_password(None, base, "etl", "s3cret")
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar),
                                             urllib.request.HTTPBasicAuthHandler(passwords))
        opener.open(f"{base}/login", timeout=30).read()
        out["cookie"] = opener.open(f"{base}/me", timeout=30).read().decode()
        out["auth"] = opener.open(f"{base}/private", timeout=30).read().decode()
        with urllib.request.urlopen(urllib.request.Request(
                f"{base}/gz", headers={"Accept-Encoding": "gzip"}), timeout=30) as r:
            out["gzip"] = len(gzip.decompress(r.read()))
        with urllib.request.urlopen(f"{base}/chunked", timeout=30) as r:
            out["chunked"] = r.read().decode()
        head = urllib.request.urlopen(urllib.request.Request(f"{base}/x", method="HEAD"),
                                      timeout=30)
        out["head"] = [head.headers["Content-Length"], head.read().decode()]
        try:
            urllib.request.urlopen(f"{base}/missing", timeout=30)
        except urllib.error.HTTPError as e:
            out["error"] = [e.code, json.loads(e.read()), e.headers["Content-Type"]]
        posted = urllib.request.Request(f"{base}/json", data=json.dumps(
            {"rows": [1, 2]}).encode(), headers={"Content-Type": "application/json"})
        out["post"] = json.loads(urllib.request.urlopen(posted, timeout=30).read())
        with urllib.request.urlopen(f"{base}/submit", data=b"a=1", timeout=30) as r:
            out["see_other"] = r.read().decode()
        query = urllib.parse.urlencode({"q": "zürich & co", "page": [1, 2]}, doseq=True)
        out["query"] = json.loads(urllib.request.urlopen(f"{base}/query?{query}",
                                                         timeout=30).read())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(30)
    return out
