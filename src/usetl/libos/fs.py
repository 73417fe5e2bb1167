"""The guest's filesystems: the image (read-only), a tmpfs, /dev and /proc/self.

Every path the guest names is resolved here, inside these trees: nothing
reaches the host's filesystem. Paths are normalised and symlinks followed
within the guest's own namespace, so '..' and symlinks cannot escape it.
"""

from __future__ import annotations

import errno
import stat as st
import struct
import time
from collections.abc import Callable
from typing import Any

from usetl.image.archive import Entry, ImageArchive

from .errors import SyscallError

MAX_SYMLINKS = 40
NAME_MAX = 255

# struct stat on x86-64 (144 bytes)
STAT = struct.Struct("<QQQIIIIQqqqqqqqqq24x")
DEV_IMAGE, DEV_TMPFS, DEV_DEVFS, DEV_PROC = 0x801, 0x15, 0x5, 0x4
DT_TYPES = {st.S_IFREG: 8, st.S_IFDIR: 4, st.S_IFLNK: 10, st.S_IFCHR: 2}


class Node:
    """A file, directory, symlink or device as the guest sees it."""

    dev = 0

    def __init__(self, mode: int, ino: int, mtime_ns: int = 0):
        self.mode = mode
        self.ino = ino
        self.mtime_ns = mtime_ns

    @property
    def size(self) -> int:
        return 0

    @property
    def is_dir(self) -> bool:
        return st.S_ISDIR(self.mode)

    @property
    def is_symlink(self) -> bool:
        return st.S_ISLNK(self.mode)

    def readlink(self) -> str:
        raise SyscallError(errno.EINVAL)

    def children(self) -> list[tuple[str, Node]]:
        raise SyscallError(errno.ENOTDIR)

    def pack_stat(self) -> bytes:
        size = self.size
        sec, nsec = divmod(self.mtime_ns, 1_000_000_000)
        rdev = getattr(self, "rdev", 0)
        return STAT.pack(
            self.dev, self.ino, 2 if self.is_dir else 1, self.mode, 0, 0, 0, rdev,
            size, 4096, (size + 511) // 512, sec, nsec, sec, nsec, sec, nsec,
        )


# -- the image ----------------------------------------------------------------


class ImageNode(Node):
    dev = DEV_IMAGE

    def __init__(self, fs: ImageFS, entry: Entry, ino: int):
        super().__init__(entry.mode, ino, entry.mtime)
        self.fs = fs
        self.entry = entry

    @property
    def size(self) -> int:
        return self.entry.size

    def readlink(self) -> str:
        if self.entry.target is None:
            raise SyscallError(errno.EINVAL)
        return self.entry.target

    def children(self) -> list[tuple[str, Node]]:
        if not self.is_dir:
            raise SyscallError(errno.ENOTDIR)
        base = self.entry.path.rstrip("/")
        out = []
        for name in self.fs.archive.listdir(self.entry.path):
            node = self.fs.node(f"{base}/{name}")
            if node is not None:
                out.append((name, node))
        return out

    def read_at(self, offset: int, length: int) -> memoryview:
        return self.fs.archive.read(self.entry, offset, length)


class ImageFS:
    def __init__(self, archive: ImageArchive):
        self.archive = archive
        self._nodes: dict[str, ImageNode | None] = {}
        self._next_ino = 2

    def node(self, path: str) -> ImageNode | None:
        try:
            return self._nodes[path]
        except KeyError:
            pass
        entry = self.archive.lookup(path)
        node = None
        if entry is not None:
            node = ImageNode(self, entry, self._next_ino)
            self._next_ino += 1
        self._nodes[path] = node
        return node


# -- tmpfs --------------------------------------------------------------------


class TmpNode(Node):
    dev = DEV_TMPFS


class TmpFile(TmpNode):
    def __init__(self, ino: int, mode: int = 0o644):
        super().__init__(st.S_IFREG | mode, ino, time.time_ns())
        self.data = bytearray()

    @property
    def size(self) -> int:
        return len(self.data)


class TmpDir(TmpNode):
    def __init__(self, ino: int, mode: int = 0o777):
        super().__init__(st.S_IFDIR | mode, ino, time.time_ns())
        self.entries: dict[str, TmpNode] = {}

    def children(self) -> list[tuple[str, Node]]:
        return sorted(self.entries.items())


class TmpFS:
    """An in-memory filesystem; `limit` bounds the bytes its files hold."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._ino = 1 << 20
        self.root = TmpDir(self.new_ino(), 0o1777)

    def new_ino(self) -> int:
        self._ino += 1
        return self._ino

    def charge(self, delta: int) -> None:
        if self.used + delta > self.limit:
            raise SyscallError(errno.ENOSPC)
        self.used += delta

    def add_file(self, path: str, data: bytes, mode: int = 0o755) -> TmpFile:
        """Create a file below /tmp (path relative to the tmpfs root) from the host side."""
        *dirs, name = [p for p in path.split("/") if p]
        node = self.root
        for part in dirs:
            child = node.entries.setdefault(part, TmpDir(self.new_ino()))
            if not isinstance(child, TmpDir):
                raise SyscallError(errno.ENOTDIR)
            node = child
        self.charge(len(data))
        f = TmpFile(self.new_ino(), mode)
        f.data[:] = data
        node.entries[name] = f
        return f

    def walk(self, parts: list[str]) -> TmpNode | None:
        node: TmpNode = self.root
        for part in parts:
            if not isinstance(node, TmpDir):
                return None
            child = node.entries.get(part)
            if child is None:
                return None
            node = child
        return node


# -- /dev and /proc -----------------------------------------------------------


class DeviceNode(Node):
    dev = DEV_DEVFS

    def __init__(self, ino: int, rdev: int, factory: Callable[..., object], *args: object):
        """Opening the node calls factory(node, flags, *args).

        No closures here: the namespace is pickled into template snapshots.
        """
        super().__init__(st.S_IFCHR | 0o666, ino)
        self.rdev = rdev
        self.factory = factory
        self.args = args

    def open(self, flags: int) -> object:
        return self.factory(self, flags, *self.args)


class StaticDir(Node):
    def __init__(self, ino: int, entries: dict[str, Node], dev: int):
        super().__init__(st.S_IFDIR | 0o555, ino)
        self.entries = entries
        self.dev = dev

    def children(self) -> list[tuple[str, Node]]:
        return sorted(self.entries.items())


class StaticFile(Node):
    """A read-only file whose bytes the monitor wrote (the /etc overlay)."""

    def __init__(self, ino: int, data: bytes, dev: int):
        super().__init__(st.S_IFREG | 0o444, ino, time.time_ns())
        self.data = data
        self.dev = dev

    @property
    def size(self) -> int:
        return len(self.data)

    def read_at(self, offset: int, length: int) -> memoryview:
        return memoryview(self.data)[offset : offset + length]


class StaticLink(Node):
    def __init__(self, ino: int, target: str, dev: int):
        super().__init__(st.S_IFLNK | 0o777, ino)
        self.target = target
        self.dev = dev

    @property
    def size(self) -> int:
        return len(self.target)

    def readlink(self) -> str:
        return self.target


# -- the namespace ------------------------------------------------------------


class Resolved:
    """A path resolved in the namespace: its final node (or None) and its parent."""

    __slots__ = ("path", "parts", "node", "parent", "name")

    def __init__(self, path: str, parts: list[str], node: Node | None, parent: Node | None):
        self.path = path
        self.parts = parts
        self.node = node
        self.parent = parent
        self.name = parts[-1] if parts else "/"


class Namespace:
    """The guest's single directory tree: image at /, tmpfs at /tmp, /dev, /proc.

    The image has no /etc; once the monitor writes a file with put_etc() (the
    resolver's hosts and nsswitch.conf when sockets are allowed), /etc is a
    directory of those files only.
    """

    def __init__(self, image: ImageArchive, tmpfs_limit: int, devices: dict[str, DeviceNode],
                 executable: str):
        self.image = ImageFS(image)
        self.tmp = TmpFS(tmpfs_limit)
        self.dev = StaticDir(3, dict(devices), DEV_DEVFS)
        self_dir = StaticDir(5, {"exe": StaticLink(6, executable, DEV_PROC)}, DEV_PROC)
        self.proc = StaticDir(4, {"self": self_dir}, DEV_PROC)
        self.mounts: dict[str, Any] = {}
        self.etc: StaticDir | None = None
        self.cwd = "/"

    def mount(self, name: str, fs: Any) -> None:
        """Show a read-only file system (a HostDirFS) at /name."""
        if not name or "/" in name or name in ("tmp", "dev", "proc"):
            raise ValueError(f"cannot mount at /{name}")
        self.mounts[name] = fs

    def put_etc(self, name: str, data: bytes) -> None:
        """Create or replace /etc/<name>, read-only to the guest."""
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"not a file name: {name!r}")
        if self.etc is None:
            self.etc = StaticDir(7, {}, DEV_PROC)
        old = self.etc.entries.get(name)
        ino = old.ino if old is not None else 8 + len(self.etc.entries)
        self.etc.entries[name] = StaticFile(ino, data, DEV_PROC)

    def _lookup(self, parts: list[str]) -> Node | None:
        """The node at a canonical path (no symlinks followed on the way)."""
        if not parts:
            return self.image.node("/")
        top = parts[0]
        if top == "tmp":
            return self.tmp.walk(parts[1:])
        if top in self.mounts:
            return self.mounts[top].walk(parts[1:])
        if top == "etc" and self.etc is not None:
            node: Node | None = self.etc
        elif top in ("dev", "proc"):
            node = self.dev if top == "dev" else self.proc
        else:
            return self.image.node("/" + "/".join(parts))
        for part in parts[1:]:
            if not isinstance(node, StaticDir):
                return None
            node = node.entries.get(part)
            if node is None:
                return None
        return node

    def resolve(self, path: str, follow: bool = True, base: str | None = None) -> Resolved:
        """Walk `path` from `base` (default the cwd), following symlinks inside the tree."""
        if not path:
            raise SyscallError(errno.ENOENT)
        # A trailing slash names a directory: symlinks are followed to it.
        must_be_dir = path.endswith("/")
        follow = follow or must_be_dir
        if path.startswith("/"):
            pending = path.split("/")
        else:
            pending = (base or self.cwd).split("/") + path.split("/")
        pending.reverse()
        parts: list[str] = []
        node: Node | None = self._lookup(parts)
        parent: Node | None = node
        hops = 0
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if node is None:
                    raise SyscallError(errno.ENOENT)
                if not node.is_dir:
                    raise SyscallError(errno.ENOTDIR)
                if parts:
                    parts.pop()
                node = self._lookup(parts)
                # The parent moves up too: "d/.." names d's parent's entry, not one in d.
                parent = self._lookup(parts[:-1]) if parts else node
                continue
            if len(part) > NAME_MAX:
                raise SyscallError(errno.ENAMETOOLONG)
            if node is None:
                raise SyscallError(errno.ENOENT)
            if not node.is_dir:
                raise SyscallError(errno.ENOTDIR)
            parent = node
            parts.append(part)
            node = self._lookup(parts)
            is_last = not any(p not in ("", ".") for p in pending)
            if node is not None and node.is_symlink and (follow or not is_last):
                hops += 1
                if hops > MAX_SYMLINKS:
                    raise SyscallError(errno.ELOOP)
                target = node.readlink()
                parts.pop()
                if target.startswith("/"):
                    parts = []
                pending.extend(reversed(target.split("/")))
                node = self._lookup(parts)
                parent = node
        if must_be_dir and node is not None and not node.is_dir:
            raise SyscallError(errno.ENOTDIR)
        return Resolved("/" + "/".join(parts), parts, node, parent)

    def chdir(self, path: str) -> None:
        r = self.resolve(path)
        if r.node is None:
            raise SyscallError(errno.ENOENT)
        if not r.node.is_dir:
            raise SyscallError(errno.ENOTDIR)
        self.cwd = r.path


def dirent_type(mode: int) -> int:
    return DT_TYPES.get(st.S_IFMT(mode), 0)

