"""urllib3 as SDKs use it underneath: a PoolManager shared by threads with a bounded,
blocking pool per host, keep-alive reuse, retries with backoff on a refused port, streamed
and decoded bodies, and timeouts."""

import hashlib
import socket
from concurrent.futures import ThreadPoolExecutor

import urllib3
from urllib3.util import Retry, Timeout


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def handler(event, context):
    base = event["base"]
    pool = urllib3.PoolManager(num_pools=2, maxsize=event["maxsize"], block=True,
                               timeout=Timeout(connect=2, read=10), retries=Retry(total=2))

    def fetch(i):
        r = pool.request("GET", f"{base}/bytes/{1000 + i}", preload_content=False)
        digest = hashlib.sha256()
        for chunk in r.stream(4096):
            digest.update(chunk)
        r.release_conn()
        return r.status, digest.hexdigest()[:12]
    with ThreadPoolExecutor(event["threads"]) as ex:
        results = list(ex.map(fetch, range(event["requests"])))
    host_pool = pool.connection_from_url(base)
    retry = Retry(total=3, backoff_factor=0.01, connect=3)
    try:
        pool.request("GET", f"http://127.0.0.1:{closed_port()}/", retries=retry)
        refused = None
    except urllib3.exceptions.MaxRetryError as e:
        refused = type(e.reason).__name__
    small = pool.request("GET", f"{base}/bytes/10")
    return {"statuses": sorted({s for s, _ in results}), "digests": [d for _, d in results][:5],
            "connections": host_pool.num_connections <= event["maxsize"],
            "reused": host_pool.num_requests > host_pool.num_connections,
            "refused": refused, "small": len(small.data), "type": small.headers.get(
                "Content-Type")}
