"""usetl.etl: a function's I/O, carried out by the host (runs in a USF or a process sandbox).

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
once, when this module is imported. In the process backend's sandbox the
same requests go to the host over the instance's socket (usetl.sandbox): the
transport is the only difference, and the request layout is usetl.abi.etl.
"""

import builtins
import errno
import fcntl
import io
import json
import mmap
import os
import threading

from usetl.abi import etl as wire

__all__ = ["EtlError", "EtlFile", "Response", "get", "ls", "open", "post", "stat"]

REPLY_ROOM = 64 << 10  # most replies fit; a larger one is fetched with {"op": "reply"}
IOCTL_GIL_FREE = 1024  # CPython's fcntl.ioctl: IOCTL_BUFSZ


class EtlError(Exception):
    """An ETL request failed: `url` (None for a region), `reason`, `kind`, `status`.

    kind is one of usetl.abi.etl.ERROR_KINDS: denied, dns, refused, timeout,
    http_status (status holds the HTTP status), too_large (also a full
    region), invalid, connection.
    """

    def __init__(self, url, reason, kind=wire.INVALID, status=None):
        super().__init__(f"{url}: {reason}" if url else reason)
        self.url = url
        self.reason = reason
        self.kind = kind
        self.status = status


class DeviceTransport:
    """A USF's /dev/etl: one ioctl per request, both regions mapped once."""

    tmp_in_place = True  # the monitor reads a /tmp file where it is

    def __init__(self):
        self.fd = os.open(wire.ETL_DEVICE, os.O_RDWR | os.O_CLOEXEC)
        info = self.request({"op": wire.INFO})
        host = mmap.mmap(self.fd, info["host_size"], access=mmap.ACCESS_READ)
        guest = mmap.mmap(
            self.fd, info["guest_size"], access=mmap.ACCESS_WRITE, offset=info["host_size"]
        )
        self.views = {wire.HOST_REGION: memoryview(host), wire.GUEST_REGION: memoryview(guest)}

    def request(self, message):
        data = json.dumps(message).encode()
        size = wire.ETL_HEADER_SIZE
        # A buffer per request: threads may have requests in flight at once.
        # fcntl.ioctl releases the GIL only for a buffer of at most 1024 bytes
        # (it copies it), so with other threads a request uses one that small
        # and fetches a larger reply with a second request.
        room = IOCTL_GIL_FREE if threading.active_count() > 1 else REPLY_ROOM
        buf = bytearray(max(room, size + len(data)))
        buf[:size] = wire.pack_etl_header(len(data), len(buf))
        buf[size : size + len(data)] = data
        try:
            fcntl.ioctl(self.fd, wire.ETL_REQUEST, buf)
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
            # The reply is larger than the buffer: the host kept it for us.
            buf = bytearray(wire.unpack_etl_header(buf)[0])
            data = json.dumps({"op": wire.REPLY}).encode()
            buf[:size] = wire.pack_etl_header(len(data), len(buf))
            buf[size : size + len(data)] = data
            fcntl.ioctl(self.fd, wire.ETL_REQUEST, buf)
        return json.loads(buf[size : size + wire.unpack_etl_header(buf)[0]])

    def view(self, region, offset, size):
        return self.views[region][offset : offset + size]

    def reset(self):
        pass  # the regions stay mapped; the monitor empties them


_transport = DeviceTransport() if os.path.exists(wire.ETL_DEVICE) else None


def use(transport):
    """Carry out requests with `transport` (the process sandbox's, set per instance)."""
    global _transport
    _transport = transport


def _device():
    if _transport is None:
        raise EtlError(None, "the ETL API is only available inside an invocation")
    return _transport


def _request(message):
    reply = _device().request(message)
    error = reply.get("error")
    if error:
        raise EtlError(error["url"], error["reason"], error["kind"], error["status"])
    return reply


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
        return _device().view(self.region, self.offset, self.size).toreadonly()

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
    """A file in the guest region holding data (name None: an unnamed one, for a post)."""
    f = _file(_request({"op": wire.ALLOC, "name": name, "size": len(data)})["file"])
    _device().view(f.region, f.offset, f.size)[:] = data
    return f


def get(url, name=None):
    """Download url into the host region; the file is named `name` or after the URL's path."""
    reply = _request({"op": wire.GET, "url": url, "name": name})
    return _file(reply["file"])


def post(url, data, content_type=None, name=None):
    """POST data (bytes, str, EtlFile, or an os.PathLike naming a /tmp file) to url.

    The response body lands in the host region (named `name`, or after the URL).
    """
    if isinstance(data, os.PathLike) and not _device().tmp_in_place:
        with builtins.open(os.fspath(data), "rb") as f:
            data = f.read()
    if isinstance(data, EtlFile):
        source = {"region": data.region, "offset": data.offset, "size": data.size}
    elif isinstance(data, os.PathLike):
        source = {"tmp": os.path.abspath(os.fspath(data))}
    else:
        if isinstance(data, str):
            data = data.encode()
            content_type = content_type or "text/plain; charset=utf-8"
        f = _store(None, memoryview(data).cast("B"))
        source = {"region": f.region, "offset": f.offset, "size": f.size}
    reply = _request({
        "op": wire.POST, "url": url, "source": source, "name": name,
        "content_type": content_type or "application/octet-stream",
    })
    return Response(reply["status"], reply["headers"], _file(reply["file"]))


def put(name, data):
    """Store data (bytes, str, a buffer or an EtlFile) as the guest-region file `name`, in
    one copy (etl.open's writer keeps a copy in guest memory until it is closed); returns its
    EtlFile. A host-region EtlFile is handed on as it is: in a pipeline stage, a file it was
    handed goes on to the next stage without a copy (the EtlFile answered is that file)."""
    if isinstance(data, EtlFile):
        if data.region == wire.HOST_REGION:
            return _file(_request({"op": wire.PASS, "name": name, "source": {
                "region": data.region, "offset": data.offset, "size": data.size}})["file"])
        data = data.view()
    if isinstance(data, str):
        data = data.encode()
    return _store(name, memoryview(data).cast("B"))


def stat(name):
    """The EtlFile called name (the guest region's copy first), or None."""
    described = _request({"op": wire.STAT, "name": name})["file"]
    return _file(described) if described else None


def ls():
    """Every file in both regions, the host region's first."""
    return [_file(f) for f in _request({"op": wire.LS})["files"]]


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

