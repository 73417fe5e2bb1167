"""The ETL channel's contract: the /dev/etl request layout, its operations and error kinds.

A request is one ioctl, ETL_REQUEST, whose argument points at a buffer in
guest memory: a header (u32 length of the JSON request, u32 capacity of
the buffer), then the request. The host writes the reply (u32 length, u32 0,
JSON) in its place. A reply that does not fit is kept: the ioctl fails with
ENOBUFS and the header's length is the buffer size needed; the guest
enlarges its buffer and fetches it with {"op": REPLY}. In the process
sandbox the same requests and replies travel on its socket (usetl.abi.ETL
messages) and the regions are memory files the host sends with the INFO
reply.

Files are described as {"name", "region", "offset", "size"}; a failed
request's reply is {"error": etl_error(...)}.
"""

import posixpath

ETL_DEVICE = "/dev/etl"
ETL_REQUEST = 0xC0085545  # _IOWR('U', 0x45, 8): the header is 8 bytes, the rest variable
ETL_HEADER_SIZE = 8  # u32 length, u32 capacity, little-endian
MAX_REQUEST = 1 << 20
MAX_NAME = 255  # bytes in a file name
FILE_ALIGN = 4096  # files start on a page, so views of them (and mmaps) are page-aligned

HOST_REGION = "host"  # written by the host (downloads, the event): read-only to the guest
GUEST_REGION = "guest"  # written by the guest

INFO = "info"  # -> host_size, guest_size (a USF maps the guest region at offset host_size)
GET = "get"  # url, name? -> file, status, headers, url
POST = "post"  # url, source, content_type, name? -> file, status, headers, url
ALLOC = "alloc"  # name (None: unnamed), size -> file in the guest region
STAT = "stat"  # name -> file (the guest region's copy first) or None
LS = "ls"  # -> files, the host region's first, each region's by name
PASS = "pass"  # name, source (a host-region file) -> file: handed on to the next pipeline
# stage as it is (the host-region file itself where it was handed in, else a guest copy)
REPLY = "reply"  # the reply that did not fit the buffer
OPS = frozenset({INFO, GET, POST, ALLOC, STAT, LS, PASS})

# Why a request failed (EtlError.kind).
DENIED = "denied"  # the URL policy refused it
DNS = "dns"
REFUSED = "refused"
TIMEOUT = "timeout"
HTTP_STATUS = "http_status"  # the server answered >= 400: status holds it
TOO_LARGE = "too_large"  # the body does not fit its destination (also a full region)
INVALID = "invalid"  # a malformed request or URL, or a scheme other than http/https
CONNECTION = "connection"  # any other transport failure
ERROR_KINDS = frozenset({DENIED, DNS, REFUSED, TIMEOUT, HTTP_STATUS, TOO_LARGE, INVALID,
                         CONNECTION})


def pack_etl_header(length: int, capacity: int) -> bytes:
    return length.to_bytes(4, "little") + capacity.to_bytes(4, "little")


def unpack_etl_header(header: bytes) -> tuple[int, int]:
    """(length, capacity) from the first ETL_HEADER_SIZE bytes."""
    return int.from_bytes(header[0:4], "little"), int.from_bytes(header[4:8], "little")


def etl_error(url: str | None, reason: str, kind: str, status: int | None = None) -> dict:
    """A failed request's error in its wire form."""
    return {"url": url, "reason": reason, "kind": kind, "status": status}


def name_from_url(url: str) -> str:
    """The name a download or a response body gets when the guest gives none."""
    path = url.split("?", 1)[0].split("#", 1)[0]
    if "://" in path:
        path = path.split("://", 1)[1].partition("/")[2]
    return posixpath.basename(path) or "index"
