"""usetl.etl for the process backend: the same API as in a USF, carried out by the host.

The sandbox has no network (an empty network namespace): `get` and `post`
are requests to the host over the instance's socket, which applies the
function's URL policy and sends the body back. Files live in this process's
memory: downloads and responses are read-only "host" files, files the
function writes are "guest" files; they last one invocation.

    from usetl import etl
    f = etl.get("https://example.com/data.csv")
    rows = f.text().splitlines()
    r = etl.post("https://example.com/out", "a,b\\n")   # r.status, r.body
"""

import builtins
import errno
import io
import json
import os

__all__ = ["EtlError", "EtlFile", "Response", "get", "ls", "open", "post", "stat"]

_host = None  # set by the zygote: request(message, payload) -> (reply, body)
_files = {}  # name -> EtlFile, the guest region's copy replacing the host's


class EtlError(Exception):
    """An ETL request failed: `url` (None for a file), `reason`, `kind`, `status`."""

    def __init__(self, url, reason, kind="invalid", status=None):
        super().__init__(f"{url}: {reason}" if url else reason)
        self.url = url
        self.reason = reason
        self.kind = kind
        self.status = status


class EtlFile:
    """A file the host wrote (region "host", read-only) or the function wrote ("guest")."""

    __slots__ = ("name", "region", "data")

    def __init__(self, name, region, data):
        self.name = name
        self.region = region
        self.data = data

    @property
    def size(self):
        return len(self.data)

    def view(self):
        return memoryview(self.data).toreadonly()

    def bytes(self):
        return bytes(self.data)

    def text(self, encoding="utf-8", errors="strict"):
        return str(self.data, encoding, errors)

    def open(self):
        return io.BufferedReader(io.BytesIO(self.data))

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        return f"EtlFile({self.name!r}, {self.region}, {len(self.data)} B)"


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body.bytes())

    def __repr__(self):
        return f"Response({self.status}, {self.body!r})"


class _Writer(io.BytesIO):
    def __init__(self, name, initial, append):
        super().__init__(initial)
        self.name = name
        if append:
            self.seek(0, io.SEEK_END)

    def close(self):
        if not self.closed:
            _files[self.name] = EtlFile(self.name, "guest", self.getvalue())
        super().close()


def _request(message, payload=b""):
    if _host is None:
        raise EtlError(None, "the ETL API is only available inside an invocation")
    reply, body = _host(message, payload)
    error = reply.get("error")
    if error:
        raise EtlError(error["url"], error["reason"], error["kind"], error["status"])
    return reply, body


def _name_for(url, name):
    if name:
        return name
    path = url.split("?", 1)[0].rstrip("/")
    return path.rsplit("/", 1)[-1] or "index"


def get(url, name=None):
    """Download url; the file is named `name` or after the URL's path."""
    _, body = _request({"op": "get", "url": url})
    f = EtlFile(_name_for(url, name), "host", body)
    _files[f.name] = f
    return f


def post(url, data, content_type=None, name=None):
    """POST data (bytes, str, EtlFile, or an os.PathLike naming a /tmp file) to url."""
    if isinstance(data, EtlFile):
        payload = data.data
    elif isinstance(data, os.PathLike):
        with builtins.open(os.fspath(data), "rb") as f:
            payload = f.read()
    elif isinstance(data, str):
        payload = data.encode()
        content_type = content_type or "text/plain; charset=utf-8"
    else:
        payload = bytes(memoryview(data).cast("B"))
    reply, body = _request({"op": "post", "url": url,
                            "content_type": content_type or "application/octet-stream"}, payload)
    f = EtlFile(_name_for(url, name), "host", body)
    _files[f.name] = f
    return Response(reply["status"], reply["headers"], f)


def stat(name):
    return _files.get(name)


def ls():
    return sorted(_files.values(), key=lambda f: (f.region != "host", f.name))


def open(name, mode="r", encoding="utf-8"):
    binary = "b" in mode
    kind = mode.replace("b", "").replace("t", "")
    if kind not in ("r", "w", "a", "r+", "w+", "a+") or ("b" in mode and "t" in mode):
        raise ValueError(f"invalid mode {mode!r}")
    if kind == "r":
        f = stat(name)
        if f is None:
            raise FileNotFoundError(errno.ENOENT, "no such ETL file", name)
        raw = f.open()
    else:
        initial = b""
        if kind in ("r+", "a", "a+"):
            f = stat(name)
            if f is None and kind == "r+":
                raise FileNotFoundError(errno.ENOENT, "no such ETL file", name)
            initial = f.data if f is not None else b""
        raw = _Writer(name, initial, append=kind.startswith("a"))
    return raw if binary else io.TextIOWrapper(raw, encoding=encoding)


def _reset():
    """Between invocations: files last one invocation."""
    _files.clear()
