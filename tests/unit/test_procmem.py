"""Private memory by what holds it, read from a real process's smaps."""

import mmap
import os

from usetl.procmem import private_by_kind, process_memory

PAGES = 64


def test_private_copies_of_guest_ram_count_as_guest_ram():
    fd = os.memfd_create("usetl-ram", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, PAGES * mmap.PAGESIZE)
        shared = mmap.mmap(fd, PAGES * mmap.PAGESIZE)
        shared[:] = b"\x01" * len(shared)  # the template's bytes, in the file
        before = private_by_kind(os.getpid())["guest RAM"]
        view = mmap.mmap(fd, PAGES * mmap.PAGESIZE, flags=mmap.MAP_PRIVATE)
        for page in range(PAGES):
            view[page * mmap.PAGESIZE] = 2  # a copy-on-write copy of each page
        kinds = private_by_kind(os.getpid())
        assert kinds["guest RAM"] - before >= PAGES * mmap.PAGESIZE
        # Every private byte is of some kind: the kinds add up to the USS.
        assert abs(sum(kinds.values()) - process_memory([os.getpid()])["uss"]) < 1 << 20
        view.close()
        shared.close()
    finally:
        os.close(fd)


def test_anonymous_memory_counts_as_heap():
    before = private_by_kind(os.getpid())["Python and C heap"]
    block = mmap.mmap(-1, PAGES * mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    block[:] = b"\x03" * len(block)
    assert private_by_kind(os.getpid())["Python and C heap"] - before >= PAGES * mmap.PAGESIZE
    block.close()
