"""The archive format both sides read: the image, and module-store entries packed the same way.

Layout (all integers little-endian)::

    header   magic b"USETLIMG", format version u32, flags u32, zero padding to 4096
    data     each regular file's bytes, starting on a 4096-byte boundary
    index    UTF-8 JSON: {"meta": {...}, "entries": [[path, kind, mode, size,
             offset, mtime, target], ...]} sorted by path
    trailer  index offset u64, index length u64, sha256 of the index (32 bytes),
             magic b"USETLEND"

The monitor opens archives from host files (usetl.image.archive); the guest's
importer (usetl.importer) reads the same bytes from the module region, where the
monitor placed them. Both decode the index here, so they cannot disagree on it.

The module region (MODULES_DEVICE): read() gives its directory, JSON
{"size": region bytes, "archives": [{"mount": "/m0", "offset": o, "size": n}, ...],
"shadowed": [guest paths another file system covers]} (offsets page-aligned; the
image's mount is "/"); mmap at offset 0 maps the region read-only. Only what
the importer reads is placed (`in_region`): not shared objects' bytes (ld.so
reads them through the filesystem) nor the source of a module that has its pyc
(tracebacks read it by path); their pages in the region stay holes, which cost
no memory.
"""

import hashlib
import json
import re
import struct
import sys

MAGIC = b"USETLIMG"
TRAILER_MAGIC = b"USETLEND"
FORMAT_VERSION = 1
BLOCK_SIZE = 4096
HEADER = struct.Struct("<8sII")
TRAILER = struct.Struct("<QQ32s8s")
ENTRY_KINDS = ("file", "dir", "symlink")
# Row fields of the index, in order.
PATH, KIND, MODE, SIZE, OFFSET, MTIME, TARGET = range(7)

MODULES_DEVICE = "/dev/usetl-modules"
_SHARED_OBJECT = re.compile(r"\.so(\.[0-9]+)*$")


def pyc_of(path: str) -> str:
    """Where CPython looks for a module's pyc: ``DIR/__pycache__/NAME.<cache_tag>.pyc``."""
    directory, _, name = path.rpartition("/")
    return f"{directory}/__pycache__/{name[:-3]}.{sys.implementation.cache_tag}.pyc"


def in_region(path: str, files) -> bool:
    """Whether a file's bytes are placed in the module region; `files`: the archive's files."""
    if path.endswith(".py"):
        return pyc_of(path) not in files
    return _SHARED_OBJECT.search(path) is None


class ArchiveFormatError(ValueError):
    """Bytes that are not an intact archive; the message says what is wrong (no path in it)."""


def read_index(data) -> tuple[dict, list[list]]:
    """(meta, rows) of the archive in `data` (bytes, mmap or memoryview), checked.

    Checks the magic, version, flags, trailer, the index's place and checksum and
    each row's shape; the caller checks what rows mean for it (data area, parents).
    """
    size = len(data)
    if size < BLOCK_SIZE + TRAILER.size:
        raise ArchiveFormatError(f"truncated ({size} bytes)")
    magic, version, flags = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise ArchiveFormatError(f"not a usetl image (bad magic {magic!r})")
    if version != FORMAT_VERSION:
        raise ArchiveFormatError(
            f"format version {version}, this usetl reads version {FORMAT_VERSION}"
        )
    if flags != 0:
        raise ArchiveFormatError(f"unknown flags {flags:#x}")
    index_offset, index_length, index_sha256, end_magic = TRAILER.unpack_from(
        data, size - TRAILER.size
    )
    if end_magic != TRAILER_MAGIC:
        raise ArchiveFormatError("truncated or damaged (no trailer)")
    index_end = index_offset + index_length
    if index_offset < BLOCK_SIZE or index_end != size - TRAILER.size:
        raise ArchiveFormatError("damaged (index out of place)")
    index_bytes = bytes(data[index_offset:index_end])
    if hashlib.sha256(index_bytes).digest() != index_sha256:
        raise ArchiveFormatError("damaged (index checksum mismatch)")
    try:
        index = json.loads(index_bytes)
        meta, rows = index["meta"], index["entries"]
        if not isinstance(meta, dict) or not isinstance(rows, list):
            raise TypeError("meta must be an object and entries a list")
    except (ValueError, KeyError, TypeError) as e:
        raise ArchiveFormatError(f"unreadable index ({e})") from None
    for row in rows:
        if not (isinstance(row, list) and len(row) == 7 and isinstance(row[PATH], str)
                and all(isinstance(row[i], int) for i in (MODE, SIZE, OFFSET, MTIME))):
            raise ArchiveFormatError(f"malformed index row {str(row)[:80]}")
        if row[KIND] not in ENTRY_KINDS:
            raise ArchiveFormatError(f"{row[PATH]} has unknown kind {row[KIND]!r}")
        if row[KIND] == "file" and not (
            BLOCK_SIZE <= row[OFFSET] and row[OFFSET] + row[SIZE] <= index_offset
        ):
            raise ArchiveFormatError(f"{row[PATH]} lies outside the data area")
    return meta, rows
