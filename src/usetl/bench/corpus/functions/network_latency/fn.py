"""FaaSdom network latency: repeated small requests to a server on 127.0.0.1, over one kept
connection (http.client) and a fresh TCP connection each (socket)."""

import http.client
import socket
import time
import urllib.parse


def handler(event, context):
    url = urllib.parse.urlsplit(event["url"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    statuses, started = [], time.perf_counter()
    for _ in range(event["requests"]):
        conn.request("GET", "/bytes/64")
        response = conn.getresponse()
        statuses.append((response.status, len(response.read())))
    conn.close()
    connects = 0
    for _ in range(event["connects"]):
        with socket.create_connection((url.hostname, url.port), timeout=30) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connects += 1
    elapsed = time.perf_counter() - started
    return {"statuses": sorted(set(statuses)), "count": len(statuses), "connects": connects,
            "measured": elapsed > 0}
