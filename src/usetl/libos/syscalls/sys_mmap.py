"""Memory: brk, mmap, munmap, mremap, mprotect, madvise."""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from .. import sharedtmp
from ..errors import SyscallError
from ..files import MAX_OFFSET
from ..fs import F_SEAL_FUTURE_WRITE, F_SEAL_WRITE, DeviceNode, ImageNode, TmpFile
from ..hostfs import HostNode
from ..mm import PAGE_SIZE, FileBacking, SharedFileMap, page_up
from .args import s32

if TYPE_CHECKING:
    from ..kernel import Kernel

PROT_WRITE = 0x2
MAP_SHARED, MAP_PRIVATE, MAP_SHARED_VALIDATE = 0x1, 0x2, 0x3
MAP_TYPE = 0xF
MAP_FIXED, MAP_ANONYMOUS = 0x10, 0x20
MAP_FIXED_NOREPLACE = 0x100000
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2
MADV_DONTNEED = 4
MADV_REMOVE = 9
# A file mapping at least this large is shown from its archive's pages, not copied.
SHOW_PAGES_MIN = 64 << 10


def sys_brk(k: Kernel, addr: int, *_: int) -> int:
    return k.mm.brk(addr)


def sys_mmap(k: Kernel, addr: int, length: int, prot: int, flags: int, fd: int,
             offset: int) -> int:
    kind = flags & MAP_TYPE
    if kind not in (MAP_SHARED, MAP_PRIVATE, MAP_SHARED_VALIDATE) or length == 0:
        raise SyscallError(errno.EINVAL)
    fixed = bool(flags & MAP_FIXED)
    noreplace = bool(flags & MAP_FIXED_NOREPLACE)
    if flags & MAP_ANONYMOUS:
        if kind != MAP_PRIVATE:
            return _map_shared_anonymous(k, addr, length, fixed, noreplace)
        start = k.mm.map(addr, length, fixed, noreplace, "[anon]")
        k.mm.populate(start, length)
        return start
    if offset % PAGE_SIZE:
        raise SyscallError(errno.EINVAL)
    f = k.fds.get(s32(fd))
    end = offset + page_up(length)
    if end >= 1 << 64 or end > MAX_OFFSET and not isinstance(f.node, DeviceNode):
        raise SyscallError(errno.EOVERFLOW)  # its pages wrap, or pass the largest file
    if not f.readable:
        raise SyscallError(errno.EACCES)
    node = f.node
    if isinstance(node, DeviceNode):
        if fixed or noreplace:
            raise SyscallError(errno.EINVAL)  # device memory has its own, fixed address
        return f.map_device(length, prot, flags, offset)
    if isinstance(node, sharedtmp.SharedNode):
        node = sharedtmp.mapped(k, node)  # an fd of the monitor's own, held while mapped
    elif not isinstance(node, (ImageNode, HostNode, TmpFile)):
        raise SyscallError(errno.ENODEV)
    shared = kind != MAP_PRIVATE and bool(prot & PROT_WRITE)
    if shared and not f.writable:
        raise SyscallError(errno.EACCES)  # only image and host files are read-only
    if shared and isinstance(node, TmpFile) and node.seals & (F_SEAL_WRITE
                                                              | F_SEAL_FUTURE_WRITE):
        raise SyscallError(errno.EPERM)  # a memfd sealed against writes
    n = max(min(page_up(length), node.size - offset), 0)
    # ld.so maps a library over its whole span, then maps its segments over
    # that with MAP_FIXED; where a segment's bytes are already in place from
    # the span mapping made by the syscall just before, copying them again is
    # wasted work (no other syscall can have changed them in between).
    last = k.mm.last_file_map
    if fixed and last and last[4] == k.stats.count - 1 and last[0] is node \
            and last[1] == addr - offset:
        if last[2] <= addr and addr + n <= last[3] and k.mm.is_mapped(addr, addr + length):
            k.mm.last_file_map = (*last[:4], k.stats.count)
            return addr
    start = k.mm.map(addr, length, fixed, noreplace, f.path,
                     FileBacking(node, offset, kind != MAP_PRIVATE))
    end = start + page_up(length)
    if kind != MAP_PRIVATE and isinstance(node, TmpFile):
        k.mm.map_shared_pages(start, end, node, offset)  # the file's bytes are there
    elif kind != MAP_PRIVATE and isinstance(node, sharedtmp.SharedNode):
        k.mm.map_host_file(start, end, node.fd, offset)
    elif n:
        _place_file_bytes(k, node, start, offset, n)
    k.mm.last_file_map = (node, start - offset, start, start + n, k.stats.count)
    if shared and not isinstance(node, sharedtmp.SharedNode):  # its stores are the file's
        k.mm.shared.append(SharedFileMap(start, end, node, offset))
    return start


def _map_shared_anonymous(k: Kernel, addr: int, length: int, fixed: bool,
                          noreplace: bool) -> int:
    """MAP_SHARED|MAP_ANONYMOUS: as on Linux, the pages of a file in no directory (its bytes
    not kept in the file's bytearray: nothing reads them but the mappings), which a forked
    child then shares."""
    node = TmpFile(k.ns.tmp.inodes.next(), 0o600)
    node.links = 0
    start = k.mm.map(addr, length, fixed, noreplace, "/dev/zero (deleted)",
                     FileBacking(node, 0, True))
    k.mm.map_shared_pages(start, start + page_up(length), node, 0)
    return start


def _place_file_bytes(k: Kernel, node: ImageNode | HostNode | TmpFile | sharedtmp.SharedNode,
                      start: int,
                      offset: int, n: int) -> None:
    """Put the file's bytes [offset, offset+n) at `start` in guest RAM.

    A file of an archive (the image, a mounted module-store entry: page-aligned
    in it) has its whole pages shown in place, copy-on-write (GuestMemory.
    show_file_pages), not copied: ld.so's mmap of a library then costs no copy
    of it, the guest reads the host's page cache, and a store into a private
    mapping copies only the page it hits. The last partial page is copied, so
    that what lies past the end of the file reads as zero. Other files, and
    mappings too small to be worth a host mmap, are copied.
    """
    ram = k.vm.ram
    whole = n & ~(PAGE_SIZE - 1) if n >= SHOW_PAGES_MIN and isinstance(node, ImageNode) else 0
    if whole and ram.show_file_pages(start, whole, str(node.fs.archive.path),
                                     node.entry.offset + offset):
        ram.view[start + whole : start + n] = node.read_at(offset + whole, n - whole)
        return
    if isinstance(node, (ImageNode, HostNode)):
        data = node.read_at(offset, n)
    elif isinstance(node, sharedtmp.SharedNode):
        data = os.pread(node.fd, n, offset)
    elif node.pages is not None:  # stores through its shared mappings are there
        data = node.pages.read(offset, n)
    else:
        data = memoryview(node.data)[offset : offset + n]
    ram.view[start : start + n] = data


def sys_munmap(k: Kernel, addr: int, length: int, *_: int) -> int:
    if any(region.contains(addr, length) for region in k.vm.regions.values()):
        return 0  # a device's memory (the ETL regions) stays where it is
    k.mm.unmap(addr, length)
    return 0


def sys_mremap(k: Kernel, old: int, old_len: int, new_len: int, flags: int, *_: int) -> int:
    if flags & MREMAP_FIXED:
        raise SyscallError(errno.EINVAL)
    new = k.mm.remap(old, old_len, new_len, bool(flags & MREMAP_MAYMOVE))
    grown = page_up(old_len)
    if new != old:  # a moved shared file mapping shows the file's pages at its new place
        _show_file(k, [p for p in k.mm.file_parts(new, new + min(grown, page_up(new_len)))
                       if isinstance(p[2].node, (TmpFile, sharedtmp.SharedNode))
                       and p[2].shared])
    if page_up(new_len) > grown:  # a file mapping's new part shows the file there
        _show_file(k, k.mm.file_parts(new + grown, new + page_up(new_len)))
    return new


def _show_file(k: Kernel, parts: list[tuple[int, int, FileBacking]]) -> None:
    """Put each part's file bytes in place (what lies past the end of the file reads zero)."""
    for lo, hi, backing in parts:
        node = backing.node
        if backing.shared and isinstance(node, TmpFile):
            k.mm.map_shared_pages(lo, hi, node, backing.offset)
            continue
        if backing.shared and isinstance(node, sharedtmp.SharedNode):
            k.mm.map_host_file(lo, hi, node.fd, backing.offset)
            continue
        n = max(min(hi - lo, node.size - backing.offset), 0)  # type: ignore[attr-defined]
        if n:
            _place_file_bytes(k, node, lo, backing.offset, n)  # type: ignore[arg-type]


def sys_mprotect(k: Kernel, addr: int, length: int, prot: int, *_: int) -> int:
    # Guest RAM is mapped read-write-execute with 2 MiB pages: protections
    # are recorded as a valid request and not enforced.
    if addr % PAGE_SIZE:
        raise SyscallError(errno.EINVAL)
    if length and not k.mm.is_mapped(addr, addr + page_up(length)):
        raise SyscallError(errno.ENOMEM)
    return 0


def sys_madvise(k: Kernel, addr: int, length: int, advice: int, *_: int) -> int:
    if addr % PAGE_SIZE:
        raise SyscallError(errno.EINVAL)
    if advice in (MADV_DONTNEED, MADV_REMOVE) and length:
        end = addr + page_up(length)
        if not k.mm.is_mapped(addr, end):
            raise SyscallError(errno.ENOMEM)
        if k.mm.is_host_shared(addr, end):
            return 0  # a shared file mapping's bytes are the file's: they stay
        # As on Linux, a file mapping reads the file's bytes again after MADV_DONTNEED (a
        # shared one's stores are the file's: written back first); anonymous memory zero.
        files = k.mm.file_parts(addr, end) if advice == MADV_DONTNEED else []
        k.mm.sync(addr, end)
        k.mm.discard(addr, end - addr)
        _show_file(k, files)
    return 0


def sys_msync(k: Kernel, addr: int, length: int, *_: int) -> int:
    if addr % PAGE_SIZE:
        raise SyscallError(errno.EINVAL)
    k.mm.sync(addr, addr + page_up(length))
    return 0


def sys_mlock(k: Kernel, *_: int) -> int:
    return 0
