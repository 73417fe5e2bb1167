"""/tmp as one directory for an invocation's process tree, as it is one machine's.

While a tree has one process, /tmp is the in-memory tmpfs (fs.TmpFS). At its
first child (fork, vfork, execve: Children.process_table) the tmpfs is
written out into a private host directory (in a jail, the tmpfs the jail
mounts at JAIL_DIR; else a fresh 0700 directory under /dev/shm), and every
process of the tree, its monitor a fork of this one, works in that
directory from then on: through one O_PATH fd of it and *at() calls relative
to it, never by a host path. So names, bytes, holes, renames, O_EXCL, POSIX
record locks, OFD locks, flock and MAP_SHARED mappings between processes are
the host kernel's, Linux's own; tmpsync has nothing to carry back.

Every path is still resolved by the Namespace, component by component, in
the guest's tree (a symlink in /tmp to / is the guest's /): each component's
directory is opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV), so nothing reaches past the
directory, a symlink another process swapped in included.

At the invocation's end the owner (the process that wrote it out) reads the
directory back into its tmpfs, its open files included, and removes it: the
state a template captures, or the next invocation sees, holds no host fd.

A FIFO there is a host FIFO node whose opens its maker pairs (fifo.py), named
in the tree's table by its inode; an AF_UNIX socket's name is a host socket
node, the tree's table finding its listener (guestnet.py).

Not as on Linux here: inotify watches see no events of a shared /tmp; its
size is not bounded by the tmpfs limit (the jail's cgroup bounds it); POSIX
record locks taken while the
process was alone (granted, not recorded) are not carried into the host
files; a process's record locks on a file go when the monitor reads or
chmods it by path (a host close); a mapping still there after the invocation
keeps its bytes but no longer reaches the file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import stat as st
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .errors import SyscallError
from .files import O_ACCMODE, O_APPEND, O_PATH, FdTable, OpenFile, TmpOpenFile
from .fs import (
    BLOCK_SIZE,
    DEV_TMPFS,
    GUEST_ID,
    STAT,
    Node,
    TmpDir,
    TmpFifo,
    TmpFile,
    TmpFS,
    TmpLink,
    TmpNode,
    TmpSocket,
)
from .sched import Block

if TYPE_CHECKING:
    from .kernel import Kernel

JAIL_DIR = "/run/usetl-tmp"  # the jail's own tmpfs for it (jail/namespaces.py)
HOST_PARENT = "/dev/shm"
SYS_OPENAT2, SYS_RENAMEAT2, SYS_FALLOCATE = 437, 316, 285
RESOLVE_NO_XDEV, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_BENEATH = 1, 2, 4, 8
RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV
OPEN_HOW = struct.Struct("<QQQ")
RENAME_NOREPLACE = 1
DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
# The flags of a guest open the host open keeps: access mode, O_APPEND and O_TRUNC; the
# host open never follows a symlink (the Namespace did) and never makes the monitor wait.
HOST_OPEN_FLAGS = O_ACCMODE | O_APPEND | os.O_TRUNC
LOCK_POLL = 0.005  # seconds between tries of a lock another process holds (F_SETLKW, flock)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(*args: object) -> int:
    result = _libc.syscall(*args)
    if result < 0:
        raise SyscallError(ctypes.get_errno() or errno.EIO)
    return result


@contextmanager
def host_call() -> Iterator[None]:
    """The host's errno as the guest's: the host kernel's answer is Linux's."""
    try:
        yield
    except OSError as e:
        raise SyscallError(e.errno or errno.EIO) from None


class SharedTmp:
    """The tree's /tmp directory on the host, `name` in `parent`: `fd` (O_PATH) is what every
    call is relative to."""

    def __init__(self, parent: str, name: str):
        self.parent, self.name = parent, name
        self.fd = os.open(os.path.join(parent, name), DIR_FLAGS)
        self.owner = os.getpid()  # the monitor that wrote it out: it reads it back, removes it
        self.fifos: list[bytes] = []  # the keys of the FIFOs made in it (claim_fifo)

    @classmethod
    def make(cls) -> SharedTmp:
        jailed = os.path.isdir(JAIL_DIR) and os.access(JAIL_DIR, os.W_OK)
        parent = JAIL_DIR if jailed else HOST_PARENT
        name = f"usetl-tmp-{os.getpid()}-{os.urandom(6).hex()}"
        at = os.open(parent, DIR_FLAGS)
        try:
            os.mkdir(name, 0o700, dir_fd=at)  # mkdirat: the jail allows the *at() calls
        finally:
            os.close(at)
        return cls(parent, name)

    def directory(self, parts: tuple[str, ...] | list[str], flags: int = DIR_FLAGS) -> int:
        """An fd of the directory at `parts` below the root, opened beneath it."""
        how = OPEN_HOW.pack(flags | os.O_DIRECTORY | os.O_CLOEXEC, 0, RESOLVE)
        path = "/".join(parts).encode("utf-8", "surrogateescape") or b"."
        return _syscall(SYS_OPENAT2, self.fd, path, how, len(how))

    @contextmanager
    def entry(self, parts: tuple[str, ...] | list[str]) -> Iterator[tuple[int, str]]:
        """(an fd of its directory, its name) for the entry at `parts` (not the root)."""
        parent = self.directory(parts[:-1])
        try:
            with host_call():
                yield parent, parts[-1]
        finally:
            os.close(parent)

    def lookup(self, parts: list[str]) -> SharedNode | None:
        try:
            if not parts:
                return SharedNode(self, (), os.stat(self.fd))
            with self.entry(parts) as (d, name):
                return SharedNode(self, tuple(parts), os.stat(name, dir_fd=d,
                                                              follow_symlinks=False))
        except SyscallError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise

    def held_bytes(self) -> int:
        """What its files hold of the host's memory, charged to the tree: in a jail, what
        the jail's own tmpfs holds (one statfs); else their st_blocks (a walk of the tree,
        some 3.5 ms per 1000 files)."""
        if self.parent == JAIL_DIR:
            fs = os.statvfs(self.fd)
            return (fs.f_blocks - fs.f_bfree) * fs.f_frsize
        fd = self.directory((), os.O_RDONLY)
        try:
            return sum(info.st_blocks * 512 for _, info in _tree(fd))
        finally:
            os.close(fd)

    def remove(self) -> None:
        fd = self.directory((), os.O_RDONLY)
        try:
            _empty(fd)
        finally:
            os.close(fd)
        os.close(self.fd)
        at = os.open(self.parent, DIR_FLAGS)
        try:
            os.rmdir(self.name, dir_fd=at)
        finally:
            os.close(at)


def _tree(fd: int, prefix: str = "") -> Iterator[tuple[str, os.stat_result]]:
    """Every entry below directory `fd` (by path from it, parents first), and its stat, as
    other processes change it: an entry gone meanwhile, or a directory the guest made
    unreadable, is left out."""
    for name, info in _entries(fd):
        yield prefix + name, info
        if st.S_ISDIR(info.st_mode):
            try:
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                              | os.O_CLOEXEC, dir_fd=fd)
            except OSError:
                continue
            try:
                yield from _tree(sub, prefix + name + "/")
            finally:
                os.close(sub)


def _entries(fd: int) -> Iterator[tuple[str, os.stat_result]]:
    """The entries of directory `fd` and their stat, those another process removes as they
    are listed left out (as a listing on Linux may)."""
    for name in os.listdir(fd):
        try:
            yield name, os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue


def _empty(fd: int) -> None:
    """Remove everything below directory `fd` (a directory the guest made unwritable too)."""
    for name in os.listdir(fd):
        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if st.S_ISDIR(info.st_mode):
            os.chmod(name, 0o700, dir_fd=fd)  # a directory: the tree's processes are gone
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=fd)
            try:
                _empty(sub)
            finally:
                os.close(sub)
            os.rmdir(name, dir_fd=fd)
        else:
            os.unlink(name, dir_fd=fd)


class SharedNode(Node):
    """A node of the shared /tmp, as the host's stat showed it; `parts` is its path below
    the root (() for the root), or `fd` the host fd of the open file it is."""

    dev = DEV_TMPFS
    uid = gid = GUEST_ID

    def __init__(self, tmp: SharedTmp, parts: tuple[str, ...], info: os.stat_result,
                 fd: int | None = None):
        super().__init__(info.st_mode, info.st_ino, info.st_mtime_ns)
        self.atime_ns, self.ctime_ns = info.st_atime_ns, info.st_ctime_ns
        self.tmp = tmp
        self.parts = parts
        self.info = info
        self.fd = fd

    @contextmanager
    def by_fd(self) -> Iterator[str]:
        """A path to it through /proc/self/fd that chmod and utime follow to it, whatever
        its mode allows (glibc's way for an O_PATH fd), never past it."""
        if self.fd is not None:
            with host_call():
                yield f"/proc/self/fd/{self.fd}"
            return
        if self.parts:
            with self.tmp.entry(self.parts) as (d, entry):
                fd = os.open(entry, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=d)
        else:
            fd = os.dup(self.tmp.fd)
        try:
            with host_call():
                yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)

    @property
    def nlink(self) -> int:
        return self.info.st_nlink

    @property
    def size(self) -> int:
        return self.info.st_size

    def read_at(self, offset: int, length: int) -> bytes:
        """Its bytes, read by its path (a program execve loads)."""
        with self.tmp.entry(self.parts) as (d, entry):
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=d)
            try:
                return os.pread(fd, length, offset)
            finally:
                os.close(fd)

    def readlink(self) -> str:
        if not self.is_symlink:
            raise SyscallError(errno.EINVAL)
        with self.tmp.entry(self.parts) as (d, name):
            return os.readlink(name, dir_fd=d)

    def children(self) -> list[tuple[str, Node]]:
        if not self.is_dir:
            raise SyscallError(errno.ENOTDIR)
        fd = self.tmp.directory(self.parts, os.O_RDONLY)
        try:
            with host_call():
                return sorted((name, SharedNode(self.tmp, (*self.parts, name), info))
                              for name, info in _entries(fd))
        finally:
            os.close(fd)

    def pack_stat(self) -> bytes:
        i = self.info
        times = []
        for ns in (i.st_atime_ns, i.st_mtime_ns, i.st_ctime_ns):
            times += divmod(ns, 1_000_000_000)
        return STAT.pack(self.dev, i.st_ino, i.st_nlink, i.st_mode, self.uid, self.gid, 0, 0,
                         i.st_size, BLOCK_SIZE, i.st_blocks, *times)


class SharedOpenFile(OpenFile):
    """An open file of the shared /tmp: a host fd, whose open file description (its offset,
    its OFD and flock locks) a forked monitor shares, as a forked process does on Linux."""

    def __init__(self, fd: int, flags: int, path: str, tmp: SharedTmp):
        self.fd = fd
        self.flags = flags
        self.path = path
        self.tmp = tmp

    @property  # type: ignore[override]
    def node(self) -> SharedNode:
        with host_call():
            return SharedNode(self.tmp, (), os.fstat(self.fd), self.fd)

    @property  # type: ignore[override]
    def offset(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_CUR)

    @offset.setter
    def offset(self, value: int) -> None:
        with host_call():
            os.lseek(self.fd, value, os.SEEK_SET)

    def read(self, length: int) -> bytes:
        if not self.readable:
            raise SyscallError(errno.EBADF)
        with host_call():
            return os.read(self.fd, length)

    def write(self, data: memoryview) -> int:
        if not self.writable:
            raise SyscallError(errno.EBADF)
        with host_call():
            return os.write(self.fd, data)

    def read_at(self, offset: int, length: int) -> bytes:
        with host_call():
            return os.pread(self.fd, length, offset)

    def write_at(self, offset: int, data: memoryview) -> int:
        with host_call():
            return os.pwrite(self.fd, data, offset)

    def seek(self, offset: int, whence: int) -> int:
        with host_call():
            return os.lseek(self.fd, offset, whence)

    def truncate(self, length: int) -> None:
        if not self.writable:
            raise SyscallError(errno.EINVAL)
        with host_call():
            os.ftruncate(self.fd, length)

    def allocate(self, mode: int, offset: int, length: int) -> None:
        _syscall(SYS_FALLOCATE, self.fd, mode, ctypes.c_long(offset), ctypes.c_long(length))

    def set_append(self, append: bool) -> None:
        """F_SETFL's O_APPEND, on the host description (appends from every process atomic)."""
        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, flags | os.O_APPEND if append else
                    flags & ~os.O_APPEND)

    def lock(self, cmd: int, flock: bytes) -> bytes:
        """fcntl's record and OFD locks (F_GETLK, F_SETLK, F_OFD_*), the host's; a lock
        another process holds is EAGAIN (F_SETLKW polls: lock_wait)."""
        with host_call():
            return fcntl.fcntl(self.fd, cmd, flock)

    def flock(self, operation: int) -> None:
        with host_call():
            fcntl.flock(self.fd, operation)

    def host_fd(self) -> int:
        return self.fd

    def close(self) -> None:
        os.close(self.fd)


def host_fds(k: Kernel) -> tuple[int, ...]:
    """The host fd a child's monitor keeps: the shared /tmp's."""
    return () if k.ns.shared_tmp is None else (k.ns.shared_tmp.fd,)


def held_bytes(k: Kernel) -> int:
    """What the shared /tmp holds, charged to the process that made it (as a memfd's pages
    are: sharedpages.py)."""
    tmp = k.ns.shared_tmp
    return tmp.held_bytes() if tmp is not None and tmp.owner == os.getpid() else 0


# -- the tree's first child: the tmpfs goes out ------------------------------------------


def share(k: Kernel, tables: tuple[FdTable, ...]) -> None:
    """The tree has a second process from now on: /tmp goes to a host directory, and the
    open /tmp files of `tables` become its files."""
    if k.ns.shared_tmp is not None:
        return
    with host_call():
        tmp = SharedTmp.make()
    placed: dict[int, str] = {}  # id of a TmpFile -> its first path written out
    fifos: list[tuple[str, int]] = []
    root = tmp.directory((), os.O_RDONLY)
    try:
        with host_call():
            _write_out(k.ns.tmp.root, root, "", placed, root, fifos)
    except SyscallError:  # the host's memory is full: the child is refused, nothing left
        tmp.remove()
        raise
    finally:
        os.close(root)
    root = tmp.directory((), os.O_RDONLY)
    try:
        with host_call():
            for table in tables:
                _files_out(table, tmp, root, placed)
            _mappings_out(k, tmp, root, placed)
    finally:
        os.close(root)
    k.ns.shared_tmp = tmp
    for path, holder in fifos:
        claim_fifo(k, tmp.lookup(path.split("/")), holder)


def _write_out(directory: TmpDir, fd: int, prefix: str, placed: dict[int, str],
               root: int, fifos: list[tuple[str, int]]) -> None:
    """The tmpfs directory's entries into host directory `fd` (`prefix` its path); the
    FIFOs' paths and holders into `fifos`."""
    for name, node in directory.entries.items():
        path = prefix + name
        if isinstance(node, TmpDir):
            os.mkdir(name, 0o700, dir_fd=fd)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
            try:
                _write_out(node, sub, path + "/", placed, root, fifos)
                _xattrs_out(sub, node)
                os.chmod(sub, st.S_IMODE(node.mode))
                os.utime(sub, ns=(node.atime_ns, node.mtime_ns))
            finally:
                os.close(sub)
        elif isinstance(node, TmpFile) and id(node) in placed:  # a hard link
            os.link(placed[id(node)], name, src_dir_fd=root, dst_dir_fd=fd,
                    follow_symlinks=False)
        elif isinstance(node, TmpFile):
            out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600,
                          dir_fd=fd)
            try:
                _write_file(out, node)
            finally:
                os.close(out)
            placed[id(node)] = path
        elif isinstance(node, TmpLink):
            os.symlink(node.target, name, dir_fd=fd)
        elif isinstance(node, (TmpFifo, TmpSocket)):  # a socket's bound name: guestnet.py
            os.mknod(name, node.mode, dir_fd=fd)
            if isinstance(node, TmpFifo):
                fifos.append((path, node.holder))


def _write_file(fd: int, node: TmpFile) -> None:
    data = node.pages.read(0, node.size) if node.pages is not None else node.data
    os.write(fd, data)
    _xattrs_out(fd, node)
    os.fchmod(fd, st.S_IMODE(node.mode))
    os.utime(fd, ns=(node.atime_ns, node.mtime_ns))


def _files_out(table: FdTable, tmp: SharedTmp, root: int, placed: dict[int, str]) -> None:
    """The table's open /tmp files as host files, their offsets kept; one that has no name
    (a TemporaryFile, unlinked) as a host O_TMPFILE file with its bytes."""
    made: dict[int, SharedOpenFile] = {}  # id of a TmpOpenFile -> its host file
    for fd, f in list(table.files.items()):
        if not (isinstance(f, TmpOpenFile) and f.path.startswith("/tmp/")):
            continue
        if id(f) not in made:
            made[id(f)] = _file_out(f, tmp, root, placed)
            _flock_out(table, f, made[id(f)])
        table.files[fd] = made[id(f)]


def _mappings_out(k: Kernel, tmp: SharedTmp, root: int, placed: dict[int, str]) -> None:
    """MAP_SHARED mappings of /tmp files show the host files from now on."""
    for node in list(k.mm.paged):
        path = placed.get(id(node))
        if path is not None and node.pages is not None:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root)
            k.mm.move_mappings(node, SharedNode(tmp, (), os.fstat(fd), fd), fd)


def _flock_out(table: FdTable, f: TmpOpenFile, host: SharedOpenFile) -> None:
    """The flock lock `f` holds, held by its host file now. (Record locks taken while the
    process was alone were granted without a record: they are not carried.)"""
    locks = table.flocks.get((f.node.dev, f.node.ino)) if table.flocks else None
    if locks is not None and f in locks.holders:
        fcntl.flock(host.fd, (fcntl.LOCK_EX if locks.holders.pop(f) else fcntl.LOCK_SH)
                    | fcntl.LOCK_NB)


def _file_out(f: TmpOpenFile, tmp: SharedTmp, root: int,
              placed: dict[int, str]) -> SharedOpenFile:
    access = os.O_RDWR if f.flags & O_PATH == 0 else os.O_PATH
    flags = (f.flags & (O_ACCMODE | O_APPEND) if access == os.O_RDWR else access) | os.O_CLOEXEC
    path = placed.get(id(f.node))
    if path is not None:
        fd = os.open(path, flags | os.O_NOFOLLOW, dir_fd=root)
    else:
        fd = os.open(".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600, dir_fd=root)
        _write_file(fd, f.node)
    os.lseek(fd, f.offset, os.SEEK_SET)
    return SharedOpenFile(fd, f.flags, f.path, tmp)


def received(tmp: SharedTmp, fd: int) -> SharedOpenFile:
    """A file of the shared /tmp another process sent (SCM_RIGHTS), its host fd: its
    description (offset, flags) is the sender's, as on Linux."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL) & (O_ACCMODE | O_APPEND)
    host = os.readlink(f"/proc/self/fd/{fd}")
    top = os.path.join(tmp.parent, tmp.name)
    path = "/tmp" + host[len(top):] if host.startswith(top + "/") else "/tmp/#received"
    return SharedOpenFile(fd, flags, path, tmp)


# -- the invocation's end: back into the tmpfs ---------------------------------------------


def unshare(k: Kernel) -> None:
    """The invocation is over: the owner reads /tmp back into its tmpfs (its open files
    too) and removes the directory (the other processes of the tree are gone)."""
    tmp = k.ns.shared_tmp
    if tmp is None or tmp.owner != os.getpid():
        return
    k.ns.shared_tmp = None
    fs = k.ns.tmp
    for node in list(fs.root.entries.values()):
        fs.drop_link(node)
    fs.root.entries.clear()
    read: dict[tuple[int, int], TmpFile] = {}
    root = tmp.directory((), os.O_RDONLY)
    try:
        with host_call():
            _read_in(fs, fs.root, root, read, k.identity.pid)
    finally:
        os.close(root)
    made: dict[int, OpenFile] = {}  # id of a SharedOpenFile -> its tmpfs file
    for fd, f in list(k.fds.files.items()):
        if isinstance(f, SharedOpenFile):
            if id(f) not in made:
                made[id(f)] = _file_in(f, fs, read)
            k.fds.files[fd] = made[id(f)]
    tmp.remove()


def discard(k: Kernel) -> None:
    """The USF ends with /tmp still shared (its guest died mid-invocation): the owner
    removes the directory, its contents unread (what a child still running writes into it
    meanwhile may stay, until the child ends with this monitor)."""
    tmp = k.ns.shared_tmp
    if tmp is not None and tmp.owner == os.getpid():
        k.ns.shared_tmp = None
        with contextlib.suppress(OSError):
            tmp.remove()


def _xattrs_out(fd: int, node: TmpNode) -> None:
    """The node's user.* attributes onto the host file (a host tmpfs older than Linux 6.6
    keeps none: they are lost)."""
    try:
        for name, value in node.__dict__.get("user_xattrs", {}).items():
            os.setxattr(fd, name, value)
    except OSError as e:
        if e.errno != errno.EOPNOTSUPP:
            raise


def _xattrs_in(fd: int, fs: TmpFS, node: TmpNode) -> None:
    """The host file's user.* attributes onto its tmpfs node, charged as setxattr would."""
    node.xattrs().update(_host_xattrs(fd))
    fs.used += node.xattr_bytes


def _read_in(fs: TmpFS, directory: TmpDir, fd: int, read: dict[tuple[int, int], TmpFile],
             holder: int) -> None:
    for name in os.listdir(fd):
        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        mode = st.S_IMODE(info.st_mode)
        node: TmpNode
        if st.S_ISDIR(info.st_mode):
            os.chmod(name, 0o700, dir_fd=fd)  # a directory: the tree's processes are gone
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=fd)
            try:
                node = TmpDir(fs.new_ino(), mode)
                _read_in(fs, node, sub, read, holder)
                _xattrs_in(sub, fs, node)
            finally:
                os.close(sub)
        elif st.S_ISREG(info.st_mode) and (info.st_dev, info.st_ino) in read:
            node = read[(info.st_dev, info.st_ino)]
            node.links += 1
        elif st.S_ISREG(info.st_mode):
            node = _regular(fs, os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                                        | os.O_NONBLOCK, dir_fd=fd), mode)
            read[(info.st_dev, info.st_ino)] = node
        elif st.S_ISLNK(info.st_mode):
            node = TmpLink(fs.new_ino(), os.readlink(name, dir_fd=fd))
        elif st.S_ISFIFO(info.st_mode):
            node = TmpFifo(fs.new_ino(), mode, holder)
        else:
            continue  # a socket's name: its listener is gone with the invocation's children
        node.mtime_ns, node.atime_ns = info.st_mtime_ns, info.st_atime_ns
        directory.entries[name] = node


def _regular(fs: TmpFS, fd: int, mode: int) -> TmpFile:
    """A host file's bytes as a tmpfs file (`fd` closed); charged as a write would be."""
    try:
        size = os.fstat(fd).st_size
        node = TmpFile(fs.new_ino(), mode)
        fs.used += size  # the bytes are there already: a full tmpfs refuses the next write
        node.data[:] = os.pread(fd, size, 0)
        _xattrs_in(fd, fs, node)
        return node
    finally:
        os.close(fd)


def _file_in(f: SharedOpenFile, fs: TmpFS, read: dict[tuple[int, int], TmpFile]) -> OpenFile:
    info = os.fstat(f.fd)
    node = read.get((info.st_dev, info.st_ino))
    if node is None:  # no name any more
        node = _regular(fs, os.dup(f.fd), st.S_IMODE(info.st_mode))
        node.links = 0
    opened = TmpOpenFile(node, f.flags, f.path, fs)
    opened.offset = f.offset
    f.close()
    return opened


def lock_wait(k: Kernel) -> Block:
    """The wait of a call for a lock another process holds (F_SETLKW, flock without
    LOCK_NB): tried again in LOCK_POLL, a signal ending it meanwhile (EINTR). The vCPU
    thread never blocks in the host's F_SETLKW, where no signal could reach it."""
    return Block((), None, recheck=k.clock.after(LOCK_POLL))


def holds(node: Node | None) -> bool:
    """Is it a node of a shared /tmp?"""
    return isinstance(node, SharedNode)


def _at(node: Node, name: str) -> tuple[SharedTmp, tuple[str, ...]]:
    """The tree's directory and the path below its root of entry `name` in `node`."""
    assert isinstance(node, SharedNode)
    return node.tmp, (*node.parts, name)


# -- the calls that change it: the host's, at the entries the Namespace resolved ------------


def open_file(k: Kernel, parent: Node, name: str, flags: int, mode: int) -> SharedOpenFile:
    """open(2) of a regular file (made with O_CREAT) in a shared /tmp directory."""
    tmp, parts = _at(parent, name)
    host = flags & HOST_OPEN_FLAGS | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    with tmp.entry(parts) as (d, entry):
        if flags & os.O_CREAT:
            try:
                fd = os.open(entry, host | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=d)
                os.fchmod(fd, mode & 0o7777 & ~k.umask)  # the guest's umask, not the host's
                return SharedOpenFile(fd, flags, "/tmp/" + "/".join(parts), tmp)
            except FileExistsError:
                if flags & os.O_EXCL:
                    raise
        fd = os.open(entry, host, dir_fd=d)
        if not st.S_ISREG(os.fstat(fd).st_mode):  # replaced by another process meanwhile
            os.close(fd)
            raise SyscallError(errno.ENXIO)
        return SharedOpenFile(fd, flags, "/tmp/" + "/".join(parts), tmp)


def open_tmpfile(k: Kernel, directory: Node, flags: int, mode: int) -> SharedOpenFile:
    """O_TMPFILE in a shared /tmp directory: a host file of no name (O_EXCL: never to have
    one)."""
    assert isinstance(directory, SharedNode)
    tmp = directory.tmp
    fd = tmp.directory(directory.parts, os.O_RDONLY)
    try:
        with host_call():
            made = os.open(".", os.O_TMPFILE | (flags & (O_ACCMODE | os.O_EXCL | O_APPEND))
                           | os.O_CLOEXEC, mode & 0o7777 & ~k.umask, dir_fd=fd)
    finally:
        os.close(fd)
    path = "/tmp/" + "/".join(directory.parts)
    return SharedOpenFile(made, flags & ~os.O_TMPFILE, path.rstrip("/") + "/#tmpfile", tmp)


def mkdir(k: Kernel, parent: Node, name: str, mode: int) -> None:
    tmp, parts = _at(parent, name)
    with tmp.entry(parts) as (d, entry):
        os.mkdir(entry, 0o700, dir_fd=d)
        made = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                       dir_fd=d)
        try:
            os.fchmod(made, mode & 0o7777 & ~k.umask)  # the guest's umask, not the host's
        finally:
            os.close(made)


def mknod(k: Kernel, parent: Node, name: str, mode: int) -> None:
    """A regular file, FIFO or AF_UNIX socket's name (bind) in a shared /tmp directory (its
    mode less the host's umask too: what could change it would follow a name)."""
    tmp, parts = _at(parent, name)
    with tmp.entry(parts) as (d, entry):
        os.mknod(entry, mode & ~k.umask, dir_fd=d)
    if st.S_ISFIFO(mode):
        claim_fifo(k, tmp.lookup(list(parts)), k.identity.pid)


def _fifo_key(node: SharedNode) -> bytes:
    return b"fifo:%d" % node.ino


def claim_fifo(k: Kernel, node: SharedNode | None, holder: int) -> None:
    """The process that pairs the opens of a FIFO of the shared /tmp (fifo.py): its maker,
    named in the tree's table by the FIFO's inode."""
    table = k.children.table
    if node is not None and table is not None and k.ns.shared_tmp is not None:
        table.claim_name(_fifo_key(node), holder)
        k.ns.shared_tmp.fifos.append(_fifo_key(node))


def hand_fifos(k: Kernel) -> None:
    """A process ends by itself: the FIFOs it holds are its parent's to pair from now on
    (as tmpsync gives its parent those of a copy)."""
    table, tmp = k.children.table, k.ns.shared_tmp
    for key in tmp.fifos if tmp is not None and table is not None else ():
        if table.name_holder(key) == k.identity.pid:
            table.hand_name(key, k.identity.ppid)


def fifo(k: Kernel, node: Node) -> TmpFifo:
    """A FIFO of the shared /tmp as fifo.py opens it: with its holder (none: -1, ENXIO)."""
    assert isinstance(node, SharedNode)
    table = k.children.table
    holder = None if table is None else table.name_holder(_fifo_key(node))
    return TmpFifo(node.ino, st.S_IMODE(node.mode), -1 if holder is None else holder)


def symlink(parent: Node, name: str, target: str) -> None:
    tmp, parts = _at(parent, name)
    with tmp.entry(parts) as (d, entry):
        os.symlink(target, entry, dir_fd=d)


def remove(parent: Node, name: str, directory: bool) -> None:
    tmp, parts = _at(parent, name)
    with tmp.entry(parts) as (d, entry):
        (os.rmdir if directory else os.unlink)(entry, dir_fd=d)


def rename(src_parent: Node, src: str, dst_parent: Node, dst: str, noreplace: bool) -> None:
    """rename(2) within the shared /tmp (with RENAME_NOREPLACE: renameat2's)."""
    tmp, src_parts = _at(src_parent, src)
    _, dst_parts = _at(dst_parent, dst)
    with tmp.entry(src_parts) as (sd, old), tmp.entry(dst_parts) as (dd, new):
        if noreplace:
            _syscall(SYS_RENAMEAT2, sd, old.encode("utf-8", "surrogateescape"), dd,
                     new.encode("utf-8", "surrogateescape"), RENAME_NOREPLACE)
        else:
            os.rename(old, new, src_dir_fd=sd, dst_dir_fd=dd)


def link(node: Node, dst_parent: Node, dst: str) -> None:
    """A hard link in the shared /tmp to `node` (a node of it reached by its path, or an
    open file: linkat's AT_EMPTY_PATH, an O_TMPFILE file named)."""
    assert isinstance(node, SharedNode)
    tmp, dst_parts = _at(dst_parent, dst)
    if node.fd is not None:
        with tmp.entry(dst_parts) as (dd, new):
            os.link(f"/proc/self/fd/{node.fd}", new, dst_dir_fd=dd, follow_symlinks=True)
        return
    with tmp.entry(node.parts) as (sd, old), tmp.entry(dst_parts) as (dd, new):
        os.link(old, new, src_dir_fd=sd, dst_dir_fd=dd, follow_symlinks=False)


def truncate(node: Node, length: int) -> None:
    assert isinstance(node, SharedNode)
    with node.tmp.entry(node.parts) as (d, entry):
        fd = os.open(entry, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=d)
        try:
            os.ftruncate(fd, length)
        finally:
            os.close(fd)


def chmod(node: Node, mode: int) -> None:
    assert isinstance(node, SharedNode)
    if node.is_symlink:
        raise SyscallError(errno.EOPNOTSUPP)  # Linux's fchmodat on a symlink itself
    with node.by_fd() as path:
        os.chmod(path, mode & 0o7777)


def set_times(node: Node, atime: int | None, mtime: int | None) -> None:
    """utimensat's times in ns (None: left as they are)."""
    assert isinstance(node, SharedNode)
    times = (node.info.st_atime_ns if atime is None else atime,
             node.info.st_mtime_ns if mtime is None else mtime)
    if node.is_symlink:
        with node.tmp.entry(node.parts) as (d, entry):
            os.utime(entry, ns=times, dir_fd=d, follow_symlinks=False)
        return
    with node.by_fd() as path:
        os.utime(path, ns=times)


def xattrs(node: Node) -> dict[bytes, bytes]:
    """Its user.* extended attributes, as the host directory's tmpfs holds them."""
    assert isinstance(node, SharedNode)
    if node.is_symlink:
        return {}  # Linux keeps no user.* attributes on a symlink
    with node.by_fd() as path:
        return _host_xattrs(path)


def _host_xattrs(target: int | str) -> dict[bytes, bytes]:
    try:
        names = [os.fsencode(n) for n in os.listxattr(target)]
    except OSError as e:
        if e.errno != errno.EOPNOTSUPP:
            raise
        return {}
    return {n: os.getxattr(target, n) for n in names if n.startswith(b"user.")}


def set_xattr(node: Node, name: bytes, value: bytes, flags: int) -> None:
    """setxattr(2) by the host: its EEXIST, ENODATA and ENOSPC are Linux's."""
    assert isinstance(node, SharedNode)
    with node.by_fd() as path:
        os.setxattr(path, name, value, flags)


def remove_xattr(node: Node, name: bytes) -> None:
    assert isinstance(node, SharedNode)
    with node.by_fd() as path:
        os.removexattr(path, name)


def mapped(k: Kernel, node: SharedNode) -> SharedNode:
    """The node a mapping of an open shared /tmp file keeps: with a host fd of the monitor's
    own (k.mm.host_files, closed at the invocation's end), open for reading and writing as
    a writable host mapping needs, whatever the guest's fd allows."""
    assert node.fd is not None
    try:
        fd = os.open(f"/proc/self/fd/{node.fd}", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        fd = os.dup(node.fd)  # a read-only file: its shared mappings are read-only too
    k.mm.host_files.append(fd)
    return SharedNode(node.tmp, (), node.info, fd)
