"""usetl.etl: a function's I/O, carried out by the host (runs inside the USF).

The guest has no network stack and no disk. A download is one request to
the host, which streams the body straight into the host region, memory the
guest sees read-only; the function gets a zero-copy view of it:

    from usetl import etl

    f = etl.get("https://example.com/data.csv")   # EtlFile in the host region
    rows = f.text().splitlines()                  # or f.view(), f.bytes(), f.open()
    r = etl.post("https://example.com/out", "a,b\\n")   # r.status, r.body (an EtlFile)

Files the function writes (`etl.open(name, "w")`) go to the guest region,
which the host can read in place: `etl.post(url, data)` sends bytes, str,
an EtlFile or a /tmp file (given as an os.PathLike, e.g. pathlib.Path) from
guest memory, without passing it through the agent. Opening a host-region
file for writing works on a copy in the guest region; the original cannot
change. `etl.ls()` lists both regions. Every failure (HTTP error status,
refused, timeout, denied by the URL policy, a full region) is `EtlError`,
with the URL and the reason. Region contents last one invocation.

Each request is one ioctl on /dev/etl: one VM exit. The regions are mapped
once, when this module is imported.
"""

import errno
import fcntl
import io
import json
import mmap
import os

__all__ = ["EtlError", "EtlFile", "Response", "get", "ls", "open", "post"]

DEVICE = "/dev/etl"
ETL_REQUEST = 0xC0085545  # must match usetl.libos.etl_device.ETL_REQUEST
HEADER = 8


class EtlError(Exception):
    """An ETL request failed: `url` (None for a region), `reason`, `kind`, `status`.

    kind is one of denied, dns, refused, timeout, http_status (status holds
    the HTTP status), too_large (also a full region), invalid, connection.
    """

    def __init__(self, url, reason, kind="invalid", status=None):
        super().__init__(f"{url}: {reason}" if url else reason)
        self.url = url
        self.reason = reason
        self.kind = kind
        self.status = status


class _Device:
    """/dev/etl: the request buffer and the two mapped regions."""

    def __init__(self):
        self.fd = os.open(DEVICE, os.O_RDWR | os.O_CLOEXEC)
        self.buffer = bytearray(64 << 10)
        info = self.request({"op": "info"})
        host = mmap.mmap(self.fd, info["host_size"], access=mmap.ACCESS_READ)
        guest = mmap.mmap(
            self.fd, info["guest_size"], access=mmap.ACCESS_WRITE, offset=info["host_size"]
        )
        self.views = {"host": memoryview(host), "guest": memoryview(guest)}

    def request(self, message):
        data = json.dumps(message).encode()
        if HEADER + len(data) > len(self.buffer):
            self.buffer = bytearray(HEADER + len(data))
        buf = self.buffer
        _put_header(buf, len(data))
        buf[HEADER : HEADER + len(data)] = data
        try:
            fcntl.ioctl(self.fd, ETL_REQUEST, buf)
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
            # The reply is larger than the buffer: the host kept it for us.
            self.buffer = buf = bytearray(int.from_bytes(buf[0:4], "little"))
            data = b'{"op": "reply"}'
            _put_header(buf, len(data))
            buf[HEADER : HEADER + len(data)] = data
            fcntl.ioctl(self.fd, ETL_REQUEST, buf)
        reply = json.loads(buf[HEADER : HEADER + int.from_bytes(buf[0:4], "little")])
        error = reply.get("error")
        if error:
            raise EtlError(error["url"], error["reason"], error["kind"], error["status"])
        return reply


def _put_header(buf, length):
    buf[0:4] = length.to_bytes(4, "little")
    buf[4:8] = len(buf).to_bytes(4, "little")


class EtlFile:
    """A file in the host region (written by the host) or the guest region."""

    __slots__ = ("name", "region", "offset", "size")

    def __init__(self, name, region, offset, size):
        self.name = name
        self.region = region
        self.offset = offset
        self.size = size

    def view(self):
        """A read-only memoryview of the file's bytes, in place (no copy)."""
        return _device.views[self.region][self.offset : self.offset + self.size].toreadonly()

    def bytes(self):
        return bytes(self.view())

    def text(self, encoding="utf-8", errors="strict"):
        return str(self.view(), encoding, errors)

    def open(self):
        """A binary file object reading the file in place."""
        return io.BufferedReader(_ViewReader(self.view()))

    def __len__(self):
        return self.size

    def __repr__(self):
        return f"EtlFile({self.name!r}, {self.region}, {self.size} B)"


class Response:
    """What a post returned: the HTTP status, headers and body (an EtlFile in the host region)."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body.bytes())

    def __repr__(self):
        return f"Response({self.status}, {self.body!r})"


class _ViewReader(io.RawIOBase):
    def __init__(self, view):
        self._view = view
        self._pos = 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def readinto(self, b):
        data = self._view[self._pos : self._pos + len(b)]
        n = len(data)
        memoryview(b).cast("B")[:n] = data
        self._pos += n
        return n

    def readall(self):
        data = bytes(self._view[self._pos :])
        self._pos = len(self._view)
        return data

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self):
        return self._pos


class _Writer(io.BytesIO):
    """A file being written: kept in guest memory, stored in the guest region on close."""

    def __init__(self, name, initial, append):
        super().__init__(initial)
        self.name = name
        if append:
            self.seek(0, io.SEEK_END)

    def close(self):
        if self.closed:
            return
        try:
            with self.getbuffer() as data:
                _store(self.name, data)
        finally:
            super().close()


def _file(described):
    return EtlFile(described["name"], described["region"], described["offset"],
                   described["size"])


def _store(name, data):
    f = _file(_device.request({"op": "alloc", "name": name, "size": len(data)})["file"])
    _device.views["guest"][f.offset : f.offset + f.size] = data
    return f


def get(url, name=None):
    """Download url into the host region; the file is named `name` or after the URL's path."""
    reply = _device.request({"op": "get", "url": url, "name": name})
    return _file(reply["file"])


def post(url, data, content_type=None, name=None):
    """POST data (bytes, str, EtlFile, or an os.PathLike naming a /tmp file) to url.

    The response body lands in the host region (named `name`, or after the URL).
    """
    if isinstance(data, EtlFile):
        source = {"region": data.region, "offset": data.offset, "size": data.size}
    elif isinstance(data, os.PathLike):
        source = {"tmp": os.path.abspath(os.fspath(data))}
    else:
        if isinstance(data, str):
            data = data.encode()
            content_type = content_type or "text/plain; charset=utf-8"
        data = memoryview(data).cast("B")
        reply = _device.request({"op": "alloc", "name": None, "size": len(data)})
        f = _file(reply["file"])
        _device.views["guest"][f.offset : f.offset + f.size] = data
        source = {"region": "guest", "offset": f.offset, "size": f.size}
    reply = _device.request({
        "op": "post", "url": url, "source": source, "name": name,
        "content_type": content_type or "application/octet-stream",
    })
    return Response(reply["status"], reply["headers"], _file(reply["file"]))


def stat(name):
    """The EtlFile called name (the guest region's copy first), or None."""
    described = _device.request({"op": "stat", "name": name})["file"]
    return _file(described) if described else None


def ls():
    """Every file in both regions, the host region's first."""
    return [_file(f) for f in _device.request({"op": "ls"})["files"]]


def open(name, mode="r", encoding="utf-8"):
    """Open an ETL file. Reading is in place; writing is to a copy stored in the guest region
    when the file is closed (a host-region file is never changed)."""
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
            initial = f.view() if f is not None else b""
        raw = _Writer(name, initial, append=kind.startswith("a"))
    return raw if binary else io.TextIOWrapper(raw, encoding=encoding)


_device = _Device()
