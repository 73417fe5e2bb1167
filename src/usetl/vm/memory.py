"""Guest memory: a memfd mapped into the monitor, registered as a memslot."""

from __future__ import annotations

import ctypes
import os
import re

from usetl import hostmm
from usetl.errors import UsetlError

PAGE_SIZE = 4096  # the unit of guest memory, its mappings and page tables
PUNCH_MIN = 16 * PAGE_SIZE  # a discard smaller than this is zeroed, not punched out
OWN_FILE = "-own"  # how a memory file of a clone's own (use_own_file) is named: usetl-host-own

# /proc/self/pagemap: one u64 per page; in its top byte, 0x80 is "present", 0x40
# "swapped out" and 0x20 "file page or shared anonymous". A present or swapped-out
# page of a private file mapping without 0x20 is this process's own copy-on-write copy.
_OWN_COPY = bytes(1 if b & 0xC0 and not b & 0x20 else 0 for b in range(256))
_PRESENT = bytes(1 if b & 0x80 else 0 for b in range(256))
_RUNS = re.compile(b"\x01+")


class GuestMemoryError(UsetlError):
    """Host-side guest memory could not be created or mapped."""


class GuestMemory:
    """`size` bytes of guest-physical memory starting at `gpa`, backed by a memfd.

    The monitor reads and writes it through `view` (a memoryview of the host
    mapping); addresses given to read/write are guest-physical.
    """

    def __init__(self, name: str, gpa: int, size: int, fd: int | None = None,
                 at: int | None = None):
        """`at`: the host address to map it at, in a span reserved for it (hostmm.reserve)."""
        self.name = name
        self.gpa = gpa
        self.size = size
        if fd is None:
            fd = os.memfd_create(f"usetl-{name}", os.MFD_CLOEXEC)
            os.ftruncate(fd, size)
        self.fd = fd
        try:
            if at is None:
                addr = hostmm.map_shared(fd, size)
            else:
                hostmm.map_over(at, size, fd, private=False)
                addr = at
        except OSError as e:
            raise GuestMemoryError(
                f"cannot map {size >> 20} MiB of guest memory: {e.strerror}"
            ) from None
        self.host_addr: int = addr
        self.punch_holes = True
        self.private = False
        # A clone's ETL region in a file of its own (use_own_file): the template's file,
        # which rollback restores from, and the ranges the monitor wrote since.
        self.origin_fd: int | None = None
        self.marked: list[tuple[int, int]] = []
        # [start, end) offsets where another file's pages are shown copy-on-write instead of
        # this memory's own (show_file_pages): libraries mapped from an archive.
        self.file_pages: list[tuple[int, int]] = []
        # [start, end) offsets, huge-page aligned, of a clone's RAM that its template's file
        # has no data in, mapped anonymous on huge pages instead (map_anonymous).
        self.anonymous: list[tuple[int, int]] = []
        self.view = memoryview((ctypes.c_ubyte * size).from_address(addr)).cast("B")
        # The file a private mapping's rollback copies from, mapped read-only once
        # (_origin_view): (fd, host address, view).
        self._origin: tuple[int, int, memoryview] | None = None
        # A private mapping's held pages as the process's anonymous memory less this
        # (measure_from_here).
        self._anonymous_offset: int | None = None
        # The last page-table scan (written_ranges) and what keeps it true: the process and
        # its page-fault count before the scan. Changes of mapping forget it (_remapped).
        self._scanned: tuple[tuple[int, int], list[tuple[int, int]]] | None = None

    @property
    def end(self) -> int:
        return self.gpa + self.size

    def contains(self, gpa: int, length: int = 1) -> bool:
        return self.gpa <= gpa and gpa + length <= self.end and length >= 0

    def read(self, gpa: int, length: int) -> bytes:
        off = gpa - self.gpa
        return bytes(self.view[off : off + length])

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        off = gpa - self.gpa
        self.view[off : off + len(data)] = data
        self.mark(off, len(data))

    def zero(self, gpa: int, length: int) -> None:
        ctypes.memset(self.host_addr + gpa - self.gpa, 0, length)
        self.mark(gpa - self.gpa, length)

    def mark(self, offset: int, length: int) -> None:
        """Note that bytes at offset were written by the host (the monitor or the egress
        broker), for a rollback of a memory in a file of its own (the only kind that needs it:
        elsewhere the page map shows what was written)."""
        if self.origin_fd is not None and length > 0:
            self.marked.append((offset, length))

    def discard(self, gpa: int, length: int) -> None:
        """Zero a range and, for whole pages, give the host memory back.

        A private copy-on-write mapping (a clone) sets `punch_holes` False: a
        hole there would show the template's bytes again, so it zeroes, but for the
        huge pages wholly inside its anonymous blocks, which it drops.
        """
        off = gpa - self.gpa
        self.mark(off, length)
        lo = min((off + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1), off + length)
        hi = max((off + length) & ~(PAGE_SIZE - 1), lo)
        if not self.punch_holes:
            at = off
            for start, end in self._anonymous_huge_pages(off, off + length):
                ctypes.memset(self.host_addr + at, 0, start - at)
                hostmm.drop_pages(self.host_addr + start, end - start)
                self._remapped()
                at = end
            ctypes.memset(self.host_addr + at, 0, off + length - at)
            return
        if hi - lo < PUNCH_MIN:
            ctypes.memset(self.host_addr + off, 0, length)
            return
        ctypes.memset(self.host_addr + off, 0, lo - off)
        ctypes.memset(self.host_addr + hi, 0, off + length - hi)
        self._remapped()
        if not hostmm.punch_hole(self.fd, lo, hi - lo):
            ctypes.memset(self.host_addr + lo, 0, hi - lo)

    def _anonymous_huge_pages(self, start: int, end: int) -> list[tuple[int, int]]:
        """The [start, end) spans of whole huge pages of anonymous blocks in [start, end)."""
        huge = hostmm.HUGE_PAGE
        spans = []
        for lo, hi in self.anonymous:
            a = (max(lo, start) + huge - 1) & ~(huge - 1)
            b = min(hi, end) & ~(huge - 1)
            if a < b:
                spans.append((a, b))
        return spans

    def populate(self, gpa: int, length: int) -> None:
        """Give [gpa, gpa+length) its host pages now (best effort: a refusal changes nothing)."""
        hostmm.populate_write(self.host_addr + gpa - self.gpa, length)

    def u64(self, gpa: int) -> int:
        return int.from_bytes(self.view[gpa - self.gpa : gpa - self.gpa + 8], "little")

    def put_u64(self, gpa: int, value: int) -> None:
        self.write(gpa, value.to_bytes(8, "little"))

    # -- another memory file shown in place (pipeline hand-offs) -------------------

    def show_file(self, fd: int, length: int, writable: bool) -> None:
        """Map `length` bytes of another memory file over the start of this memory, shared.

        Guest-physical addresses and `view` stay the same; only the pages behind them
        change (KVM follows the host mapping). show_own() puts this memory's file back.
        """
        if not 0 < length <= self.size or length % PAGE_SIZE:
            raise GuestMemoryError(f"cannot show {length} B of a file in {self.name} "
                                   f"({self.size} B)")
        self._remapped()
        try:
            hostmm.map_over(self.host_addr, length, fd, private=False, writable=writable,
                            populate=True)
        except OSError as e:
            raise GuestMemoryError(f"cannot map a file into {self.name}: {e.strerror}") from None

    def show_own(self, length: int) -> None:
        """This memory's own file again over its first `length` bytes, as it was mapped."""
        self._remapped()
        hostmm.map_over(self.host_addr, length, self.fd, private=self.private)

    # -- copy-on-write views (clones) ---------------------------------------------

    def make_private(self) -> None:
        """Map the file copy-on-write at the same address: writes stay in this process."""
        self._remapped()
        hostmm.map_over(self.host_addr, self.size, self.fd, private=True)
        self.punch_holes = False
        self.private = True

    def map_anonymous(self, blocks: list[tuple[int, int]]) -> None:
        """Map these [start, end) offsets (huge-page aligned holes of the file: huge_holes)
        of a private mapping as fresh anonymous memory on transparent huge pages. They read
        as zero either way, but there a first touch gets 2 MiB, which KVM maps in one fault
        (the guest's page tables map RAM in 2 MiB pages), where a copy-on-write view of the
        file gets 4 KiB a fault. A clone does this before its VM is made. A refused
        MADV_HUGEPAGE leaves anonymous 4 KiB pages, which read as zero all the same."""
        self._remapped()
        for lo, hi in blocks:
            hostmm.map_anonymous_huge(self.host_addr + lo, hi - lo)
        self.anonymous = blocks

    def use_own_file(self) -> None:
        """Map a file of this process's own in place, holding the same bytes.

        A clone does this for its ETL regions before their first request: the egress
        broker writes downloads into a region's file and reads uploads from it, so that
        file must be one no other clone or the template maps. The template's file stays
        the origin that rollback restores from. Costs a memfd and a copy of what the
        template's file holds (its data ranges; the rest stays a hole).
        """
        fd = hostmm.sealed_memfd(f"usetl-{self.name}{OWN_FILE}", self.size)
        try:
            for off, length in data_ranges(self.fd, self.size) + self.written_ranges():
                os.pwrite(fd, self.view[off : off + length], off)
            hostmm.map_over(self.host_addr, self.size, fd, private=False)
        except OSError:
            os.close(fd)
            raise
        self._remapped()
        self.origin_fd, self.fd = self.fd, fd
        self.punch_holes = True
        self.private = False

    def prefetch_for_writing(self, ranges: list[tuple[int, int]]) -> bool:
        """Make the pages of these (offset, length) ranges this process's own copies now, in
        one batch (a clone, before its guest runs: the pages its template's first request
        wrote, which a fresh VM would otherwise copy one fault at a time). False if the host
        refused (the guest then faults them in as it goes)."""
        return all(hostmm.populate_write(self.host_addr + off, length)
                   for off, length in ranges)

    def prefetch_for_reading(self, ranges: list[tuple[int, int]]) -> bool:
        """Map the template's pages of these (offset, length) ranges in this process now (a
        clone made ahead: its guest's first touch of each then costs KVM's fault alone, not
        the host's too). False if the host refused."""
        return all(hostmm.populate_read(self.host_addr + off, length) for off, length in ranges)

    def written_ranges(self) -> list[tuple[int, int]]:
        """(offset, length) of every page written since make_private() or use_own_file().

        In a private mapping: the pages this process copied, which shows writes by the
        guest and by the monitor alike (KVM's dirty log sees only the guest's). In a file
        of its own: the pages this process has mapped (the guest's touches) and the ranges
        marked as written by the host (the broker writes through a mapping of its own).
        PAGEMAP_SCAN walks only the populated page tables (every page the process maps:
        ~85 us for a clone's 256 MiB of RAM); older kernels read one page-map entry per
        page. A page becomes this process's own copy, or mapped, only in a page fault of
        one of its threads (the guest's, in KVM_RUN, too) or a change of mapping here
        (_remapped), so while the process has taken no fault since the last scan, that
        scan's pages are the answer (a recycled no-op and its rollback take none).
        """
        own = self.origin_fd is not None
        faults = (os.getpid(), hostmm.page_faults())  # a forked child counts from zero
        if self._scanned is not None and self._scanned[0] == faults:
            ranges = self._scanned[1]
        else:
            ranges = self._scan_written()
            self._scanned = (faults, ranges)
        return _page_runs(ranges + self.marked) if own else list(ranges)

    def _scan_written(self) -> list[tuple[int, int]]:
        scan = hostmm.present_pages if self.origin_fd is not None else hostmm.private_pages
        found = scan(self.host_addr, self.size)
        if found is None:
            return self._written_ranges_from_pagemap()
        return [(start - self.host_addr, end - start) for start, end in found]

    def _remapped(self) -> None:
        """Pages were mapped over or dropped without a fault: the last scan is stale."""
        self._scanned = None

    def backed_bytes(self) -> int:
        """The host memory this process holds for it: in a file of its own, the file's
        allocated pages; in a private mapping (a clone's), the pages it copied (those it
        shares with its template are the template's), as counted at measure_from_here and
        followed since by the process's anonymous memory (its heap's growth too, as
        Linux's memory cgroup charges it). Pages never touched, and another file's pages
        shown here (show_file_pages: the host's page cache), are not held."""
        if not self.private:
            return os.fstat(self.fd).st_blocks * 512
        if self._anonymous_offset is None:
            self.measure_from_here()
        assert self._anonymous_offset is not None
        return hostmm.resident_anonymous_bytes() - self._anonymous_offset

    def measure_from_here(self) -> None:
        """backed_bytes counts from what this process holds now: one walk of the page map
        (milliseconds for a large RAM), then only the kernel's counters. A forked monitor
        goes on from its parent's count: its anonymous memory starts as its parent's."""
        if self.private:
            own = sum(length for _, length in self.written_ranges())
            self._anonymous_offset = hostmm.resident_anonymous_bytes() - own

    def _written_ranges_from_pagemap(self) -> list[tuple[int, int]]:
        pages = self.size // PAGE_SIZE
        data = os.pread(hostmm.pagemap_fd(), pages * 8, (self.host_addr // PAGE_SIZE) * 8)
        flags = data[7::8].translate(_OWN_COPY if self.origin_fd is None else _PRESENT)
        return [(m.start() * PAGE_SIZE, (m.end() - m.start()) * PAGE_SIZE)
                for m in _RUNS.finditer(flags)]

    def revert(self, ranges: list[tuple[int, int]]) -> None:
        """Copy the template file's bytes back over these ranges (and show this memory's
        file again where file pages were shown: the template never has any)."""
        self.drop_file_pages(0, self.size)
        if self.anonymous:
            ranges = self._zero_anonymous(ranges)
        if self.origin_fd is None:
            view, origin = self.view, self._origin_view()
            for off, length in ranges:
                view[off : off + length] = origin[off : off + length]
        else:
            # A region's origin is mostly holes: a mapping's read fault would fill them in
            # the template's file, which preadv reads as zeros without.
            for off, length in ranges:
                done = os.preadv(self.origin_fd, [self.view[off : off + length]], off)
                if done != length:
                    raise GuestMemoryError(f"short read restoring {self.name} at {off:#x}")
        self.marked = []

    def _zero_anonymous(self, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Zero the parts of these ranges in anonymous blocks (the template's file has zeros
        there, and copying from it would fill its holes); returns the other parts. Zeroed,
        not dropped: the clone keeps its huge pages mapped, as it keeps the 4 KiB copies it
        made elsewhere (a request after a rollback then takes no first touches)."""
        rest = []
        for off, length in ranges:
            end = off + length
            for lo, hi in self.anonymous:  # sorted
                if hi <= off:
                    continue
                if lo >= end:
                    break
                if off < lo:
                    rest.append((off, lo - off))
                    off = lo
                cut = min(end, hi)
                ctypes.memset(self.host_addr + off, 0, cut - off)
                off = cut
            if off < end:
                rest.append((off, end - off))
        return rest

    def _origin_view(self) -> memoryview:
        """This memory's file, mapped read-only once: a copy from it costs no syscall per
        range (a rollback after a no-op copies ~140 ranges; preadv took 2.6x as long).
        The pages a private mapping owns copies of are in the file already (a write fault
        fills a hole first), so reading them there adds none to it."""
        if self._origin is not None and self._origin[0] == self.fd:
            return self._origin[2]
        self._close_origin()
        try:
            addr = hostmm.map_shared(self.fd, self.size, writable=False)
        except OSError as e:
            raise GuestMemoryError(f"cannot map {self.name}'s file to restore from: "
                                   f"{e.strerror}") from None
        view = memoryview((ctypes.c_ubyte * self.size).from_address(addr)).cast("B")
        self._origin = (self.fd, addr, view)
        return view

    def _close_origin(self) -> None:
        if self._origin is not None:
            _, addr, view = self._origin
            view.release()
            hostmm.unmap(addr, self.size)
            self._origin = None

    def trim_outside(self, keep: list[tuple[int, int]]) -> None:
        """Punch out of the file everything but `keep` (sorted (offset, length) ranges).

        A page a clone faults on where the file has a hole becomes a (zero)
        page of the file, even in a private mapping, so a template's file
        grows with its clones' touches; those pages are zero and can go.
        """
        off = 0
        for start, length in keep + [(self.size, 0)]:
            if start > off:
                hostmm.punch_hole(self.fd, off, start - off)
            off = max(off, start + length)

    def copy_to_new_file(self) -> None:
        """Put the current contents in a file of their own, mapped shared in place.

        A clone that becomes a template does this: its private pages and the
        bytes it still shares with its own template go into a new memfd; so
        does the forked child of a USF whose memory is shared (its own copy).
        """
        fd = os.memfd_create(f"usetl-{self.name}", os.MFD_CLOEXEC)
        os.ftruncate(fd, self.size)
        # A shared mapping's bytes are all in its file; a private one's also in its own pages;
        # the file pages shown are another file's.
        written = self.written_ranges() if self.private else []
        shown = [(start, end - start) for start, end in self.file_pages]
        for off, length in data_ranges(self.fd, self.size) + written + shown:
            os.pwrite(fd, self.view[off : off + length], off)
        hostmm.map_over(self.host_addr, self.size, fd, private=False)
        self._remapped()
        self.file_pages, self.anonymous = [], []
        os.close(self.fd)
        self.fd = fd
        self._close_origin()
        if self.origin_fd is not None:  # a clone's region in a file of its own: self-contained
            os.close(self.origin_fd)
            self.origin_fd, self.marked = None, []
        self.punch_holes = True
        self.private = False

    def map_shared_file(self, offset: int, length: int, fd: int, file_offset: int = 0) -> None:
        """Show `fd` from `file_offset` (mapped shared) at [offset, offset+length) instead of
        this memory's own pages: a forked process that inherits the mapping sees the same."""
        self._remapped()
        hostmm.map_over(self.host_addr + offset, length, fd, private=False, offset=file_offset)

    def map_own_file(self, offset: int, length: int) -> None:
        """Undo map_shared_file: this memory's own file there again, as it was mapped."""
        self._remapped()
        hostmm.map_over(self.host_addr + offset, length, self.fd, private=self.private,
                        offset=offset)

    def use_huge_pages(self, ranges: list[tuple[int, int]]) -> int:
        """Put each huge page that the (offset, length) `ranges` about to be written fill at
        least half on a huge page of this memory's file (hostmm.collapse), so that KVM maps
        it in one fault where the guest would take one per 4 KiB page it reads (a read-only
        memslot's pages get no prefetch). Done before the writes, a collapse copies little
        and the writes allocate no 4 KiB pages. Emptier ones stay sparse: their holes would
        cost memory. Returns how many were put on huge pages."""
        huge = hostmm.HUGE_PAGE
        filled: dict[int, int] = {}
        for offset, length in ranges:
            lo, hi = self.host_addr + offset, self.host_addr + offset + length
            for block in range(lo & ~(huge - 1), hi, huge):
                filled[block] = filled.get(block, 0) + min(hi, block + huge) - max(lo, block)
        collapsed = 0
        for block, n in filled.items():
            if 2 * n >= huge and self.host_addr <= block \
                    and block + huge <= self.host_addr + self.size:
                hostmm.populate_write(block, PAGE_SIZE)  # a collapse needs a page present
                self._remapped()  # a collapse fills a huge page without a fault
                collapsed += hostmm.collapse(block, huge)
        return collapsed

    # -- another file's pages shown copy-on-write (libraries from an archive) -----------

    def show_file_pages(self, offset: int, length: int, path: str, file_offset: int) -> bool:
        """Show `length` bytes of the file at host `path` from `file_offset` at `offset`,
        copy-on-write, instead of copying them in: the guest reads the file's page-cache
        pages (one copy for every VM that maps them) and a store copies the page it hits
        (MAP_PRIVATE's semantics). False if the host refuses; nothing is changed then."""
        if offset % PAGE_SIZE or length % PAGE_SIZE or file_offset % PAGE_SIZE \
                or not 0 < length <= self.size - offset:
            return False
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        self._remapped()
        try:
            hostmm.map_over(self.host_addr + offset, length, fd, private=True,
                            offset=file_offset)
        except OSError:
            return False
        finally:
            os.close(fd)
        self.file_pages.append((offset, offset + length))
        return True

    def drop_file_pages(self, start: int, end: int) -> None:
        """This memory's own file again wherever [start, end) shows file pages; what it
        reads there is then the file's (callers discard the range next)."""
        kept = []
        for lo, hi in self.file_pages:
            if hi <= start or end <= lo:
                kept.append((lo, hi))
                continue
            cut_lo, cut_hi = max(lo, start), min(hi, end)
            self.map_own_file(cut_lo, cut_hi - cut_lo)
            if lo < cut_lo:
                kept.append((lo, cut_lo))
            if cut_hi < hi:
                kept.append((cut_hi, hi))
        self.file_pages = kept

    def keep_file_pages(self) -> None:
        """Copy the file pages shown into this memory's own file and show it there again: a
        template's memory file must hold all its bytes, since clones map only that file."""
        for lo, hi in self.file_pages:
            data = bytes(self.view[lo:hi])
            self.map_own_file(lo, hi - lo)
            self.view[lo:hi] = data
        self.file_pages = []

    def close(self) -> None:
        self._close_origin()
        self.view.release()
        hostmm.unmap(self.host_addr, self.size)
        os.close(self.fd)
        if self.origin_fd is not None:
            os.close(self.origin_fd)


def guest_memories(parts: list[tuple[str, int, int, int | None]]) -> dict[str, GuestMemory]:
    """Guest memories, (name, gpa, size, fd or None for a new file) each, mapped as far
    apart in host addresses as in guest-physical ones: neighbours then make one memslot
    (vm.machine.memslots). The gaps between them are given back."""
    parts = sorted(parts, key=lambda part: part[1])
    start, end = parts[0][1], max(gpa + size for _, gpa, size, _ in parts)
    try:
        base = hostmm.reserve(end - start)
    except OSError as e:
        raise GuestMemoryError(f"cannot reserve {(end - start) >> 20} MiB of address space "
                               f"for guest memory: {e.strerror}") from None
    memories: dict[str, GuestMemory] = {}
    try:
        for name, gpa, size, fd in parts:
            memories[name] = GuestMemory(name, gpa, size, fd, at=base + gpa - start)
    except GuestMemoryError:
        hostmm.unmap(base, end - start)
        for name, _, _, fd in parts:
            if fd is None and name in memories:  # a file made here: the caller owns the rest
                os.close(memories[name].fd)
        raise
    at = start
    for _, gpa, size, _ in parts:
        if gpa > at:
            hostmm.unmap(base + at - start, gpa - at)
        at = max(at, gpa + size)
    return memories


def _page_runs(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Byte ranges widened to whole pages, sorted and merged."""
    runs: list[tuple[int, int]] = []
    for off, length in sorted(ranges):
        start, end = off & ~(PAGE_SIZE - 1), (off + length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        if runs and start <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(runs[-1][1], end))
        else:
            runs.append((start, end))
    return [(start, end - start) for start, end in runs]


def data_ranges(fd: int, size: int) -> list[tuple[int, int]]:
    """The parts of a sparse file that hold data (everything else reads as zero)."""
    ranges = []
    off = 0
    while off < size:
        try:
            start = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        ranges.append((start, end - start))
        off = end
    return ranges


def huge_holes(data: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """The [start, end) huge-page aligned spans of a file of `size` bytes that hold none
    of its (offset, length) `data` ranges (sorted, as data_ranges gives them)."""
    huge = hostmm.HUGE_PAGE
    holes, at = [], 0
    for off, length in data + [(size, 0)]:
        lo, hi = (at + huge - 1) & ~(huge - 1), off & ~(huge - 1)
        if hi > lo:
            holes.append((lo, hi))
        at = max(at, off + length)
    return holes
