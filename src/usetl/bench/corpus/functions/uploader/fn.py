"""SeBS 120.uploader: fetch a URL into /tmp with urllib, then upload it to object storage."""

import hashlib
import os
import urllib.request


def handler(event, context):
    url, key = event["object"]["url"], event["object"]["key"]
    path = os.path.join("/tmp", "uploader-" + key)
    fetched, headers = urllib.request.urlretrieve(url, path)
    size = os.path.getsize(fetched)
    with open(path, "rb") as f:
        body = f.read()
    store = event["bucket"]["url"] + "/" + key
    put = urllib.request.Request(store, data=body, method="POST",
                                 headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(put, timeout=30) as r:
        status = r.status
    with urllib.request.urlopen(store, timeout=30) as r:
        back = r.read()
    os.remove(path)
    return {"size": size, "length_header": int(headers["Content-Length"]), "status": status,
            "round_trip": hashlib.sha256(back).hexdigest() == hashlib.sha256(body).hexdigest()}
