"""A child's writes to /tmp, carried back to its parent when it ends.

A child process's monitor has its own copy of the guest's tmpfs (taken at
exec or fork), since the two monitors share no memory. What the child
created, changed or removed there reaches its parent's tmpfs when the child
exits (not while it runs, and not if it was killed): so a tool that writes
its output file (`ffmpeg -i /tmp/in.mp4 /tmp/out.mp4`) leaves it for the
parent to read after wait, as on Linux. A path both changed is the child's
at that moment. Regular files (their bytes, mode and mtime), directories
and symlinks travel; hard links made by the child do not.

The regular files the child was given as fds are open file descriptions it
shares with its parent on Linux: the offsets it moved come back too (so a
parent that writes after a child wrote to the same file appends, as
`stdout=f` expects, and one that reads on starts where the child stopped),
and so do the bytes of a tmpfs file that has no name any more (a
`tempfile.TemporaryFile`), which no path carries. One the child left alone
is left as the parent has it since.

Once the tree's /tmp is shared (sharedtmp.py), the child's writes are in it
already and its tmpfs copy stays as it was: only the offsets of the files
of other filesystems it was given (the image's) travel.
"""

from __future__ import annotations

import errno
import json
import logging
import struct
import time
from dataclasses import dataclass

from .errors import SyscallError
from .files import ImageFile, OpenFile, TmpOpenFile
from .fs import TmpDir, TmpFifo, TmpFile, TmpFS, TmpLink, TmpNode

log = logging.getLogger(__name__)

LENGTH = struct.Struct("<Q")


@dataclass(frozen=True)
class Seen:
    """What a file was when the child's copy was taken."""

    node: int  # id() of the node: the same object in the copy, until the child replaces it
    mtime_ns: int
    size: int
    mode: int

    @classmethod
    def of(cls, node: TmpNode) -> Seen:
        return cls(id(node), node.mtime_ns, node.size, node.mode)


def snapshot(tmp: TmpFS) -> dict[str, Seen | None]:
    """Every file and symlink (its state) and directory (None) below the root, by path."""
    return {path: None if isinstance(node, TmpDir) else Seen.of(node)
            for path, node in _walk(tmp.root, "")}


@dataclass(frozen=True)
class Given:
    """A file description the child was given, as it was when the child started."""

    file: OpenFile
    offset: int
    seen: Seen | None  # a tmpfs file's state, None for a read-only one


def given_files(files: dict[int, OpenFile]) -> dict[int, Given]:
    """The regular files of `files` (a child's fds as it starts), by their lowest fd: fds
    that share a description share its offset, which travels once."""
    out: dict[int, Given] = {}
    taken: set[int] = set()
    for fd, f in sorted(files.items()):
        if isinstance(f, (TmpOpenFile, ImageFile)) and id(f) not in taken:
            taken.add(id(f))
            out[fd] = Given(f, f.offset, Seen.of(f.node) if isinstance(f, TmpOpenFile) else None)
    return out


def _walk(directory: TmpDir, prefix: str):
    for name, node in directory.entries.items():
        path = f"{prefix}{name}"
        if isinstance(node, (TmpFile, TmpLink, TmpFifo)):
            yield path, node
        elif isinstance(node, TmpDir):
            yield path, node
            yield from _walk(node, path + "/")


def encode_changes(tmp: TmpFS, before: dict[str, Seen | None],
                   given: dict[int, Given]) -> bytes:
    """What changed since `before`, and what the child did to the files `given`: a JSON
    list of entries, then the files' bytes."""
    entries: list[dict] = []
    blobs: list[bytes] = []
    now = dict(_walk(tmp.root, ""))
    for path, node in now.items():
        seen = before.get(path, False)
        if isinstance(node, TmpDir):
            if seen is not None:
                entries.append({"path": path, "kind": "dir", "mode": node.mode & 0o7777})
        elif seen == Seen.of(node):
            continue
        elif isinstance(node, TmpLink):
            entries.append({"path": path, "kind": "symlink", "target": node.target})
        elif isinstance(node, TmpFifo):
            entries.append({"path": path, "kind": "fifo", "mode": node.mode & 0o7777})
        else:
            entries.append({"path": path, "kind": "file", "mode": node.mode & 0o7777,
                            "mtime_ns": node.mtime_ns, "size": node.size})
            blobs.append(bytes(node.data))
    # Removals last, the deepest first, so that a directory is empty when its turn comes.
    entries += [{"path": path, "kind": "gone"} for path in reversed(before) if path not in now]
    _descriptions(given, entries, blobs)
    header = json.dumps(entries).encode()
    return LENGTH.pack(len(header)) + header + b"".join(blobs)


def _descriptions(given: dict[int, Given], entries: list[dict], blobs: list[bytes]) -> None:
    """The offsets the child moved, and the bytes of a nameless tmpfs file it changed."""
    for fd, g in given.items():
        entry: dict = {"kind": "fd", "fd": fd, "offset": g.file.offset}
        node = g.file.node
        if g.seen is not None and node.links == 0 and \
                (g.seen.mtime_ns, g.seen.size) != (node.mtime_ns, node.size):
            entry["size"] = node.size
            blobs.append(bytes(node.data))
        elif g.file.offset == g.offset:
            continue  # the child left it alone: the parent's offset stands
        entries.append(entry)


def apply_changes(tmp: TmpFS, header: bytes, data: memoryview,
                  given: dict[int, OpenFile], parent: int) -> None:
    """Make a child's changes in the parent's tmpfs, in the report's order; `given` are
    the parent's files the child had, by the child's fd. A FIFO it made is held by the
    parent (process `parent`) from now on (fifo.py)."""
    at = 0
    for entry in json.loads(header):
        if entry["kind"] == "fd":
            size = entry.get("size", 0)
            _description(tmp, given.get(entry["fd"]), entry["offset"],
                         data[at : at + size] if "size" in entry else None)
            at += size
            continue
        path = entry["path"]
        try:
            if entry["kind"] == "dir":
                _directory(tmp, path.split("/"), entry["mode"])
            elif entry["kind"] == "file":
                size = entry["size"]
                _file(tmp, path, entry, data[at : at + size])
                at += size
            elif entry["kind"] == "symlink":
                _symlink(tmp, path, entry["target"])
            elif entry["kind"] == "fifo":
                _fifo(tmp, path, entry["mode"], parent)
            else:
                _remove(tmp, path)
        except SyscallError as e:  # a full tmpfs, a file where the child had a directory
            log.warning("a child's /tmp/%s did not reach its parent: errno %d", path, e.errno)


def _description(tmp: TmpFS, f: OpenFile | None, offset: int,
                 data: memoryview | None) -> None:
    """A shared file description: the child's offset, and the bytes of a nameless file."""
    if f is None:
        return  # not a file the parent gave
    f.offset = offset
    if data is not None and isinstance(f, TmpOpenFile):
        try:
            tmp.charge(len(data) - len(f.node.data))
        except SyscallError:
            log.warning("a child's writes to an unlinked file did not fit its parent's /tmp")
            return
        f.node.data[:] = data
        f.node.holes = f.node.unheld = ()
        f.node.mtime_ns = time.time_ns()


def _directory(tmp: TmpFS, parts: list[str], mode: int = 0o777) -> TmpDir:
    node = tmp.root
    for part in parts:
        child = node.entries.get(part)
        if child is None:
            child = node.entries[part] = TmpDir(tmp.new_ino(), mode)
        if not isinstance(child, TmpDir):
            raise SyscallError(errno.ENOTDIR)
        node = child
    return node


def _file(tmp: TmpFS, path: str, entry: dict, data: memoryview) -> None:
    mode = entry["mode"]
    *dirs, name = path.split("/")
    parent = _directory(tmp, dirs)
    node: TmpNode | None = parent.entries.get(name)
    if isinstance(node, TmpFile):
        tmp.charge(len(data) - len(node.data))
    else:
        if node is not None:
            raise SyscallError(errno.EISDIR)
        tmp.charge(len(data))
        node = parent.entries[name] = TmpFile(tmp.new_ino(), mode)
    node.data[:] = data
    node.holes = node.unheld = ()
    node.mode = (node.mode & ~0o7777) | mode
    node.mtime_ns = entry["mtime_ns"]  # the child's (touch -d, cp -p keep an old one)


def _symlink(tmp: TmpFS, path: str, target: str) -> None:
    *dirs, name = path.split("/")
    parent = _directory(tmp, dirs)
    node = parent.entries.get(name)
    if isinstance(node, TmpDir):
        raise SyscallError(errno.EISDIR)
    ino = tmp.new_ino()
    if node is not None:
        tmp.drop_link(node)  # the child's, as a file both changed is
    parent.entries[name] = TmpLink(ino, target)


def _fifo(tmp: TmpFS, path: str, mode: int, holder: int) -> None:
    *dirs, name = path.split("/")
    parent = _directory(tmp, dirs)
    node = parent.entries.get(name)
    if isinstance(node, TmpDir):
        raise SyscallError(errno.EISDIR)
    if node is not None:
        tmp.drop_link(node)
    parent.entries[name] = TmpFifo(tmp.new_ino(), mode, holder)


def _remove(tmp: TmpFS, path: str) -> None:
    *dirs, name = path.split("/")
    parent = tmp.walk(dirs)
    if isinstance(parent, TmpDir) and name in parent.entries:
        node = parent.entries[name]
        if isinstance(node, TmpDir) and node.entries:
            return  # the parent put something there meanwhile
        del parent.entries[name]
        tmp.drop_link(node)
