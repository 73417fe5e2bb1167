"""requests and httpx against a server on 127.0.0.1: a session's kept connection, a POST,
streaming, a timeout set, and an HTTP error raised."""

import hashlib

import httpx
import requests


def handler(event, context):
    base = event["base"]
    with requests.Session() as s:
        r = s.get(base + "/bytes/200000", timeout=30)
        streamed = hashlib.sha256()
        with s.get(base + "/bytes/500000", stream=True, timeout=30) as big:
            for chunk in big.iter_content(65536):
                streamed.update(chunk)
        posted = s.post(base + "/store/req", data=b"z" * 50000, timeout=30).status_code
        back = s.get(base + "/store/req", timeout=30).content
        try:
            s.get(base + "/nothing", timeout=30).raise_for_status()
            raised = None
        except requests.HTTPError as e:
            raised = e.response.status_code
    with httpx.Client(base_url=base, timeout=30) as client:
        got = client.get("/bytes/100000")
        hposted = client.post("/store/hx", content=b"h" * 70000).status_code
        hback = client.get("/store/hx").content
    return {"requests": [r.status_code, len(r.content), posted, len(back), raised],
            "streamed": streamed.hexdigest(),
            "httpx": [got.status_code, len(got.content), hposted, len(hback), got.http_version]}
