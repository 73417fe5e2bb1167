"""gevent: the standard library monkey-patched, greenlets fetching from an outside server
with urllib, a gevent.Timeout, and a pool."""

from gevent import monkey

monkey.patch_all()

import hashlib  # noqa: E402
import urllib.request  # noqa: E402

import gevent  # noqa: E402
from gevent.pool import Pool  # noqa: E402


def fetch(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return hashlib.sha256(r.read()).hexdigest()[:12]


def handler(event, context):
    base = event["base"]
    jobs = [gevent.spawn(fetch, f"{base}/bytes/{20000 + i}") for i in range(event["requests"])]
    gevent.joinall(jobs, timeout=30)
    try:
        with gevent.Timeout(0.1):
            gevent.sleep(5)
        timed_out = False
    except gevent.Timeout:
        timed_out = True
    pooled = Pool(3).map(lambda i: i * i, range(10))
    return {"fetched": [j.value for j in jobs], "timed_out": timed_out, "pooled": pooled}
