"""A child's writes to /tmp, carried back to its parent when it ends.

A child process's monitor has its own copy of the guest's tmpfs (taken at
exec or fork), since the two monitors share no memory. What the child
created, changed or removed there reaches its parent's tmpfs when the child
exits (not while it runs, and not if it was killed): so a tool that writes
its output file (`ffmpeg -i /tmp/in.mp4 /tmp/out.mp4`) leaves it for the
parent to read after wait, as on Linux. A path both changed is the child's
at that moment. Only regular files and directories travel; symlinks and
hard links made by the child do not.
"""

from __future__ import annotations

import errno
import json
import logging
import struct
from dataclasses import dataclass

from .errors import SyscallError
from .fs import TmpDir, TmpFile, TmpFS, TmpNode

log = logging.getLogger(__name__)

LENGTH = struct.Struct("<Q")


@dataclass(frozen=True)
class Seen:
    """What a file was when the child's copy was taken."""

    node: int  # id() of the node: the same object in the copy, until the child replaces it
    mtime_ns: int
    size: int


def snapshot(tmp: TmpFS) -> dict[str, Seen | None]:
    """Every file (its state) and directory (None) below the root, by path."""
    out: dict[str, Seen | None] = {}
    for path, node in _walk(tmp.root, ""):
        out[path] = Seen(id(node), node.mtime_ns, node.size) if isinstance(node, TmpFile) \
            else None
    return out


def _walk(directory: TmpDir, prefix: str):
    for name, node in directory.entries.items():
        path = f"{prefix}{name}"
        if isinstance(node, TmpFile):
            yield path, node
        elif isinstance(node, TmpDir):
            yield path, node
            yield from _walk(node, path + "/")


def encode_changes(tmp: TmpFS, before: dict[str, Seen | None]) -> bytes:
    """What changed since `before`: a JSON list of entries, then the files' bytes."""
    entries: list[dict] = []
    blobs: list[bytes] = []
    now = dict(_walk(tmp.root, ""))
    for path, node in now.items():
        seen = before.get(path, False)
        if isinstance(node, TmpDir):
            if seen is not None:
                entries.append({"path": path, "kind": "dir", "mode": node.mode & 0o7777})
        elif not isinstance(seen, Seen) or (seen.node, seen.mtime_ns, seen.size) != \
                (id(node), node.mtime_ns, node.size):
            entries.append({"path": path, "kind": "file", "mode": node.mode & 0o7777,
                            "size": node.size})
            blobs.append(bytes(node.data))
    # Removals last, the deepest first, so that a directory is empty when its turn comes.
    entries += [{"path": path, "kind": "gone"} for path in reversed(before) if path not in now]
    header = json.dumps(entries).encode()
    return LENGTH.pack(len(header)) + header + b"".join(blobs)


def sizes(header: bytes) -> int:
    """How many bytes of file data follow a report's header."""
    return sum(e["size"] for e in json.loads(header) if e["kind"] == "file")


def apply_changes(tmp: TmpFS, header: bytes, data: memoryview) -> None:
    """Make a child's changes in the parent's tmpfs, in the report's order."""
    at = 0
    for entry in json.loads(header):
        path = entry["path"]
        try:
            if entry["kind"] == "dir":
                _directory(tmp, path.split("/"), entry["mode"])
            elif entry["kind"] == "file":
                size = entry["size"]
                _file(tmp, path, entry["mode"], data[at : at + size])
                at += size
            else:
                _remove(tmp, path)
        except SyscallError as e:  # a full tmpfs, a file where the child had a directory
            log.warning("a child's /tmp/%s did not reach its parent: errno %d", path, e.errno)


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


def _file(tmp: TmpFS, path: str, mode: int, data: memoryview) -> None:
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
    node.mode = (node.mode & ~0o7777) | mode


def _remove(tmp: TmpFS, path: str) -> None:
    *dirs, name = path.split("/")
    parent = tmp.walk(dirs)
    if isinstance(parent, TmpDir) and name in parent.entries:
        node = parent.entries[name]
        if isinstance(node, TmpDir) and node.entries:
            return  # the parent put something there meanwhile
        del parent.entries[name]
        tmp.drop_link(node)
