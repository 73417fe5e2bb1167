"""urllib and http.client against a server on 127.0.0.1: GET, POST, headers, a 404 as
HTTPError, chunked reads and a kept-alive connection."""

import hashlib
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request


def handler(event, context):
    base = event["base"]
    request = urllib.request.Request(base + "/bytes/300000", headers={"User-Agent": "corpus"})
    with urllib.request.urlopen(request, timeout=30) as r:
        digest, total = hashlib.sha256(), 0
        while chunk := r.read(8192):
            digest.update(chunk)
            total += len(chunk)
        status, kind = r.status, r.headers.get_content_type()
    try:
        urllib.request.urlopen(base + "/missing", timeout=30)
        missing = None
    except urllib.error.HTTPError as e:
        missing = e.code
    body = json.dumps({"items": list(range(1000))}).encode()
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.request("POST", "/store/doc.json", body, {"Content-Type": "application/json"})
    posted = conn.getresponse()
    posted.read()
    conn.request("GET", "/store/doc.json")
    got = conn.getresponse()
    back = json.loads(got.read())
    conn.close()
    return {"status": status, "type": kind, "bytes": total, "sha256": digest.hexdigest(),
            "missing": missing, "posted": posted.status, "got": got.status,
            "items": len(back["items"]), "same": hashlib.sha256(json.dumps(back).encode())
            .digest() == hashlib.sha256(body).digest()}
