"""Fill the free blocks of CPython's partly used memory pools before a template forks.

A process's small allocations take blocks from pools that have free ones first (pymalloc's
usedpools). In a template those pools are spread over its whole heap, so each clone's
allocations would write, and so copy, a page of each. With every such block held by a filler
of the template's, a clone's allocations go to fresh pools instead: fewer pages, its own.
"""

from __future__ import annotations

import os
import re
import sys

BYTES_HEADER = sys.getsizeof(b"")
SMALLEST_CLASS = 16  # no object is this small: its blocks stay free
# A row of sys._debugmallocstats' size-class table: class, size, pools, blocks in use, free.
STATS_ROW = re.compile(rb"^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$", re.M)

_fillers: list[object] = []  # held for the process's lifetime (and frozen with it)


def fill_free_blocks() -> int:
    """Take the free blocks of every partly used pool; returns how many were taken."""
    taken = 0
    for size, free in free_blocks():
        _fillers.extend(_filler(size) for _ in range(free))
        taken += free
    return taken


def _filler(size: int) -> object:
    """An object allocated in `size`'s class (sizes are multiples of 16 above 16)."""
    if size <= 32:
        return float(len(_fillers))  # 24 bytes
    return bytes(size - BYTES_HEADER)


def free_blocks() -> list[tuple[int, int]]:
    """(block size, free blocks in partly used pools) of each size class above the smallest,
    from sys._debugmallocstats, which writes to the C stderr (none without pymalloc)."""
    read, write = os.pipe()  # its few KiB fit in a pipe's buffer
    saved = os.dup(2)
    try:
        os.dup2(write, 2)
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(write)
    with os.fdopen(read, "rb") as f:
        stats = f.read()
    rows = (tuple(map(int, row)) for row in STATS_ROW.findall(stats))
    return [(size, free) for _, size, _, _, free in rows if size > SMALLEST_CLASS and free]
