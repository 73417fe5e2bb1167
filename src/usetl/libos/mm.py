"""The guest's memory map: program break, mmap areas and the stack.

Guest RAM is identity-mapped, so "mapping" a range means reserving it here
and filling it (zeroes or file bytes). Free memory is kept zeroed, which is
what fresh anonymous memory must read as.
"""

from __future__ import annotations

import bisect
import errno
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from usetl.vm import GuestMemory
from usetl.vm.layout import PAGE_SIZE, STACK_GUARD, STACK_SIZE, USER_START

from .errors import SyscallError
from .sharedpages import SharedPages

if TYPE_CHECKING:
    from .allowance import Charge
    from .fs import TmpFile

# Fresh anonymous memory up to this size gets its host pages when mapped (populate()).
POPULATE_MAX = 1 << 20


def page_up(n: int) -> int:
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def page_down(n: int) -> int:
    return n & ~(PAGE_SIZE - 1)


@dataclass(frozen=True)
class FileBacking:
    """What a file mapping maps: the file and the file offset at its area's start."""

    node: object
    offset: int
    shared: bool  # MAP_SHARED: stores are the file's (MAP_PRIVATE: the mapping's own)

    def moved(self, by: int) -> FileBacking:
        """The backing of the part that starts `by` bytes further on."""
        return FileBacking(self.node, self.offset + by, self.shared)


@dataclass
class Area:
    start: int
    end: int
    name: str
    file: FileBacking | None = None  # a file mapping's (None: anonymous memory)

    def file_at(self, addr: int) -> FileBacking | None:
        return None if self.file is None else self.file.moved(addr - self.start)


@dataclass(frozen=True)
class HostShared:
    """[start, end) shows `pages` from `offset`: part of a MAP_SHARED file mapping."""

    start: int
    end: int
    pages: SharedPages
    offset: int


@dataclass
class SharedFileMap:
    """A writable MAP_SHARED mapping of a tmpfs file (`node`, whose bytes are `node.data`).

    The mapping shows the file's shared pages (map_shared_pages); its stores reach the
    file's bytearray, which other parts of the monitor read (a child's copy of /tmp, exec),
    when it is unmapped or msync'd.
    """

    start: int
    end: int
    node: object
    offset: int  # the file offset at `start`

    def write_back(self, view: memoryview, lo: int, hi: int) -> None:
        data = self.node.data  # type: ignore[attr-defined]
        at = self.offset + (lo - self.start)
        n = min(hi - lo, len(data) - at)  # stores past the end of the file are not kept
        if n > 0:
            data[at : at + n] = view[lo : lo + n]


class AddressSpace:
    """Reserved ranges of guest RAM, kept sorted and non-overlapping."""

    # This process's part of its invocation tree's memory allowance (allowance.py), while
    # the invocation has children; never in a template's state (the invocation's end drops it).
    charge: Charge | None = None
    # Where the loader put the argv and envp strings, [start, end) on the stack: what
    # /proc/self/cmdline and environ read, as Linux's mm->arg_start..arg_end.
    args: tuple[int, int] = (0, 0)
    env: tuple[int, int] = (0, 0)

    def __init__(self, ram: GuestMemory, brk_limit: int | None = None):
        self.ram = ram
        self.stack_top = ram.end
        self.stack_bottom = ram.end - STACK_SIZE
        self.mmap_top = self.stack_bottom - STACK_GUARD
        self.starts: list[int] = []
        self.areas: list[Area] = []
        self.mapped = 0  # bytes in areas
        self.brk_start = 0
        self.brk_cur = 0
        # Room kept free above the break for the heap to grow into; glibc's
        # malloc falls back to mmap when it runs out.
        self.brk_limit = brk_limit if brk_limit is not None else min(64 << 20, ram.size // 8)
        self._insert(Area(self.stack_bottom, self.stack_top, "[stack]"))
        # The last file mapping's (node, address of file offset 0, start, end, syscall
        # number in the run): mmap skips copying bytes the mapping just before put in place.
        self.last_file_map: tuple | None = None
        self.shared: list[SharedFileMap] = []
        # The ranges where MAP_SHARED mappings of tmpfs files show those files' pages
        # (map_shared_pages), and those files: this process's own memory and copies again
        # when its invocation ends (unshare), so never in a template.
        self.host_shared: list[HostShared] = []
        self.paged: list[TmpFile] = []
        # The host fds of the shared /tmp files mapped (sharedtmp.py), held for reshare.
        self.host_files: list[int] = []

    # -- bookkeeping --------------------------------------------------------

    def _insert(self, area: Area) -> None:
        i = bisect.bisect_left(self.starts, area.start)
        self.starts.insert(i, area.start)
        self.areas.insert(i, area)
        self.mapped += area.end - area.start

    def overlaps(self, start: int, end: int) -> bool:
        i = bisect.bisect_right(self.starts, start) - 1
        if i >= 0 and self.areas[i].end > start:
            return True
        return i + 1 < len(self.areas) and self.areas[i + 1].start < end

    def is_mapped(self, start: int, end: int) -> bool:
        """Whether every byte of [start, end) is in some area."""
        pos = start
        i = max(bisect.bisect_right(self.starts, start) - 1, 0)
        while pos < end and i < len(self.areas):
            a = self.areas[i]
            if a.start > pos:
                return False
            pos = max(pos, a.end)
            i += 1
        return pos >= end

    def covered(self, start: int, end: int) -> int:
        """How many bytes of [start, end) are in areas."""
        n = 0
        for a in self.areas[max(bisect.bisect_right(self.starts, start) - 1, 0):]:
            if a.start >= end:
                break
            n += max(0, min(a.end, end) - max(a.start, start))
        return n

    def _admit(self, grow: int, call: str) -> None:
        """Room for `grow` more bytes beside what the invocation's processes hold, or ENOMEM."""
        if self.charge is not None and grow > 0:
            self.charge.admit(call, grow)

    def _settle(self) -> None:
        """Memory given back goes back to the allowance."""
        if self.charge is not None:
            self.charge.settle()

    def sync(self, start: int, end: int) -> None:
        """Write what [start, end) holds of shared file mappings back to their files."""
        for m in self.shared:
            if m.start < end and start < m.end:
                m.write_back(self.ram.view, max(m.start, start), min(m.end, end))

    def _drop_shared(self, start: int, end: int) -> None:
        self.sync(start, end)
        kept = []
        for m in self.shared:
            if end <= m.start or m.end <= start:
                kept.append(m)
                continue
            if m.start < start:
                kept.append(SharedFileMap(m.start, start, m.node, m.offset))
            if end < m.end:
                kept.append(SharedFileMap(end, m.end, m.node, m.offset + (end - m.start)))
        self.shared = kept

    def map_shared_pages(self, start: int, end: int, node: TmpFile, offset: int) -> None:
        """Show the pages of `node` from `offset` at [start, end), a MAP_SHARED mapping of
        it: every such mapping of the file, here and in forked children, and read() and
        write() of it, then see the same bytes, as on Linux (multiprocessing's SharedMemory
        opened twice, numpy.memmap, glibc's process-shared semaphores and SQLite's WAL
        index live there)."""
        pages = self.give_pages(node)
        pages.grow(offset + (end - start))
        self.ram.map_shared_file(start, end - start, node.pages.fd, offset)
        self.host_shared.append(HostShared(start, end, node.pages, offset))

    def map_host_file(self, start: int, end: int, fd: int, offset: int) -> None:
        """Show host file `fd` (a shared /tmp file's, in host_files) from
        `offset` at [start, end): a MAP_SHARED mapping of it, whose stores every process's
        mappings, read() and write() see at once, the host kernel's page cache."""
        self.ram.map_shared_file(start, end - start, fd, offset)
        self.host_shared.append(HostShared(start, end, SharedPages.adopt(fd), offset))

    def move_mappings(self, node: TmpFile, moved: object, fd: int) -> None:
        """`node`'s bytes are host file `fd`'s now (a shared /tmp file, `moved` its node:
        sharedtmp.py): its MAP_SHARED mappings show that file instead of its pages."""
        pages = node.pages
        self.host_files.append(fd)
        for i, s in enumerate(self.host_shared):
            if s.pages is pages:
                self.ram.map_shared_file(s.start, s.end - s.start, fd, s.offset)
                self.host_shared[i] = HostShared(s.start, s.end, SharedPages.adopt(fd),
                                                 s.offset)
        for a in self.areas:
            if a.file is not None and a.file.node is node:
                a.file = FileBacking(moved, a.file.offset, a.file.shared)
        self.shared = [m for m in self.shared if m.node is not node]

    def give_pages(self, node: TmpFile) -> SharedPages:
        """The shared pages holding `node`'s bytes, made (and kept here) at the first need."""
        if node.pages is None:
            node.pages = SharedPages(node.data)
            node.holes = node.unheld = ()  # its mappings may store anywhere: all of it data
            self.paged.append(node)
        return node.pages

    def page_fds(self) -> list[int]:
        """The memfds of the files mapped shared: a forked monitor keeps them."""
        return [*(node.pages.fd for node in self.paged if node.pages is not None),
                *self.host_files]

    def shared_bytes_held(self) -> int:
        """The host memory the shared pages this monitor made hold (a forked monitor's
        inherited ones are its parent's), as Linux charges a shmem page once."""
        return sum(node.pages.held_bytes() for node in self.paged
                   if node.pages is not None and node.pages.maker == os.getpid())

    def reshare(self) -> None:
        """Map the host-shared ranges again, over memory that was remapped as a whole."""
        for s in self.host_shared:
            self.ram.map_shared_file(s.start, s.end - s.start, s.pages.fd, s.offset)

    def is_host_shared(self, start: int, end: int) -> bool:
        return any(s.start <= start and end <= s.end for s in self.host_shared)

    def _unmap_pages(self, start: int, end: int, keep_bytes: bool) -> None:
        """This memory's own pages again in [start, end) where shared pages were shown
        (holding the bytes they showed, if `keep_bytes`)."""
        view = self.ram.view
        kept = []
        for s in self.host_shared:
            lo, hi = max(s.start, start), min(s.end, end)
            if lo >= hi:
                kept.append(s)
                continue
            data = bytes(view[lo:hi]) if keep_bytes else b""
            self.ram.map_own_file(lo, hi - lo)
            if keep_bytes:
                view[lo:hi] = data
            if s.start < lo:
                kept.append(HostShared(s.start, lo, s.pages, s.offset))
            if hi < s.end:
                kept.append(HostShared(hi, s.end, s.pages, s.offset + (hi - s.start)))
        self.host_shared = kept

    def unshare(self) -> None:
        """The invocation is over (or a template freezes): shared mappings keep their bytes
        in this memory's own pages, and the files theirs in their bytearrays, as copies
        written back at msync and munmap (no state to capture holds a host fd)."""
        self.sync(0, 1 << 64)
        self._unmap_pages(0, 1 << 64, keep_bytes=True)
        for node in self.paged:
            if node.pages is not None:
                node.data[:] = node.pages.read(0, len(node.data))
                node.pages.close()
                node.pages = None
        self.paged = []
        for fd in self.host_files:
            os.close(fd)
        self.host_files = []

    def _remove(self, start: int, end: int) -> None:
        """Drop [start, end) from the areas, splitting those it cuts."""
        if self.shared:
            self._drop_shared(start, end)
        if self.host_shared:
            self._unmap_pages(start, end, keep_bytes=False)
        i = max(bisect.bisect_right(self.starts, start) - 1, 0)
        while i < len(self.areas):
            a = self.areas[i]
            if a.start >= end:
                break
            if a.end <= start:
                i += 1
                continue
            del self.areas[i], self.starts[i]
            self.mapped -= a.end - a.start
            if a.start < start:
                self._insert(Area(a.start, start, a.name, a.file))
                i += 1
            if a.end > end:
                self._insert(Area(end, a.end, a.name, a.file_at(end)))
                break

    def _find_free(self, length: int) -> int:
        """Top-down first fit below the stack guard, above the heap's reserve."""
        floor = max(USER_START, self.brk_start + self.brk_limit)
        top = self.mmap_top
        for a in reversed(self.areas):
            if a.start >= top:
                continue
            if a.end <= top and top - a.end >= length and top - length >= floor:
                return top - length
            top = min(top, a.start)
            if top - length < floor:
                break
        if top - length >= floor:
            return top - length
        raise SyscallError(errno.ENOMEM)

    def _valid_user_range(self, start: int, end: int) -> bool:
        return USER_START <= start < end <= self.mmap_top or (
            self.stack_bottom <= start < end <= self.stack_top
        )

    # -- operations ----------------------------------------------------------

    def reserve(self, start: int, end: int, name: str) -> None:
        """Claim a range for the loader (no zeroing: RAM is fresh)."""
        if self.overlaps(start, end) or not self._valid_user_range(start, end):
            raise SyscallError(errno.ENOMEM)
        self._admit(end - start, "loading the program")
        self._insert(Area(start, end, name))

    def set_brk_base(self, addr: int) -> None:
        self.brk_start = self.brk_cur = page_up(addr)

    def brk(self, addr: int) -> int:
        """Linux semantics: returns the new break, or the old one on failure."""
        if addr == 0 or addr < self.brk_start or addr > self.brk_start + self.brk_limit:
            return self.brk_cur
        old_end, new_end = page_up(self.brk_cur), page_up(addr)
        if new_end > old_end:
            if self.overlaps(old_end, new_end) or new_end > self.mmap_top:
                return self.brk_cur
            try:
                self._admit(new_end - old_end, "brk")
            except SyscallError:
                return self.brk_cur
            self._insert(Area(old_end, new_end, "[heap]"))
            self.populate(old_end, new_end - old_end)
        elif new_end < old_end:
            self._remove(new_end, old_end)
            self.discard(new_end, old_end - new_end)
            self._settle()
        self.brk_cur = addr
        return addr

    def map(self, addr: int, length: int, fixed: bool, noreplace: bool, name: str,
            file: FileBacking | None = None) -> int:
        """Reserve `length` bytes (of `file`, for a file mapping); returns the start. Fresh
        memory reads as zero: the caller puts a file's bytes there."""
        if length <= 0:
            raise SyscallError(errno.EINVAL)
        length = page_up(length)
        if fixed or noreplace:
            if addr % PAGE_SIZE or not self._valid_user_range(addr, addr + length):
                raise SyscallError(errno.EINVAL if addr % PAGE_SIZE else errno.ENOMEM)
            replaced = self.covered(addr, addr + length)
            if replaced and noreplace:
                raise SyscallError(errno.EEXIST)
            self._admit(length - replaced, "mmap")
            if replaced:
                self._remove(addr, addr + length)
                self.discard(addr, length)
            self._insert(Area(addr, addr + length, name, file))
            if replaced:
                self._settle()
            return addr
        self._admit(length, "mmap")
        if addr and addr % PAGE_SIZE == 0 and self._valid_user_range(addr, addr + length) \
                and not self.overlaps(addr, addr + length):
            start = addr
        else:
            start = self._find_free(length)
        self._insert(Area(start, start + length, name, file))
        return start

    def unmap(self, addr: int, length: int) -> None:
        if addr % PAGE_SIZE or length <= 0:
            raise SyscallError(errno.EINVAL)
        end = addr + page_up(length)
        if not self._valid_user_range(addr, end):
            raise SyscallError(errno.EINVAL)
        # Zero only what was mapped: untouched free memory is already zero.
        i = max(bisect.bisect_right(self.starts, addr) - 1, 0)
        spans = []
        for a in self.areas[i:]:
            if a.start >= end:
                break
            lo, hi = max(a.start, addr), min(a.end, end)
            if lo < hi:
                spans.append((lo, hi))
        self._remove(addr, end)
        for lo, hi in spans:
            self.discard(lo, hi - lo)
        self._settle()

    def remap(self, old: int, old_len: int, new_len: int, may_move: bool) -> int:
        old_len, new_len = page_up(old_len), page_up(new_len)
        if old % PAGE_SIZE or new_len <= 0 or not self.is_mapped(old, old + old_len):
            raise SyscallError(errno.EFAULT if old % PAGE_SIZE == 0 else errno.EINVAL)
        if new_len <= old_len:
            if new_len < old_len:
                self.unmap(old + new_len, old_len - new_len)
            return old
        grow_end = old + new_len
        first, last = self._area_at(old), self._area_at(old + old_len - 1)
        if self._valid_user_range(old, grow_end) and not self.overlaps(old + old_len, grow_end):
            self._admit(new_len - old_len, "mremap")
            # A file mapping grows with the file's next bytes (remapped_file places them).
            self._insert(Area(old + old_len, grow_end, last.name, last.file_at(old + old_len)))
            return old
        if not may_move:
            raise SyscallError(errno.ENOMEM)
        new = self.map(0, new_len, False, False, first.name, first.file_at(old))
        view = self.ram.view
        view[new : new + old_len] = view[old : old + old_len]
        self.unmap(old, old_len)
        return new

    def _area_at(self, addr: int) -> Area:
        """The area holding `addr` (the caller checked that one does)."""
        return self.areas[bisect.bisect_right(self.starts, addr) - 1]

    def file_parts(self, start: int, end: int) -> list[tuple[int, int, FileBacking]]:
        """The parts (lo, hi, backing at lo) of [start, end) that file mappings cover."""
        parts = []
        i = max(bisect.bisect_right(self.starts, start) - 1, 0)
        for a in self.areas[i:]:
            if a.start >= end:
                break
            lo, hi = max(a.start, start), min(a.end, end)
            if lo < hi and a.file is not None:
                parts.append((lo, hi, a.file.moved(lo - a.start)))
        return parts

    def populate(self, start: int, length: int) -> None:
        """Give fresh memory of at most POPULATE_MAX (the heap's growth, CPython's arenas and
        frame-stack chunks, malloc's small mmaps: used at once) its host pages now. KVM
        maps a guest's first touch of a page together with up to 7 neighbours whose host
        pages are there (its prefetch), so such memory costs an eighth of the first-touch
        faults (a JSON parse in a new clone: 1,700 faults after the arenas' mmaps, 216)."""
        if length <= POPULATE_MAX:
            self.ram.populate(start, page_up(length))

    def discard(self, addr: int, length: int) -> None:
        """Make [addr, addr+length) read as zero (and give its pages back)."""
        if self.ram.file_pages:  # a file's pages shown there (and stores into them) go too
            self.ram.drop_file_pages(addr, addr + length)
        self.ram.discard(addr, length)

    @property
    def mapped_bytes(self) -> int:
        return self.mapped
