"""/dev/etl: the guest's I/O device, two shared regions and one ioctl per request.

The host region holds files the host wrote (downloads, a large event); the
guest maps it read-only (a KVM_MEM_READONLY memslot and read-only page-table
entries). The guest region holds files the guest wrote; it maps it
read-write. Each region has one producer and its own offset table.

The offset tables are small Python objects here in the monitor
(`RegionTable`), not guest-visible memory: the guest asks for a file by
name, and the host only ever reads a range it has itself recorded or
checked against the region's bounds. Both tables and the region bytes are
per invocation: `EtlDevice.reset()` empties them (and zeroes what was
written) before the next one.

The guest's view: mmap of /dev/etl at offset 0 is the host region, at
offset `host size` the guest region; mmap returns their guest-physical
addresses (guest VA = GPA in the identity map), so a region is mapped
without copying. A request is one ioctl, `ETL_REQUEST`, whose argument
points at a buffer in guest memory: a header (u32 length of the JSON
request, u32 capacity of the buffer) and the request; the host writes the
reply (u32 length, u32 0, JSON) in its place. A reply that does not fit is
kept and the ioctl fails with ENOBUFS and the needed size in the header;
the guest enlarges its buffer and fetches it with {"op": "reply"}.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from usetl.etl.accounting import IoAccount
from usetl.etl.errors import EtlError
from usetl.etl.http import HttpClient, Transfer
from usetl.etl.policy import UrlPolicy
from usetl.vm import GuestMemory

from .errors import SyscallError
from .files import OpenFile
from .fs import DeviceNode, TmpFile

if TYPE_CHECKING:
    from .kernel import Kernel

ETL_DEVICE = "etl"
HOST_REGION_GPA = 2 << 30  # the guest region follows the host region
# _IOWR('U', 0x45, 8): the request header is 8 bytes; the rest is variable.
ETL_REQUEST = 0xC0085545
HEADER = struct.Struct("<II")
PROT_WRITE = 0x2
MAP_PRIVATE = 0x2
ALIGN = 4096  # files start on a page: views over them are page-aligned
MAX_REQUEST = 1 << 20
MAX_NAME = 255
WRITING_FAILURES = frozenset({"too_large", "timeout", "connection"})  # may leave body bytes
OPS = frozenset({"info", "get", "post", "alloc", "stat", "ls"})  # EtlDevice._<op>


# HTTP clients (connection pools, SSL contexts) belong to a process, not to the
# monitor state that templates pickle and clones restore: one per policy and
# timeout, dropped in a forked child so that no two processes share a connection.
_clients: dict[tuple[str, float], HttpClient] = {}
os.register_at_fork(after_in_child=_clients.clear)


def http_client(policy: UrlPolicy, timeout: float) -> HttpClient:
    key = (repr(policy), timeout)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = HttpClient(policy, timeout=timeout)
    return client


def _align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


class RegionFull(Exception):
    """A file does not fit in what is left of its region."""


@dataclass
class RegionFile:
    name: str
    offset: int
    size: int


@dataclass
class RegionTable:
    """One region's offset table and its bump allocator (one producer, files never move)."""

    name: str
    memory: GuestMemory
    files: dict[str, RegionFile] = field(default_factory=dict)
    used: int = 0  # bytes from the start of the region that files (and padding) took
    spoiled: bool = False  # a producer gave up half-way through tail(): bytes anywhere in it

    @property
    def size(self) -> int:
        return self.memory.size

    @property
    def free(self) -> int:
        return self.size - self.used

    def allocate(self, name: str | None, size: int) -> RegionFile:
        """Space for a file of `size` bytes; a name replaces an older file of that name."""
        if size > self.free:
            raise RegionFull(
                f"the {self.name} region is full: {size} B asked, {self.free} B of "
                f"{self.size} B free"
            )
        f = RegionFile(name or "", self.used, size)
        self.used = min(self.size, _align(self.used + size))
        if name:
            self.files[name] = f
        return f

    def tail(self) -> memoryview:
        """The free space, for a producer that learns a file's size while writing it.

        It then calls commit(), or spoil() if it failed after writing an unknown amount.
        """
        return self.memory.view[self.used :]

    def commit(self, name: str, size: int) -> RegionFile:
        """Record a file written into tail()[0:size]."""
        return self.allocate(name, size)

    def spoil(self) -> None:
        self.spoiled = True

    def bytes_of(self, offset: int, size: int) -> memoryview:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise SyscallError(errno.EINVAL)
        return self.memory.view[offset : offset + size]

    def reset(self) -> None:
        """Forget every file and zero what the producer wrote.

        Zeroed in place, not handed back to the host: a page the guest has
        mapped stays mapped, and a fresh one costs the guest a fault on first
        touch (about 60 us per 4 KiB under PVM: 1 s for 64 MiB). In the guest
        region that is what the guest allocated: the guest can also write
        outside its files, which a clone's rollback restores and a reused USF
        leaves, as it leaves the function's heap.
        """
        if self.used:
            self.memory.zero(self.memory.gpa, self.used)
        if self.spoiled:  # rare: give the pages back rather than make them all resident
            self.memory.discard(self.memory.gpa + self.used, self.size - self.used)
        self.files.clear()
        self.used = 0
        self.spoiled = False


class EtlRequestError(Exception):
    """A malformed request from the guest: answered with kind "invalid"."""


class EtlDevice:
    """The monitor's side of /dev/etl for one USF: its regions, URL policy and accounting."""

    def __init__(self, host: GuestMemory, guest: GuestMemory, policy: UrlPolicy,
                 timeout: float):
        self.host = RegionTable("host", host)
        self.guest = RegionTable("guest", guest)
        self.policy = policy
        self.timeout = timeout
        self.account = IoAccount()
        self.deadline: float | None = None  # time.monotonic() when the invocation must end
        self.pending_reply: bytes | None = None

    def node(self, ino: int, rdev: int) -> DeviceNode:
        return DeviceNode(ino, rdev, EtlDeviceFile, self)

    @property
    def client(self) -> HttpClient:
        return http_client(self.policy, self.timeout)

    def reset(self, deadline: float | None = None) -> None:
        """Start an invocation: empty regions, zero accounting, its deadline for transfers."""
        self.host.reset()
        self.guest.reset()
        self.account = IoAccount()
        self.deadline = deadline
        self.pending_reply = None

    def put_host_file(self, name: str, data: bytes) -> RegionFile:
        """The host writes a file into its region (the event, dependencies)."""
        try:
            f = self.host.allocate(name, len(data))
        except RegionFull as e:
            raise EtlError(name, str(e), "too_large") from None
        self.host.memory.view[f.offset : f.offset + f.size] = data
        return f

    # -- mmap and ioctl from the guest ---------------------------------------

    def map(self, length: int, prot: int, flags: int, offset: int) -> int:
        for table, start in ((self.host, 0), (self.guest, self.host.size)):
            if offset == start and 0 < length <= table.size:
                if table is self.host and (prot & PROT_WRITE):
                    raise SyscallError(errno.EACCES)
                if flags & 0xF == MAP_PRIVATE and (prot & PROT_WRITE):
                    raise SyscallError(errno.EINVAL)  # a private copy would not be shared
                return table.memory.gpa
        raise SyscallError(errno.EINVAL)

    def ioctl(self, k: Kernel, request: int, arg: int) -> int:
        if request != ETL_REQUEST:
            raise SyscallError(errno.ENOTTY)
        length, capacity = HEADER.unpack(k.mem.read(arg, HEADER.size))
        if length > MAX_REQUEST or length > capacity:
            raise SyscallError(errno.EINVAL)
        raw = k.mem.read(arg + HEADER.size, length)
        reply = self._answer(k, raw)
        if HEADER.size + len(reply) > capacity:
            self.pending_reply = reply
            k.mem.write(arg, HEADER.pack(len(reply) + HEADER.size, 0))
            raise SyscallError(errno.ENOBUFS)
        k.mem.write(arg, HEADER.pack(len(reply), 0) + reply)
        return 0

    def _answer(self, k: Kernel, raw: bytes) -> bytes:
        try:
            request = json.loads(raw)
            if not isinstance(request, dict):
                raise EtlRequestError("a request is a JSON object")
            op = request.get("op")
            if op == "reply":
                reply, self.pending_reply = self.pending_reply, None
                if reply is None:
                    raise EtlRequestError("no reply is waiting")
                return reply
            if op not in OPS:
                raise EtlRequestError(f"unknown request {op!r}")
            answer = getattr(self, "_" + op)(k, request)
        except EtlError as e:
            answer = {"error": _error(e.url, e.reason, e.kind, e.status)}
        except RegionFull as e:
            answer = {"error": _error(None, str(e), "too_large")}
        except (EtlRequestError, ValueError, TypeError, KeyError) as e:
            answer = {"error": _error(None, f"bad request: {e}", "invalid")}
        except RecursionError:  # the JSON decoder's recursion limit bounds the nesting
            answer = {"error": _error(None, "bad request: nested too deep", "invalid")}
        return json.dumps(answer).encode()

    # -- the requests ----------------------------------------------------------

    def _info(self, k: Kernel, r: dict) -> dict:
        return {"host_size": self.host.size, "guest_size": self.guest.size}

    def _get(self, k: Kernel, r: dict) -> dict:
        url = _text(r, "url")
        name = _name(r.get("name") or _name_from_url(url))
        transfer = self._transfer(lambda: self.client.get(url, self.host.tail(),
                                                         deadline=self.deadline))
        f = self.host.commit(name, transfer.size)
        return {"file": _describe(f, "host"), "status": transfer.status,
                "headers": transfer.headers, "url": transfer.url}

    def _post(self, k: Kernel, r: dict) -> dict:
        url = _text(r, "url")
        body = self._source(k, r.get("source"))
        content_type = _text(r, "content_type")
        transfer = self._transfer(lambda: self.client.post(
            url, body, self.host.tail(), content_type, deadline=self.deadline))
        name = _name(r.get("name") or _name_from_url(url) + ".response")
        f = self.host.commit(name, transfer.size)
        return {"file": _describe(f, "host"), "status": transfer.status,
                "headers": transfer.headers, "url": transfer.url}

    def _transfer(self, run) -> Transfer:
        free = self.host.free
        t0 = time.perf_counter()
        try:
            transfer = run()
        except EtlError as e:
            # The client's own account of a failed request is lost with it;
            # the attempt is still counted and its wall time billed.
            self.account.add(IoAccount(requests=1, wall_s=time.perf_counter() - t0))
            if e.kind in WRITING_FAILURES:
                self.host.spoil()
            if e.kind == "too_large":
                raise EtlError(e.url, f"{e.reason}: the host region is full ({free} B free "
                               f"of {self.host.size} B)", e.kind) from e
            raise
        self.account.add(transfer.account)
        return transfer

    def _source(self, k: Kernel, source: object) -> memoryview:
        """The bytes a post sends, read in place: a region range or a /tmp file."""
        if not isinstance(source, dict):
            raise EtlRequestError("post needs a source")
        if "tmp" in source:
            resolved = k.ns.resolve(_text(source, "tmp"))
            node = resolved.node
            if not resolved.path.startswith("/tmp/") or not isinstance(node, TmpFile):
                raise EtlRequestError(f"{source['tmp']!r} is not a file in /tmp")
            return memoryview(node.data)
        table = self._table(source.get("region"))
        return table.bytes_of(_int(source, "offset"), _int(source, "size"))

    def _alloc(self, k: Kernel, r: dict) -> dict:
        name = r.get("name")
        size = _int(r, "size")
        if size < 0:
            raise EtlRequestError(f"a file cannot have {size} bytes")
        f = self.guest.allocate(_name(name) if name is not None else None, size)
        return {"file": _describe(f, "guest")}

    def _stat(self, k: Kernel, r: dict) -> dict:
        name = _text(r, "name")
        for table in (self.guest, self.host):  # the guest's copy shadows the host's file
            f = table.files.get(name)
            if f is not None:
                return {"file": _describe(f, table.name)}
        return {"file": None}

    def _ls(self, k: Kernel, r: dict) -> dict:
        return {
            "files": [
                _describe(f, table.name)
                for table in (self.host, self.guest)
                for f in sorted(table.files.values(), key=lambda f: f.name)
            ]
        }

    def _table(self, region: object) -> RegionTable:
        if region == "host":
            return self.host
        if region == "guest":
            return self.guest
        raise EtlRequestError(f"unknown region {region!r}")


class EtlDeviceFile(OpenFile):
    def __init__(self, node: DeviceNode, flags: int, device: EtlDevice):
        super().__init__(node, flags, "/dev/" + ETL_DEVICE)
        self.device = device

    def map_device(self, length: int, prot: int, flags: int, offset: int) -> int:
        return self.device.map(length, prot, flags, offset)

    def ioctl(self, k: Kernel, request: int, arg: int) -> int:
        return self.device.ioctl(k, request, arg)


def _error(url: str | None, reason: str, kind: str, status: int | None = None) -> dict:
    return {"url": url, "reason": reason, "kind": kind, "status": status}


def _describe(f: RegionFile, region: str) -> dict:
    return {"name": f.name, "region": region, "offset": f.offset, "size": f.size}


def _text(r: dict, key: str) -> str:
    value = r.get(key)
    if not isinstance(value, str):
        raise EtlRequestError(f"{key} must be a string")
    return value


def _int(r: dict, key: str) -> int:
    value = r.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise EtlRequestError(f"{key} must be an integer")
    return value


def _name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name.encode()) > MAX_NAME or "\0" in name:
        raise EtlRequestError(f"{name!r} is not a file name (1-{MAX_NAME} bytes, no NUL)")
    return name


def _name_from_url(url: str) -> str:
    path = url.split("?", 1)[0].split("#", 1)[0]
    if "://" in path:
        path = path.split("://", 1)[1].partition("/")[2]
    return posixpath.basename(path) or "index"
