"""The image archive: one read-only file holding the guest's whole filesystem.

The format (usetl.abi.archive, which the guest's importer reads too) puts each
file on a 4096-byte boundary, then a JSON index and a fixed-size trailer.

File data is page-aligned so the loader can map library pages straight from
the archive. The index sits at the end so the writer streams the data first;
the trailer is at a fixed distance from the end so a truncated file is caught
before anything else is read. The guest filesystem calls ``lookup`` and
``read`` on every guest file access, so the reader maps the file once and
builds its dicts once.
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from usetl.abi.archive import (
    BLOCK_SIZE,
    FORMAT_VERSION,
    HEADER,
    MAGIC,
    TRAILER,
    TRAILER_MAGIC,
    ArchiveFormatError,
    read_index,
)
from usetl.errors import UsetlError

# Linux's limit on symlinks followed in one path walk (MAXSYMLINKS).
MAX_SYMLINK_HOPS = 40
FIRST_INODE = 2  # the first entry's inode number (ext4's root is 2; 1 is no file's)

EntryKind = Literal["file", "dir", "symlink"]


class ImageError(UsetlError):
    """An image is missing, damaged, of another format, or cannot be built."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One path in the image.

    ``mode`` is a full st_mode (type bits included); ``mtime`` is in
    nanoseconds since the epoch; ``offset`` is the file's position in the
    archive (0 for dirs and symlinks); ``size`` is the file's length, or the
    length of a symlink's target; ``target`` is a symlink's target exactly as
    readlink gave it on the host (relative or absolute), else None.
    """

    path: str
    kind: EntryKind
    mode: int
    size: int
    offset: int
    mtime: int
    target: str | None = None


def normalize(path: str) -> str:
    """The image's spelling of an absolute path: no '.', '..', '//' or trailing '/'."""
    if not path.startswith("/"):
        raise ValueError(f"image paths are absolute: {path!r}")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return "/" + "/".join(parts)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


class ImageArchive:
    """A read-only view of an ``image.usetl`` file, mapped into memory once."""

    def __init__(
        self,
        path: Path,
        mapping: mmap.mmap,
        meta: dict[str, Any],
        entries: dict[str, Entry],
    ) -> None:
        self.path = path
        self.meta = meta
        self.digest: str = str(meta.get("digest", ""))
        self._mapping = mapping
        self._view = memoryview(mapping)
        self._entries = entries
        children: dict[str, list[str]] = {p: [] for p, e in entries.items() if e.kind == "dir"}
        for p in entries:
            if p != "/":
                children[_parent(p)].append(p.rsplit("/", 1)[1])
        for names in children.values():
            names.sort()
        self._children = children
        # Each entry's inode number is its place in the index: the same in every process
        # that opens this image (clones, restored snapshots), as on a disk file system.
        self._inodes = {p: number for number, p in enumerate(entries, FIRST_INODE)}
        files = [e for e in entries.values() if e.kind == "file"]
        self.file_count = len(files)
        self.total_size = sum(e.size for e in files)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ImageArchive:
        """Map and check an archive; raise ImageError saying what is wrong with it."""
        path = Path(path)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < BLOCK_SIZE + TRAILER.size:
                    raise ImageError(f"image {path} is truncated ({size} bytes); rebuild it")
                mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise ImageError(f"image {path} does not exist; run `usetl image build`") from None
        except OSError as e:
            raise ImageError(f"cannot read image {path}: {e.strerror}") from None
        try:
            meta, entries = _read_index(path, mapping)
        except BaseException:
            mapping.close()
            raise
        return cls(path, mapping, meta, entries)

    def close(self) -> None:
        """Unmap the archive; views returned by read() must be released first."""
        self._view.release()
        self._mapping.close()

    def __enter__(self) -> ImageArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lookup(self, path: str) -> Entry | None:
        """The entry at this absolute path, following no symlinks."""
        entry = self._entries.get(path)
        if entry is None and path.startswith("/"):
            normal = normalize(path)
            if normal != path:
                entry = self._entries.get(normal)
        return entry

    def inode(self, entry: Entry) -> int:
        """The entry's inode number, stable for this image."""
        return self._inodes[entry.path]

    def listdir(self, path: str) -> list[str]:
        """Sorted names of a directory's direct children (no symlink following).

        Raises FileNotFoundError or NotADirectoryError, errnos set, as os.listdir would.
        """
        names = self._children.get(path)
        if names is None and path.startswith("/"):
            names = self._children.get(normalize(path))
        if names is None:
            code = errno.ENOENT if self.lookup(path) is None else errno.ENOTDIR
            raise OSError(code, os.strerror(code), path)
        return list(names)

    def read(self, entry: Entry, offset: int, size: int) -> memoryview:
        """Up to ``size`` bytes of a file from ``offset``, as a view of the mapping."""
        if entry.kind != "file":
            raise ImageError(f"{entry.path} is a {entry.kind}, not a file")
        start = min(max(offset, 0), entry.size)
        end = min(start + max(size, 0), entry.size)
        return self._view[entry.offset + start : entry.offset + end]

    def entries(self) -> Iterable[Entry]:
        """Every entry, sorted by path."""
        return self._entries.values()


def _read_index(path: Path, mapping: mmap.mmap) -> tuple[dict[str, Any], dict[str, Entry]]:
    try:
        meta, rows = read_index(mapping)
    except ArchiveFormatError as e:
        # A module-store archive is repacked by the next deploy that uses it (modstore.packed).
        raise ImageError(f"image {path}: {e}; rebuild it") from None
    entries = {row[0]: Entry(*row) for row in rows}
    for entry in entries.values():
        if entry.path != "/" and _parent(entry.path) not in entries:
            raise ImageError(f"image {path}: {entry.path} has no parent directory entry")
    if entries.get("/", None) is None or entries["/"].kind != "dir":
        raise ImageError(f"image {path} has no root directory")
    return meta, entries


class ArchiveWriter:
    """Streams file data into a new archive, then writes the index and trailer.

    Entries may be added in any order; every entry's parent must be a dir
    entry by the time ``finish`` is called.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._rows: dict[str, Entry] = {}
        out.write(HEADER.pack(MAGIC, FORMAT_VERSION, 0).ljust(BLOCK_SIZE, b"\0"))
        self._position = BLOCK_SIZE

    def add_dir(self, path: str, mode: int, mtime: int) -> None:
        self._add(Entry(path, "dir", stat.S_IFDIR | stat.S_IMODE(mode), 0, 0, mtime))

    def add_symlink(self, path: str, target: str, mtime: int) -> None:
        size = len(os.fsencode(target))
        self._add(Entry(path, "symlink", stat.S_IFLNK | 0o777, size, 0, mtime, target))

    def add_file(self, path: str, data: bytes | memoryview, mode: int, mtime: int) -> None:
        """Append a file's bytes at the next 4096-byte boundary."""
        offset = self._position
        self._out.write(data)
        size = len(data)
        self._position += size
        padding = -self._position % BLOCK_SIZE
        self._out.write(b"\0" * padding)
        self._position += padding
        self._add(Entry(path, "file", stat.S_IFREG | stat.S_IMODE(mode), size, offset, mtime))

    def _add(self, entry: Entry) -> None:
        if entry.path != normalize(entry.path):
            raise ImageError(f"image path {entry.path!r} is not normalized")
        previous = self._rows.get(entry.path)
        if previous is not None and previous != entry:
            raise ImageError(f"{entry.path} added twice to the image, differently")
        self._rows[entry.path] = entry

    def __contains__(self, path: str) -> bool:
        return path in self._rows

    def finish(self, meta: dict[str, Any]) -> None:
        """Write the index and trailer; the caller flushes and syncs the file."""
        for path in self._rows:
            parent = self._rows.get(_parent(path)) if path != "/" else None
            if path != "/" and (parent is None or parent.kind != "dir"):
                raise ImageError(f"{path} has no parent directory entry in the image")
        index = {
            "meta": meta,
            "entries": [
                [e.path, e.kind, e.mode, e.size, e.offset, e.mtime, e.target]
                for e in (self._rows[p] for p in sorted(self._rows))
            ],
        }
        index_bytes = json.dumps(index, separators=(",", ":")).encode()
        self._out.write(index_bytes)
        self._out.write(
            TRAILER.pack(
                self._position,
                len(index_bytes),
                hashlib.sha256(index_bytes).digest(),
                TRAILER_MAGIC,
            )
        )
