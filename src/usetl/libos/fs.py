"""The guest's filesystems: the image (read-only), a tmpfs, /dev, /proc and /sys.

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
from typing import TYPE_CHECKING, Any

from usetl.image.archive import Entry, ImageArchive

from .errors import SyscallError

if TYPE_CHECKING:
    from .sharedpages import SharedPages
    from .sharedtmp import SharedTmp

MAX_SYMLINKS = 40
GUEST_ID = 1000  # the guest's uid and gid
NAME_MAX = 255

# struct stat on x86-64 (144 bytes)
STAT = struct.Struct("<QQQIIIIQqqqqqqqqq24x")
DEV_IMAGE, DEV_TMPFS, DEV_DEVFS, DEV_PROC, DEV_SYSFS = 0x801, 0x15, 0x5, 0x4, 0x16
DEV_SHM = 0x19  # /dev/shm: a tmpfs of its own, as on Linux (a rename from /tmp is EXDEV)
# st_blksize of every node, and the unit Linux counts st_blocks in.
BLOCK_SIZE, STAT_BLOCK = 4096, 512
FIRST_DYNAMIC_INO = 64  # see Inodes
FD_LINK_INO = 0x10000  # /proc/self/fd/N's number is this plus N
DELETED = " (deleted)"  # what readlink of an fd adds to the name of an unlinked file
DT_TYPES = {st.S_IFREG: 8, st.S_IFDIR: 4, st.S_IFLNK: 10, st.S_IFCHR: 2, st.S_IFSOCK: 12}


class Node:
    """A file, directory, symlink or device as the guest sees it."""

    dev = 0
    uid = gid = 0  # root's, but for what the guest made

    def __init__(self, mode: int, ino: int, mtime_ns: int = 0):
        self.mode = mode
        self.ino = ino
        self.mtime_ns = mtime_ns
        self.atime_ns = mtime_ns
        self.ctime_ns = mtime_ns

    @property
    def nlink(self) -> int:
        return 2 if self.is_dir else 1

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
        times = []
        for ns in (self.atime_ns, self.mtime_ns, self.ctime_ns):
            times += divmod(ns, 1_000_000_000)
        rdev = getattr(self, "rdev", 0)
        return STAT.pack(
            self.dev, self.ino, self.nlink, self.mode, self.uid, self.gid, 0, rdev,
            size, BLOCK_SIZE, self.blocks, *times,
        )

    @property
    def blocks(self) -> int:
        """st_blocks: all of it held."""
        return (self.size + STAT_BLOCK - 1) // STAT_BLOCK

    def seek_data(self, offset: int, data: bool) -> int:
        """lseek's SEEK_DATA (`data`) or SEEK_HOLE from `offset`, within the file: with no
        holes kept (Linux's generic llseek), all of it is data."""
        return offset if data else self.size


# -- the image ----------------------------------------------------------------


class ImageNode(Node):
    def __init__(self, fs: ImageFS, entry: Entry, ino: int):
        super().__init__(entry.mode, ino, entry.mtime)
        self.fs = fs
        self.entry = entry

    @property
    def dev(self) -> int:  # type: ignore[override]
        return self.fs.dev

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
    dev = DEV_IMAGE

    def __init__(self, archive: ImageArchive):
        self.archive = archive
        self._nodes: dict[str, ImageNode | None] = {}

    def node(self, path: str) -> ImageNode | None:
        try:
            return self._nodes[path]
        except KeyError:
            pass
        entry = self.archive.lookup(path)
        node = None
        if entry is not None:
            node = ImageNode(self, entry, self.archive.inode(entry))
        self._nodes[path] = node
        return node


# -- tmpfs --------------------------------------------------------------------


class TmpNode(Node):
    dev = DEV_TMPFS
    uid = gid = GUEST_ID  # the guest made it

    def xattrs(self) -> dict[bytes, bytes]:
        """Its user.* extended attributes (made on first use: nodes in snapshots taken
        before there were any have none)."""
        return self.__dict__.setdefault("user_xattrs", {})

    @property
    def xattr_bytes(self) -> int:
        """What its extended attributes hold, charged to the tmpfs."""
        return sum(len(n) + len(v) for n, v in self.__dict__.get("user_xattrs", {}).items())


# memfd seals (fcntl F_ADD_SEALS), kept on the file as Linux keeps them on its inode
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE = 0x1, 0x2, 0x4, 0x8
F_SEAL_FUTURE_WRITE, F_SEAL_EXEC = 0x10, 0x20
F_SEAL_ALL = 0x3F


class TmpFile(TmpNode):
    # Its bytes in a host memfd while it has MAP_SHARED mappings (sharedpages.py): what
    # read() sees, stores through the mappings included. Never in a captured state.
    pages: SharedPages | None = None
    # Its holes, as tmpfs keeps them: page ranges [start, end), sorted and apart, that no
    # call wrote since a truncate, a write past the end or a punch made them (SEEK_HOLE
    # finds them), and of those the pages fallocate did not allocate either (st_blocks
    # leaves them out). Empty while it is mapped shared: stores there are seen by no call.
    holes: tuple[tuple[int, int], ...] = ()
    unheld: tuple[tuple[int, int], ...] = ()
    linkable = False  # an O_TMPFILE file linkat may still name (Linux's I_LINKABLE)
    seals = F_SEAL_SEAL  # fcntl's F_ADD_SEALS: only a memfd made to allow sealing has none

    def __init__(self, ino: int, mode: int = 0o644):
        super().__init__(st.S_IFREG | mode, ino, time.time_ns())
        self.data = bytearray()
        self.links = 1  # directory entries naming it: 0 for a memfd or an unlinked file

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def nlink(self) -> int:
        return self.links

    def make_hole(self, start: int, end: int) -> None:
        """Bytes [start, end) hold nothing now (skipped, truncated in, punched): the whole
        pages in them, and the last one's rest where they reach the end of the file."""
        first = -(-start // BLOCK_SIZE)
        last = -(-end // BLOCK_SIZE) if end >= self.size else end // BLOCK_SIZE
        if first < last and self.pages is None:
            self.holes = _with_pages(self.holes, first, last)
            self.unheld = _with_pages(self.unheld, first, last)

    def fill(self, start: int, end: int) -> None:
        """Bytes [start, end) were written: their pages hold data now."""
        self.holes = _without_pages(self.holes, *_pages_of(start, end))
        self.allocate(start, end)

    def allocate(self, start: int, end: int) -> None:
        """Bytes [start, end) are held now (fallocate): still holes to SEEK_DATA, as tmpfs's
        pages allocated but never written."""
        self.unheld = _without_pages(self.unheld, *_pages_of(start, end))

    def cut(self, length: int) -> None:
        """The file ends at `length` now: no hole lies past it."""
        self.holes = _without_pages(self.holes, -(-length // BLOCK_SIZE), 1 << 63)
        self.unheld = _without_pages(self.unheld, -(-length // BLOCK_SIZE), 1 << 63)

    @property
    def blocks(self) -> int:
        """tmpfs's: its pages, but those no call wrote or allocated."""
        pages = -(-self.size // BLOCK_SIZE) - sum(b - a for a, b in self.unheld)
        return max(0, pages) * (BLOCK_SIZE // STAT_BLOCK)

    def seek_data(self, offset: int, data: bool) -> int:
        for a, b in self.holes:
            start, end = a * BLOCK_SIZE, min(b * BLOCK_SIZE, self.size)
            if offset < start:
                return offset if data else start
            if offset < end:
                if not data:
                    return offset
                if end >= self.size:
                    raise SyscallError(errno.ENXIO)  # only a hole after it
                return end
        return offset if data else self.size


def _pages_of(start: int, end: int) -> tuple[int, int]:
    """The pages bytes [start, end) touch."""
    return start // BLOCK_SIZE, -(-end // BLOCK_SIZE)


def _with_pages(ranges: tuple[tuple[int, int], ...], start: int,
                end: int) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for a, b in sorted((*ranges, (start, end))):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return tuple(merged)


def _without_pages(ranges: tuple[tuple[int, int], ...], start: int,
                   end: int) -> tuple[tuple[int, int], ...]:
    if not ranges:
        return ranges
    return tuple(r for a, b in ranges for r in ((a, min(b, start)), (max(a, end), b))
                 if r[0] < r[1])


class TmpLink(TmpNode):
    """A symlink the guest made; its target is any string, resolved in the namespace."""

    def __init__(self, ino: int, target: str):
        super().__init__(st.S_IFLNK | 0o777, ino, time.time_ns())
        self.target = target

    @property
    def size(self) -> int:
        return len(self.target.encode("utf-8", "surrogateescape"))

    def readlink(self) -> str:
        return self.target


class TmpSocket(TmpNode):
    """An AF_UNIX socket's name in the tmpfs (bind to a path): connect finds the socket here."""

    def __init__(self, ino: int, mode: int, endpoint: object):
        super().__init__(st.S_IFSOCK | mode, ino, time.time_ns())
        self.endpoint: object | None = endpoint  # the bound socket; None once it is closed


class TmpFifo(TmpNode):
    """A named pipe (mkfifo) in the tmpfs: the process that made it, `holder`, pairs the
    opens of its readers and writers, its own and other processes' of its tree (fifo.py)."""

    def __init__(self, ino: int, mode: int, holder: int):
        super().__init__(st.S_IFIFO | mode, ino, time.time_ns())
        self.holder = holder


class TmpDir(TmpNode):
    def __init__(self, ino: int, mode: int = 0o777):
        super().__init__(st.S_IFDIR | mode, ino, time.time_ns())
        self.entries: dict[str, TmpNode] = {}

    @property
    def nlink(self) -> int:
        """Its entry in its parent, its own ".", and each subdirectory's "..", as Linux."""
        return 2 + sum(1 for node in self.entries.values() if isinstance(node, TmpDir))

    def children(self) -> list[tuple[str, Node]]:
        return sorted(self.entries.items())

    def add(self, name: str, node: TmpNode) -> TmpNode:
        """A new node under `name`, on this directory's filesystem (its st_dev)."""
        if node.dev != self.dev:
            node.dev = self.dev
        self.entries[name] = node
        return node


class Inodes:
    """The one source of inode numbers for the nodes the monitor makes.

    tmpfs files, /etc and sockets take theirs here: one counter per namespace, as
    Linux's get_next_ino(). The image numbers its own entries (ImageArchive.inode), a
    host mount shows the host's, and the numbers below FIRST_DYNAMIC_INO are the fixed
    nodes' (/dev, /proc and the devices).
    """

    def __init__(self) -> None:
        self.last = FIRST_DYNAMIC_INO - 1

    def next(self) -> int:
        self.last += 1
        return self.last


# What a tmpfs node (file, directory, symlink) costs the monitor besides its data, charged
# against the limit: without it, empty files and directories would be free to make.
NODE_BYTES = 256
# inotify's content events, which open tmpfs files report (TmpFS.file_changed; inotify.py)
IN_ACCESS, IN_MODIFY, IN_CLOSE_WRITE, IN_CLOSE_NOWRITE = 0x1, 0x2, 0x8, 0x10


class TmpFS:
    """An in-memory filesystem; `limit` bounds the bytes its files hold, NODE_BYTES each."""

    def __init__(self, limit: int, inodes: Inodes):
        self.limit = limit
        self.used = 0
        self.inodes = inodes
        self.root = TmpDir(inodes.next(), 0o1777)  # part of the filesystem: not charged

    @property
    def watchers(self) -> list:
        """The inotify files watching its nodes (made on first use: a tmpfs in a snapshot
        taken before there were any has none)."""
        return self.__dict__.setdefault("inotify_watchers", [])

    def file_changed(self, f: object, mask: int) -> None:
        """Open file f of this tmpfs had content event `mask`: its watchers see it."""
        for w in list(self.watchers):
            w.file_event(f, mask)

    def new_ino(self) -> int:
        """The number of a node about to be made, charged NODE_BYTES (ENOSPC when full)."""
        self.charge(NODE_BYTES)
        return self.inodes.next()

    def charge(self, delta: int) -> None:
        if self.used + delta > self.limit:
            raise SyscallError(errno.ENOSPC)
        self.used += delta

    def drop_link(self, node: TmpNode) -> None:
        """A directory entry naming `node` went away; a file's bytes go with its last link."""
        if isinstance(node, TmpFile):
            node.links -= 1
            node.ctime_ns = time.time_ns()
            if node.links == 0:
                self.used -= len(node.data) + NODE_BYTES + node.xattr_bytes
        else:
            self.used -= NODE_BYTES + node.xattr_bytes  # a directory or symlink: one link

    def add_file(self, path: str, data: bytes, mode: int = 0o755) -> TmpFile:
        """Create a file below /tmp (path relative to the tmpfs root) from the host side."""
        *dirs, name = [p for p in path.split("/") if p]
        node = self.root
        for part in dirs:
            child = node.entries.get(part)
            if child is None:
                child = node.entries[part] = TmpDir(self.new_ino())
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


# -- /dev, /proc and /sys --------------------------------------------------------


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


class ListedDir(Node):
    """A /proc directory of numbered entries listed from the state of `owner` (the
    Kernel of the process that looks) at each lookup: not a StaticDir, its entries are
    never stored."""

    dev = DEV_PROC

    def __init__(self, ino: int, owner: Any, mode: int = 0o555):
        super().__init__(st.S_IFDIR | mode, ino)
        self.owner = owner

    @property
    def entries(self) -> dict[str, Node]:
        raise NotImplementedError

    def children(self) -> list[tuple[str, Node]]:
        return sorted(self.entries.items(), key=lambda item: int(item[0]))


class FdDir(ListedDir):
    """/proc/self/fd: one magic link per open fd of the process that looks (a vfork
    child sees its own table)."""

    def __init__(self, ino: int, owner: Any):
        super().__init__(ino, owner, 0o500)

    @property
    def entries(self) -> dict[str, Node]:
        return {str(fd): FdLink(FD_LINK_INO + fd, f) for fd, f in self.owner.fds.files.items()}


class FdLink(Node):
    """/proc/self/fd/N: readlink names the file ('pipe:[ino]', 'socket:[ino]', its path);
    following it reaches the open file itself (Resolved.opened), as Linux's magic links do,
    so an unlinked file, a pipe or a directory is reached without resolving that name."""

    dev = DEV_PROC

    def __init__(self, ino: int, file: Any):
        super().__init__(st.S_IFLNK | _link_mode(file.flags), ino)
        self.file = file

    def readlink(self) -> str:
        f = self.file
        mode = f.node.mode
        if st.S_ISFIFO(mode):
            return f"pipe:[{f.node.ino}]"
        if st.S_ISSOCK(mode):
            return f"socket:[{f.node.ino}]"
        if st.S_ISREG(mode) and f.node.nlink == 0 and not f.path.endswith(DELETED):
            return f.path + DELETED
        return f.path if f.path.startswith(("/", "anon_inode:")) else f"/dev/{f.path}"


def _link_mode(flags: int) -> int:
    """lr-x------, l-wx------ or lrwx------: the fd's access mode, as Linux shows it."""
    access = flags & 3
    return 0o500 if access == 0 else 0o300 if access == 1 else 0o700


class ProcNode(Node):
    """A read-only file whose bytes are made from the kernel's state at each open.

    `render` is a module-level function of the Kernel (no closures: the
    namespace is pickled). Its size is 0, as for Linux's /proc files.
    """

    def __init__(self, ino: int, render: Callable[..., bytes], dev: int = DEV_PROC):
        super().__init__(st.S_IFREG | 0o444, ino)
        self.render = render
        self.dev = dev


# -- the namespace ------------------------------------------------------------


class Resolved:
    """A path resolved in the namespace: its final node (or None) and its parent."""

    __slots__ = ("path", "parts", "node", "parent", "name", "opened")

    def __init__(self, path: str, parts: list[str], node: Node | None, parent: Node | None,
                 opened: Any = None):
        self.path = path
        self.parts = parts
        self.node = node
        self.parent = parent
        self.name = parts[-1] if parts else "/"
        self.opened = opened  # the open file a /proc/self/fd link led to (its node is node)


class Namespace:
    """The guest's single directory tree: image at /, tmpfs at /tmp, /dev, /proc, /sys.

    Over the image lie the files the monitor writes (put_file: /etc/passwd,
    the resolver's hosts, the trust store with the operator's roots): they
    replace an image file of the same path or add one, in image directories
    or in directories made for them.
    """

    SYNTHETIC = ("tmp", "dev", "proc", "sys")
    # /tmp in a host directory while the invocation's tree has children (sharedtmp.py):
    # never in a captured state.
    shared_tmp: SharedTmp | None = None

    def __init__(self, image: ImageArchive, tmpfs_limit: int, devices: dict[str, Node],
                 executable: str):
        self.image = ImageFS(image)
        self.inodes = Inodes()
        self.tmp = TmpFS(tmpfs_limit, self.inodes)
        # /dev/shm, where glibc's shm_open and sem_open make their files (multiprocessing's
        # locks, which its ThreadPool takes): a filesystem of its own (st_dev), its nodes
        # kept by the tmpfs, sharing its limit.
        shm = TmpDir(self.inodes.next(), 0o1777)  # a root, as the tmpfs's: not charged
        shm.dev = DEV_SHM
        self.dev = StaticDir(3, {**devices, "shm": shm}, DEV_DEVFS)
        self_dir = StaticDir(5, {"exe": StaticLink(6, executable, DEV_PROC)}, DEV_PROC)
        self.proc = StaticDir(4, {"self": self_dir}, DEV_PROC)
        self.sys = StaticDir(7, {}, DEV_SYSFS)
        self.mounts: dict[str, Any] = {}
        self.overlay: dict[str, Node] = {}  # canonical path -> monitor-written file or dir
        self.cwd = "/"

    def mount(self, name: str, fs: Any) -> None:
        """Show a read-only file system (a HostDirFS) at /name."""
        if not name or "/" in name or name in self.SYNTHETIC:
            raise ValueError(f"cannot mount at /{name}")
        self.mounts[name] = fs

    def put_file(self, path: str, data: bytes) -> None:
        """Create or replace the file at absolute `path` over the image, read-only to the guest."""
        parts = path.split("/")[1:]
        if not path.startswith("/") or any(p in ("", ".", "..") for p in parts) or (
            parts[0] in self.SYNTHETIC or parts[0] in self.mounts
        ):
            raise ValueError(f"not a path over the image: {path!r}")
        for i in range(1, len(parts)):
            directory = "/" + "/".join(parts[:i])
            node = self._lookup(parts[:i])
            if node is None:
                self.overlay[directory] = StaticDir(self._overlay_ino(), {}, DEV_PROC)
            elif not node.is_dir:
                raise ValueError(f"{path}: {directory} is not a directory")
        old = self.overlay.get(path)
        self.overlay[path] = StaticFile(old.ino if old else self._overlay_ino(), data, DEV_PROC)

    def put_etc(self, name: str, data: bytes) -> None:
        """Create or replace /etc/<name>."""
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"not a file name: {name!r}")
        self.put_file(f"/etc/{name}", data)

    def _overlay_ino(self) -> int:
        return self.inodes.next()

    def children(self, path: str, node: Node) -> list[tuple[str, Node]]:
        """A directory's entries, with the monitor's files in it."""
        entries = dict(node.children())
        prefix = path.rstrip("/") + "/"
        for key, child in self.overlay.items():
            if key.startswith(prefix) and "/" not in key[len(prefix):]:
                entries[key[len(prefix):]] = child
        return sorted(entries.items())

    def _lookup(self, parts: list[str]) -> Node | None:
        """The node at a canonical path (no symlinks followed on the way)."""
        if not parts:
            return self.image.node("/")
        top = parts[0]
        if top == "tmp":
            if self.shared_tmp is not None:
                return self.shared_tmp.lookup(parts[1:])
            return self.tmp.walk(parts[1:])
        if top in self.mounts:
            return self.mounts[top].walk(parts[1:])
        if top in ("dev", "proc", "sys"):
            node: Node | None = getattr(self, top)
            for part in parts[1:]:
                if not isinstance(node, (StaticDir, TmpDir, ListedDir)):  # TmpDir: /dev/shm
                    return None
                node = node.entries.get(part)
                if node is None:
                    return None
            return node
        path = "/" + "/".join(parts)
        return self.overlay.get(path) or self.image.node(path)

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
        opened = None
        hops = 0
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                node, parent = self._up(node, parts)
                opened = None
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
            opened = None
            is_last = not any(p not in ("", ".") for p in pending)
            if node is not None and node.is_symlink and (follow or not is_last):
                hops += 1
                if hops > MAX_SYMLINKS:
                    raise SyscallError(errno.ELOOP)
                if isinstance(node, FdLink):
                    opened = node.file
                    node = opened.node
                    if node.is_dir:  # a directory fd's path is canonical: walk on from there
                        parts = [p for p in opened.path.split("/") if p]
                        parent = self._lookup(parts[:-1]) if parts else node
                    continue
                target = node.readlink()
                parts.pop()
                if target.startswith("/"):
                    parts = []
                pending.extend(reversed(target.split("/")))
                node = self._lookup(parts)
                parent = node
        if must_be_dir and node is not None and not node.is_dir:
            raise SyscallError(errno.ENOTDIR)
        return Resolved("/" + "/".join(parts), parts, node, parent, opened)

    def _up(self, node: Node | None, parts: list[str]) -> tuple[Node | None, Node | None]:
        """Step `parts` up to the parent directory: (its node, its parent's node)."""
        if node is None:
            raise SyscallError(errno.ENOENT)
        if not node.is_dir:
            raise SyscallError(errno.ENOTDIR)
        if parts:
            parts.pop()
        node = self._lookup(parts)
        # The parent moves up too: "d/.." names d's parent's entry, not one in d.
        return node, self._lookup(parts[:-1]) if parts else node

    def chdir(self, path: str) -> None:
        r = self.resolve(path)
        if r.node is None:
            raise SyscallError(errno.ENOENT)
        if not r.node.is_dir:
            raise SyscallError(errno.ENOTDIR)
        self.cwd = r.path


def dirent_type(mode: int) -> int:
    return DT_TYPES.get(st.S_IFMT(mode), 0)

