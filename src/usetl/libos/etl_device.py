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
without copying. A request is one ioctl; its layout, operations and error
kinds are usetl.abi.etl's. The process backend answers its sandbox's
requests with `EtlDevice.answer` too, over regions in memory files.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

from usetl import hostmm
from usetl.abi import etl as wire
from usetl.etl import egress
from usetl.etl.accounting import IoAccount
from usetl.etl.egress import Destination, Span
from usetl.etl.errors import EtlError
from usetl.etl.http import Transfer
from usetl.etl.policy import UrlPolicy
from usetl.vm import GuestMemory

from .errors import LibosError, SyscallError
from .files import OpenFile
from .fs import DeviceNode, TmpFile
from .handoff import HandedFile, HandedFiles, HandOff, HandOffError, new_memory_file

if TYPE_CHECKING:
    from .kernel import Kernel

ETL_DEVICE = wire.ETL_DEVICE.removeprefix("/dev/")
ETL_REQUEST = wire.ETL_REQUEST
PROT_WRITE = 0x2
MAP_PRIVATE = 0x2
ALIGN = wire.FILE_ALIGN
PAGE = 4096
# Failures that may leave body bytes in the host region.
WRITING_FAILURES = frozenset({wire.TOO_LARGE, wire.TIMEOUT, wire.CONNECTION})


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
    borrowed: int = 0  # bytes at the start that show another memory file (a hand-off)

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

    def tail_span(self) -> Span:
        """tail() as the egress carries it: the region's memory file and the range."""
        return Span(self.memory.fd, self.used, self.tail())

    def commit(self, name: str, size: int) -> RegionFile:
        """Record a file written into tail()[0:size]."""
        self.memory.mark(self.used, size)
        return self.allocate(name, size)

    def wrote_tail(self, size: int) -> None:
        """A producer that failed wrote at most `size` bytes of tail() (rollback restores them)."""
        self.memory.mark(self.used, min(size, self.free))

    def spoil(self) -> None:
        self.spoiled = True

    def bytes_of(self, offset: int, size: int) -> memoryview:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise SyscallError(errno.EINVAL)
        return self.memory.view[offset : offset + size]

    def give_back(self) -> None:
        """Show this region's own memory again where a hand-off's file was, and empty it."""
        self.memory.show_own(self.borrowed)
        if self.used > self.borrowed:
            self.memory.zero(self.memory.gpa + self.borrowed, self.used - self.borrowed)
        self.files.clear()
        self.used = self.borrowed = 0

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


class Placement:
    """Where a body a host thread receives goes (a threaded guest's transfer), chosen on
    that thread once the response's length is known.

    With a length that fits, a range of the host region is reserved and the body
    received straight into it, through the monitor's own mapping (its pages resident and
    mapped already): nothing is copied. Without a length, past the free space, or where
    the region is not this process's own file, a memory file of its own, copied into the
    region when it is done. Fresh pages cost a fault each on the host (about 20 us per
    4 KiB under PVM: 40 ms for 8 MiB), so the region is the first choice.
    """

    def __init__(self, host: RegionTable, transfers: Transfers):
        self.host = host
        self.transfers = transfers
        self.reserved: RegionFile | None = None
        self.revoked = False  # the invocation ended while it was in flight
        self.stop: Callable[[], None] | None = None  # ends a transfer into the region at once
        self.buffer: mmap.mmap | None = None  # the memory file of its own, if any
        self.fd: int | None = None  # its descriptor, until the transfer is done

    def __call__(self, length: int | None, stop: Callable[[], None]) -> Span:
        with self.transfers.lock:
            host = self.host
            if self.revoked or length is None or length > host.free or host.memory.private:
                return self._own_file(host.free)
            f = self.reserved = host.allocate(None, length)
            host.memory.mark(f.offset, length)
            self.stop = stop
            return Span(host.memory.fd, f.offset, host.memory.view[f.offset : f.offset + length])

    def _own_file(self, size: int) -> Span:
        # Pages cost only once written; the mapping goes with its last reference. The fd
        # stays open until done(): the egress broker is sent it with the request.
        fd = self.fd = hostmm.sealed_memfd("usetl-transfer", max(size, 1))
        self.buffer = mmap.mmap(fd, max(size, 1))
        return Span(fd, 0, memoryview(self.buffer)[:size])

    def done(self) -> None:
        """On the host thread, once the transfer ended: it writes nothing more."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        with self.transfers.lock:
            self.transfers.open.discard(self)
            self.transfers.changed.notify_all()


class Transfers:
    """The Placements of transfers in flight on host threads, and the lock under which
    they and the vCPU's thread allocate in the host region. Not monitor state: host
    threads belong to this process."""

    STOP_WAIT_S = 10.0  # a transfer whose connection was shut down ends at its next read

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.open: set[Placement] = set()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        # In place (a rollback), the same lock serves on while no transfer of an earlier
        # invocation is open: a new Lock and Condition cost ~10 µs a rollback.
        if getattr(self, "open", None) != set():
            self._reset()

    def placement(self, host: RegionTable) -> Placement:
        p = Placement(host, self)
        with self.lock:
            self.open.add(p)
        return p

    def end(self) -> None:
        """The invocation ended: a transfer still in flight is refused the region, and one
        writing into it is stopped and waited for, so that none writes into the pages a
        later invocation's files use."""
        with self.lock:
            writing = [p for p in self.open if p.stop is not None]
            for p in self.open:
                p.revoked = True
        for p in writing:
            assert p.stop is not None
            p.stop()
        with self.lock:
            if not self.changed.wait_for(lambda: not any(p in self.open for p in writing),
                                         self.STOP_WAIT_S):
                raise LibosError("a download into the host region did not stop when its "
                                 "invocation ended")


@dataclass
class Spare:
    """A memory file lent to the guest region that did not go on with a hand-off, owned by
    the caller; `shown`: it was mapped as the guest region, so the guest may have written in
    it (zero it before it is lent again)."""

    fd: int
    shown: bool


class TransferStarted(Exception):  # noqa: N818 - control flow, not an error
    """A get or post that a host thread runs while other guest threads use the vCPU.

    work() runs on the host thread; finish(its outcome) makes the reply, on the vCPU's.
    """

    def __init__(self, work: Callable[[], object], finish: Callable[[object], bytes]):
        super().__init__()
        self.work = work
        self.finish = finish


class EtlRequestError(Exception):
    """A malformed request from the guest: answered with kind "invalid"."""


class EtlDevice:
    """The monitor's side of /dev/etl for one USF: its regions, URL policy and accounting."""

    # Class defaults too: monitor state pickled by an older usetl (a snapshot) lacks them.
    lent_fd: int | None = None  # the memory file shown as the guest region while lent
    lending = False  # lend_guest_region() was called: show spare_fd at the first allocation
    spare_fd: int | None = None  # the memory file lent, until it is shown (None: make one)
    remappable = True
    _transfers: Transfers | None = None

    def __init__(self, host: GuestMemory, guest: GuestMemory, policy: UrlPolicy,
                 timeout: float, remappable: bool = True):
        """`remappable`: the regions are seen through this process's mappings (a USF's
        memslots), so a hand-off can be mapped in; the process backend's sandbox maps the
        region files itself, so there hand-offs are copied (and counted)."""
        self.remappable = remappable
        self.host = RegionTable(wire.HOST_REGION, host)
        self.guest = RegionTable(wire.GUEST_REGION, guest)
        self.policy = policy
        self.timeout = timeout
        self.account = IoAccount()
        # The part of account.host_cpu_s spent on host threads, not the vCPU's thread.
        self.off_vcpu_cpu_s = 0.0
        self.deadline: float | None = None  # time.monotonic() when the invocation must end
        self.pending_replies: dict[int, bytes] = {}  # by guest thread: replies too large
        self.passed: dict[str, RegionFile] = {}  # handed-in files the guest hands on (_pass)

    def node(self, ino: int, rdev: int) -> DeviceNode:
        return DeviceNode(ino, rdev, EtlDeviceFile, self)

    @property
    def egress(self) -> egress.LocalEgress | egress.BrokerEgress:
        """Who carries requests out: the egress broker (a jailed clone), else this process."""
        return egress.current(self.policy, self.timeout)

    @property
    def transfers(self) -> Transfers:
        if self._transfers is None:
            self._transfers = Transfers()
        return self._transfers

    def end_transfers(self) -> None:
        """After an invocation: transfers host threads still carry out for it (a thread the
        handler left waiting) write into the region no more; their replies are errors."""
        if self._transfers is not None:  # none was ever made otherwise
            self._transfers.end()

    def reset(self, deadline: float | None = None) -> None:
        """Start an invocation: empty regions, zero accounting, its deadline for transfers."""
        self.host.reset()
        self.guest.reset()
        self.account = IoAccount()
        self.off_vcpu_cpu_s = 0.0
        self.deadline = deadline
        self.pending_replies = {}
        self.passed = {}

    def put_host_file(self, name: str, data: bytes) -> RegionFile:
        """The host writes a file into its region (the event, dependencies)."""
        try:
            f = self.host.allocate(name, len(data))
        except RegionFull as e:
            raise EtlError(name, str(e), wire.TOO_LARGE) from None
        self.host.memory.view[f.offset : f.offset + f.size] = data
        self.account.copied_bytes += f.size
        self.host.memory.mark(f.offset, f.size)
        return f

    # -- pipeline hand-offs (handoff.py) ------------------------------------------

    def lend_guest_region(self, fd: int | None = None) -> None:
        """Back the guest region with a memory file of its own until take_guest_files():
        `fd` (made ahead by new_memory_file(guest.size), now owned here) or a new one.

        It is shown there at the guest's first allocation in the region, not before: a
        stage that writes no file of its own (one that passes its input on) never touches
        it, so it comes back clean, with nothing to zero and no mapping made and undone."""
        if not self.remappable:
            if fd is not None:
                os.close(fd)
            return
        self.lending = True
        self.spare_fd = fd

    def _guest_region_lent(self) -> None:
        """Before the guest region's first allocation: show the memory file lent to it."""
        if not self.lending:
            return
        fd, self.spare_fd, self.lending = self.spare_fd, None, False
        if fd is None:
            fd = new_memory_file(self.guest.size)
        try:
            self.guest.memory.show_file(fd, self.guest.size, writable=True)
        except BaseException:
            os.close(fd)
            raise
        self.lent_fd = fd

    def take_guest_files(self, handed: HandOff | None = None) -> tuple[HandOff, Spare | None]:
        """The guest region's named files for the next stage: the lent memory file itself,
        or (not remappable) a copy of the files in a new one. Where the guest hands on only
        files of `handed` (the hand-off it was given: _pass), that memory file goes on
        instead and nothing is copied. A lent memory file that does not go on comes back as
        a Spare for the next stage, zeroed first if it was shown (the guest may have
        written in it): making a new one costs far more (its huge pages, up to a second
        here) than zeroing it (milliseconds)."""
        spare = self._unused_spare()
        if self.passed and not self.guest.files and handed is not None:
            unused, self.lent_fd = self.lent_fd, None
            if unused is not None:
                self.guest.memory.show_own(self.guest.size)
                spare = Spare(unused, shown=True)
            passed = [HandedFile(f.name, f.offset, f.size) for f in self.passed.values()]
            return HandOff.sealed(os.dup(handed.fd),
                                  HandedFiles(handed.files.size, passed)), spare
        copied = self._copy_passed(handed)
        files = HandedFiles(self.guest.size, [HandedFile(f.name, f.offset, f.size)
                                              for f in self.guest.files.values()])
        if self.lent_fd is not None:
            fd, self.lent_fd = self.lent_fd, None
            self.guest.memory.show_own(self.guest.size)
            handoff = HandOff.sealed(fd, files)
            handoff.copied_bytes = copied
            return handoff, spare
        fd = new_memory_file(self.guest.size, huge=False)  # only the host reads it: a copy
        for f in files.files:
            os.pwrite(fd, self.guest.memory.view[f.offset : f.offset + f.size], f.offset)
        handoff = HandOff.sealed(fd, files)
        handoff.copied_bytes = files.total_bytes
        return handoff, spare

    def _unused_spare(self) -> Spare | None:
        """The memory file lent to the guest region that was never shown there."""
        fd, self.spare_fd, self.lending = self.spare_fd, None, False
        return None if fd is None else Spare(fd, shown=False)

    def _copy_passed(self, handed: HandOff | None) -> int:
        """Handed-on files beside files of the guest's own go in one memory file: the
        passed ones are copied into the guest region from `handed`'s memory file (no longer
        shown in the host region); the bytes copied are answered."""
        passed, self.passed = self.passed, {}
        copied = 0
        for f in passed.values():
            if handed is None:
                raise HandOffError(f"{f.name}: the hand-off it was passed from is gone")
            self._guest_region_lent()
            try:
                copy = self.guest.allocate(f.name, f.size)
            except RegionFull as e:
                raise HandOffError(f"{f.name}, handed on: {e}") from None
            done = os.preadv(handed.fd, [self.guest.bytes_of(copy.offset, f.size)], f.offset)
            if done != f.size:
                raise HandOffError(f"{f.name}: {done} of {f.size} B could be read")
            copied += f.size
        return copied

    def hand_in(self, handoff: HandOff) -> None:
        """The previous stage's files as this invocation's host-region files (after reset):
        its memory file mapped read-only over the region's start, or copied if not
        remappable. Raises HandOffError if they do not fit."""
        handed = handoff.files
        size = (handed.size + PAGE - 1) & ~(PAGE - 1)
        if size > self.host.size:
            raise HandOffError(f"{handed.size} B of handed files do not fit in the "
                               f"{self.host.size} B host region")
        try:
            for f in handed.files:
                _name(f.name)
        except EtlRequestError as e:
            raise HandOffError(f"a handed file: {e}") from None
        if not self.remappable:
            for f in handed.files:
                region_file = self.host.allocate(f.name, f.size)
                done = os.preadv(handoff.fd, [self.host.bytes_of(region_file.offset, f.size)],
                                 f.offset)
                if done != f.size:
                    raise HandOffError(f"{f.name}: {done} of {f.size} B could be read")
                self.account.copied_bytes += f.size
            return
        self.host.memory.show_file(handoff.fd, size, writable=False)
        self.host.borrowed = self.host.used = size
        for f in handed.files:
            self.host.files[f.name] = RegionFile(f.name, f.offset, f.size)

    def give_back(self) -> None:
        """After an invocation with a handed-in file: the host region is its own again."""
        if self.host.borrowed:
            self.host.give_back()

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
        length, capacity = wire.unpack_etl_header(k.mem.read(arg, wire.ETL_HEADER_SIZE))
        if length > wire.MAX_REQUEST or length > capacity:
            raise SyscallError(errno.EINVAL)
        raw = k.mem.read(arg + wire.ETL_HEADER_SIZE, length)
        try:
            reply = self._answer(k, raw)
        except TransferStarted as started:
            # Other guest threads run while a host thread does the transfer.
            finish = started.finish
            raise k.sched.start_host_work(
                started.work, lambda outcome: self._deliver(k, arg, capacity, finish(outcome))
            ) from None
        return self._deliver(k, arg, capacity, reply)

    def _deliver(self, k: Kernel, arg: int, capacity: int, reply: bytes) -> int:
        if wire.ETL_HEADER_SIZE + len(reply) > capacity:
            self.pending_replies[_tid(k)] = reply
            k.mem.write(arg, wire.pack_etl_header(len(reply) + wire.ETL_HEADER_SIZE, 0))
            raise SyscallError(errno.ENOBUFS)
        k.mem.write(arg, wire.pack_etl_header(len(reply), 0) + reply)
        return 0

    def _answer(self, k: Kernel | None, raw: bytes) -> bytes:
        try:
            request = json.loads(raw)
        except ValueError as e:
            return json.dumps({"error": _error(None, f"bad request: {e}", wire.INVALID)}).encode()
        except RecursionError:  # the JSON decoder's recursion limit bounds the nesting
            return json.dumps({"error": _error(None, "bad request: nested too deep",
                                               wire.INVALID)}).encode()
        if isinstance(request, dict) and request.get("op") == wire.REPLY:
            reply = self.pending_replies.pop(_tid(k), None)
            if reply is not None:
                return reply
        return json.dumps(self.answer(request, k)).encode()

    def answer(self, request: object, k: Kernel | None) -> dict:
        """The reply to one request (EtlDevice._<op>); `k` resolves a /tmp source (None: none)."""
        try:
            if not isinstance(request, dict):
                raise EtlRequestError("a request is a JSON object")
            op = request.get("op")
            if op == wire.REPLY:
                raise EtlRequestError("no reply is waiting")
            if op not in wire.OPS:
                raise EtlRequestError(f"unknown request {op!r}")
            return getattr(self, "_" + op)(k, request)
        except EtlError as e:
            return {"error": _error(e.url, e.reason, e.kind, e.status)}
        except RegionFull as e:
            return {"error": _error(None, str(e), wire.TOO_LARGE)}
        except (EtlRequestError, ValueError, TypeError, KeyError) as e:
            return {"error": _error(None, f"bad request: {e}", wire.INVALID)}

    # -- the requests ----------------------------------------------------------

    def _info(self, k: Kernel | None, r: dict) -> dict:
        return {"host_size": self.host.size, "guest_size": self.guest.size}

    def _get(self, k: Kernel | None, r: dict) -> dict:
        url = _text(r, "url")
        name = _name(r.get("name") or wire.name_from_url(url))
        return self._fetch(k, name, lambda dest: self.egress.get(url, dest, self.deadline))

    def _post(self, k: Kernel | None, r: dict) -> dict:
        url = _text(r, "url")
        body = self._source(k, r.get("source"))
        content_type = _text(r, "content_type")
        name = _name(r.get("name") or wire.name_from_url(url))
        return self._fetch(k, name, lambda dest: self.egress.post(
            url, body, dest, content_type, self.deadline))

    def _fetch(self, k: Kernel | None, name: str, run: Callable[[Destination], Transfer]) -> dict:
        """Run a transfer into the host region and commit its body as file `name`.

        A guest with one thread waits, and the body streams straight into the
        region. With other threads, a host thread does it while they run
        (TransferStarted), into the Placement it chooses once the length is known.
        """
        if k is None or k.sched.alone:
            transfer = self._transfer(lambda: run(self.host.tail_span()))
            return self._describe_transfer(self.host.commit(name, transfer.size), transfer)
        free = self.host.free
        placement = self.transfers.placement(self.host)

        def work() -> Transfer:
            try:
                return run(placement)
            finally:
                placement.done()

        raise TransferStarted(work, lambda outcome: self._finish(name, free, placement, outcome))

    def _finish(self, name: str, free: int, placement: Placement, outcome: object) -> bytes:
        """The reply to a transfer a host thread did: its body is in the region where it was
        reserved, or copied in from the memory file it went to."""
        try:
            if placement.revoked:
                raise EtlError(None, "the invocation ended during the transfer", wire.CONNECTION)
            if isinstance(outcome, BaseException):
                self._failed(outcome, free, 0.0)
            transfer: Transfer = outcome  # type: ignore[assignment]
            self.account.add(transfer.account)
            self.off_vcpu_cpu_s += transfer.account.host_cpu_s
            reserved = placement.reserved
            if reserved is not None:
                f = self.host.files[name] = RegionFile(name, reserved.offset, transfer.size)
            else:
                f = self._copy_in(name, transfer.size, placement)
            answer = self._describe_transfer(f, transfer)
        except EtlError as e:
            answer = {"error": _error(e.url, e.reason, e.kind, e.status)}
        except RegionFull as e:
            answer = {"error": _error(None, str(e), wire.TOO_LARGE)}
        return json.dumps(answer).encode()

    def _copy_in(self, name: str, size: int, placement: Placement) -> RegionFile:
        """A body a host thread received into a memory file of its own, copied in."""
        assert placement.buffer is not None
        with self.transfers.lock:
            f = self.host.allocate(name, size)
        with memoryview(placement.buffer) as body:
            self.host.memory.view[f.offset : f.offset + f.size] = body[:size]
        placement.buffer = None
        self.account.copied_bytes += f.size
        self.host.memory.mark(f.offset, f.size)
        return f

    @staticmethod
    def _describe_transfer(f: RegionFile, transfer: Transfer) -> dict:
        return {"file": _describe(f, wire.HOST_REGION), "status": transfer.status,
                "headers": transfer.headers, "url": transfer.url}

    def _transfer(self, run) -> Transfer:
        free = self.host.free
        t0 = time.perf_counter()
        try:
            transfer = run()
        except EtlError as e:
            if e.kind in WRITING_FAILURES:
                self.host.spoil()
                # At most what came in on the wire went into the region (the whole tail
                # if that is not known).
                self.host.wrote_tail(e.account.bytes_in if e.account is not None else free)
            self._failed(e, free, time.perf_counter() - t0)
        self.account.add(transfer.account)
        return transfer

    def _failed(self, e: BaseException, free: int, wall_s: float) -> NoReturn:
        """Count a failed transfer and raise its EtlError (a host thread's other errors too)."""
        # The client's own account of a failed request is lost with it; the
        # attempt is still counted and its wall time billed, unless the URL
        # policy refused it (the host sent nothing for it).
        if not isinstance(e, EtlError):
            self.account.add(IoAccount(requests=1, wall_s=wall_s))
            raise EtlError(None, f"the transfer failed on the host: {e!r}",
                           wire.CONNECTION) from e
        if e.kind != wire.DENIED:
            self.account.add(IoAccount(requests=1, wall_s=wall_s))
        if e.kind == wire.TOO_LARGE:
            raise EtlError(e.url, f"{e.reason}: the host region is full ({free} B free "
                           f"of {self.host.size} B)", e.kind) from e
        raise e

    def _source(self, k: Kernel | None, source: object) -> Span:
        """The bytes a post sends: a region range, read in place from the memory file shown
        there, or a copy in a memory file of its own (which the egress can carry) of a /tmp
        file (which may also change size while another guest thread runs) or of a handed-in
        file."""
        if not isinstance(source, dict):
            raise EtlRequestError("post needs a source")
        if "tmp" in source:
            if k is None:
                raise EtlRequestError("this sandbox's /tmp is not visible to the host")
            resolved = k.ns.resolve(_text(source, "tmp"))
            node = resolved.node
            if not resolved.path.startswith("/tmp/") or not isinstance(node, TmpFile):
                raise EtlRequestError(f"{source['tmp']!r} is not a file in /tmp")
            return _copy_to_memory_file(node.data)
        table = self._table(source.get("region"))
        offset, size = _int(source, "offset"), _int(source, "size")
        body = table.bytes_of(offset, size)
        if table is self.guest and self.lent_fd is not None:
            return Span(self.lent_fd, offset, body)  # the memory file shown there now
        if table is self.host and offset < self.host.borrowed:
            return _copy_to_memory_file(body)  # a hand-off's file, not held here
        return Span(table.memory.fd, offset, body)

    def _alloc(self, k: Kernel | None, r: dict) -> dict:
        name = r.get("name")
        size = _int(r, "size")
        if size < 0:
            raise EtlRequestError(f"a file cannot have {size} bytes")
        self._guest_region_lent()
        f = self.guest.allocate(_name(name) if name is not None else None, size)
        self.passed.pop(f.name, None)  # a file of the guest's own replaces one handed on
        return {"file": _describe(f, wire.GUEST_REGION)}

    def _pass(self, k: Kernel | None, r: dict) -> dict:
        """Hand a host-region file on to the next pipeline stage as it is (etl.put of one).

        A file of a hand-off (it lies in the memory file shown there) is named to go on in
        that memory file: nothing is copied. Any other host-region file (a download, the
        event) is copied into the guest region, as etl.put would.
        """
        name = _name(r.get("name"))
        source = r.get("source")
        if not isinstance(source, dict) or source.get("region") != wire.HOST_REGION:
            raise EtlRequestError("pass needs a source in the host region")
        offset, size = _int(source, "offset"), _int(source, "size")
        body = self.host.bytes_of(offset, size)
        if offset + size <= self.host.borrowed:
            self.guest.files.pop(name, None)
            f = self.passed[name] = RegionFile(name, offset, size)
            return {"file": _describe(f, wire.HOST_REGION)}
        self._guest_region_lent()
        f = self.guest.allocate(name, size)
        self.guest.memory.view[f.offset : f.offset + size] = body
        self.account.copied_bytes += size
        self.passed.pop(name, None)
        return {"file": _describe(f, wire.GUEST_REGION)}

    def _stat(self, k: Kernel | None, r: dict) -> dict:
        name = _text(r, "name")
        passed = self.passed.get(name)
        if passed is not None:  # the guest's own name for a host-region file it hands on
            return {"file": _describe(passed, wire.HOST_REGION)}
        for table in (self.guest, self.host):  # the guest's copy shadows the host's file
            f = table.files.get(name)
            if f is not None:
                return {"file": _describe(f, table.name)}
        return {"file": None}

    def _ls(self, k: Kernel | None, r: dict) -> dict:
        """Every file, the host region's first, then the guest's (those it hands on too)."""
        host = sorted(self.host.files.values(), key=lambda f: f.name)
        guest = sorted([*self.guest.files.values(), *self.passed.values()],
                       key=lambda f: f.name)
        return {"files": [_describe(f, wire.HOST_REGION) for f in host] + [
            _describe(f, wire.HOST_REGION if f.name in self.passed else wire.GUEST_REGION)
            for f in guest]}

    def _table(self, region: object) -> RegionTable:
        if region == wire.HOST_REGION:
            return self.host
        if region == wire.GUEST_REGION:
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


_error = wire.etl_error


def _copy_to_memory_file(data: bytes | bytearray) -> Span:
    fd = hostmm.sealed_memfd("usetl-upload", max(len(data), 1))
    try:
        buffer = mmap.mmap(fd, max(len(data), 1))
    except OSError:
        os.close(fd)
        raise
    buffer[: len(data)] = data
    span = Span(fd, 0, memoryview(buffer)[: len(data)])
    # The fd closes with the span (a finalizer): the mapping keeps the bytes meanwhile.
    weakref.finalize(span, os.close, fd)
    return span


def _tid(k: Kernel | None) -> int:
    """The guest thread a request is from (0: the process backend, which has none here)."""
    return 0 if k is None else k.sched.current.tid


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
    if not isinstance(name, str) or not name or len(name.encode()) > wire.MAX_NAME or "\0" in name:
        raise EtlRequestError(f"{name!r} is not a file name (1-{wire.MAX_NAME} bytes, no NUL)")
    return name
