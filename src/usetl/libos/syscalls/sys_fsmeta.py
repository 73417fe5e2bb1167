"""File metadata and names: chmod, utimes, links, statfs, flock, memfd_create.

Only the tmpfs changes: the image, host mounts, /proc and /etc are
read-only (EROFS), as a read-only mount on Linux answers. The guest owns
every tmpfs file, so there are no permission checks on them.
"""

from __future__ import annotations

import errno
import stat as st
import struct
import time
from typing import TYPE_CHECKING

from .. import sharedtmp, shmtree
from ..errors import SyscallError
from ..files import O_RDWR, TmpOpenFile
from ..fs import (
    DEV_DEVFS,
    DEV_IMAGE,
    DEV_PROC,
    DEV_SYSFS,
    DEV_TMPFS,
    F_SEAL_EXEC,
    NAME_MAX,
    DeviceNode,
    Node,
    Resolved,
    TmpDir,
    TmpFifo,
    TmpFile,
    TmpFS,
    TmpLink,
    TmpNode,
)
from ..hostfs import DEV_HOSTFS
from ..inotify import IN_CREATE, IN_DONT_FOLLOW, InotifyFile, entry_event
from ..sched import Block
from .args import AT_EMPTY_PATH, AT_FDCWD, AT_SYMLINK_FOLLOW, AT_SYMLINK_NOFOLLOW, s32
from .sys_file import _resolve_at, _tmp_parent

if TYPE_CHECKING:
    from ..files import OpenFile
    from ..kernel import Kernel

UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
TIME_PAIR = struct.Struct("<qqqq")  # two timespecs or two timevals: access, modification
UTIMBUF = struct.Struct("<qq")
LOCK_SH, LOCK_EX, LOCK_NB, LOCK_UN = 1, 2, 4, 8
MFD_CLOEXEC, MFD_ALLOW_SEALING, MFD_NOEXEC_SEAL, MFD_EXEC = 0x1, 0x2, 0x8, 0x10
MFD_NAME_MAX = 249  # NAME_MAX less the "memfd:" prefix

# struct statfs: type, bsize, blocks, bfree, bavail, files, ffree, fsid[2],
# namelen, frsize, flags, spare[4]
STATFS = struct.Struct("<qqQQQQQiiqqq32x")
ST_RDONLY, ST_NOSUID, ST_NODEV, ST_VALID = 0x1, 0x2, 0x4, 0x20
TMPFS_MAGIC, SQUASHFS_MAGIC, PROC_MAGIC, SYSFS_MAGIC = 0x01021994, 0x73717368, 0x9FA0, 0x62656572
MAGIC = {DEV_TMPFS: TMPFS_MAGIC, DEV_DEVFS: TMPFS_MAGIC, DEV_PROC: PROC_MAGIC,
         DEV_SYSFS: SYSFS_MAGIC, DEV_IMAGE: SQUASHFS_MAGIC, DEV_HOSTFS: SQUASHFS_MAGIC}


def _existing(k: Kernel, dirfd: int, path: int, follow: bool, empty_ok: bool = False) -> Node:
    target = _resolve_at(k, dirfd, path, follow=follow, empty_ok=empty_ok)
    if target.node is None:
        raise SyscallError(errno.ENOENT)
    return target.node


def _writable(node: Node) -> TmpNode:
    """The node, if its metadata may change: a tmpfs node."""
    if isinstance(node, TmpNode):
        return node
    raise SyscallError(errno.EPERM if isinstance(node, DeviceNode) else errno.EROFS)


# -- chmod ---------------------------------------------------------------------


def _chmod(node: Node, mode: int) -> int:
    if sharedtmp.holds(node):
        sharedtmp.chmod(node, mode)
        return 0
    node = _writable(node)
    node.mode = st.S_IFMT(node.mode) | (mode & 0o7777)
    node.ctime_ns = time.time_ns()
    return 0


def sys_chmod(k: Kernel, path: int, mode: int, *_: int) -> int:
    return _chmod(_existing(k, AT_FDCWD, path, follow=True), mode)


def sys_fchmod(k: Kernel, fd: int, mode: int, *_: int) -> int:
    return _chmod(_open_node(k, fd), mode)


def sys_fchmodat(k: Kernel, dirfd: int, path: int, mode: int, *_: int) -> int:
    return _chmod(_existing(k, dirfd, path, follow=True), mode)


def _open_node(k: Kernel, fd: int) -> Node:
    f: OpenFile = k.fds.get(s32(fd))
    return f.node


# -- ownership: the guest owns every tmpfs file and may not give it away ----------


def _chown(k: Kernel, node: Node, uid: int, gid: int) -> int:
    if not sharedtmp.holds(node):
        node = _writable(node)
    for wanted, own in ((s32(uid), k.identity.uid), (s32(gid), k.identity.gid)):
        if wanted not in (-1, own):
            raise SyscallError(errno.EPERM)
    node.ctime_ns = time.time_ns()
    return 0


def sys_chown(k: Kernel, path: int, uid: int, gid: int, *_: int) -> int:
    return _chown(k, _existing(k, AT_FDCWD, path, follow=True), uid, gid)


def sys_lchown(k: Kernel, path: int, uid: int, gid: int, *_: int) -> int:
    return _chown(k, _existing(k, AT_FDCWD, path, follow=False), uid, gid)


def sys_fchown(k: Kernel, fd: int, uid: int, gid: int, *_: int) -> int:
    return _chown(k, _open_node(k, fd), uid, gid)


def sys_fchownat(k: Kernel, dirfd: int, path: int, uid: int, gid: int, flags: int,
                 *_: int) -> int:
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        raise SyscallError(errno.EINVAL)
    node = _existing(k, dirfd, path, follow=not flags & AT_SYMLINK_NOFOLLOW,
                     empty_ok=bool(flags & AT_EMPTY_PATH))
    return _chown(k, node, uid, gid)


# -- mknod: regular files only ---------------------------------------------------


def _mknod(k: Kernel, dirfd: int, path: int, mode: int) -> int:
    mode &= 0xFFFFFFFF  # a mode_t: the register's upper half is not part of it
    kind = st.S_IFMT(mode)
    if kind not in (0, st.S_IFREG, st.S_IFIFO):
        # No sockets or device nodes by mknod in the tmpfs; EPERM as for an unprivileged one.
        raise SyscallError(errno.EPERM if kind in (st.S_IFSOCK, st.S_IFCHR, st.S_IFBLK)
                           else errno.EINVAL)
    parent, name = _new_entry(k, dirfd, path)
    if sharedtmp.holds(parent):
        sharedtmp.mknod(k, parent, name, (kind or st.S_IFREG) | (mode & 0o7777))
        return 0
    assert isinstance(parent, TmpDir)
    perms = mode & 0o7777 & ~k.umask
    ino = k.ns.tmp.new_ino()
    # A FIFO's opens are paired by this process (fifo.py).
    made = parent.add(name, TmpFifo(ino, perms, k.identity.pid)
                      if kind == st.S_IFIFO else TmpFile(ino, perms))
    entry_event(k, parent, name, made, IN_CREATE)
    return 0


def sys_mknod(k: Kernel, path: int, mode: int, *_: int) -> int:
    return _mknod(k, AT_FDCWD, path, mode)


def sys_mknodat(k: Kernel, dirfd: int, path: int, mode: int, *_: int) -> int:
    return _mknod(k, dirfd, path, mode)


# -- times ---------------------------------------------------------------------


def _set_times(node: Node, atime: int | None, mtime: int | None) -> int:
    """Set the times in ns (None: leave it); a node that cannot change is EROFS."""
    if atime is None and mtime is None:
        return 0
    if sharedtmp.holds(node):
        sharedtmp.set_times(node, atime, mtime)
        return 0
    node = _writable(node)
    if atime is not None:
        node.atime_ns = atime
    if mtime is not None:
        node.mtime_ns = mtime
    node.ctime_ns = time.time_ns()
    return 0


def _timespec_ns(sec: int, nsec: int, now: int) -> int | None:
    if nsec == UTIME_NOW:
        return now
    if nsec == UTIME_OMIT:
        return None
    if not 0 <= nsec < 1_000_000_000:
        raise SyscallError(errno.EINVAL)
    return sec * 1_000_000_000 + nsec


def sys_utimensat(k: Kernel, dirfd: int, path: int, times: int, flags: int, *_: int) -> int:
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        raise SyscallError(errno.EINVAL)
    now = time.time_ns()
    atime = mtime = now
    if times:
        asec, ansec, msec, mnsec = TIME_PAIR.unpack(k.mem.read(times, TIME_PAIR.size))
        atime, mtime = _timespec_ns(asec, ansec, now), _timespec_ns(msec, mnsec, now)
    # A null path names dirfd itself (what futimens does).
    if path == 0:
        node = _open_node(k, dirfd)
    else:
        node = _existing(k, dirfd, path, follow=not flags & AT_SYMLINK_NOFOLLOW,
                         empty_ok=bool(flags & AT_EMPTY_PATH))
    return _set_times(node, atime, mtime)


def _timeval_times(k: Kernel, times: int) -> tuple[int, int]:
    if not times:
        now = time.time_ns()
        return now, now
    asec, ausec, msec, musec = TIME_PAIR.unpack(k.mem.read(times, TIME_PAIR.size))
    if not (0 <= ausec < 1_000_000 and 0 <= musec < 1_000_000):
        raise SyscallError(errno.EINVAL)
    return asec * 1_000_000_000 + ausec * 1000, msec * 1_000_000_000 + musec * 1000


def sys_futimesat(k: Kernel, dirfd: int, path: int, times: int, *_: int) -> int:
    node = _open_node(k, dirfd) if path == 0 else _existing(k, dirfd, path, follow=True)
    return _set_times(node, *_timeval_times(k, times))


def sys_utimes(k: Kernel, path: int, times: int, *_: int) -> int:
    return _set_times(_existing(k, AT_FDCWD, path, follow=True), *_timeval_times(k, times))


def sys_utime(k: Kernel, path: int, times: int, *_: int) -> int:
    node = _existing(k, AT_FDCWD, path, follow=True)
    if not times:
        now = time.time_ns()
        return _set_times(node, now, now)
    atime, mtime = UTIMBUF.unpack(k.mem.read(times, UTIMBUF.size))
    return _set_times(node, atime * 1_000_000_000, mtime * 1_000_000_000)


# -- links ---------------------------------------------------------------------


def _new_entry(k: Kernel, dirfd: int, path: int) -> tuple[Node, str]:
    """Where a new name goes: its tmpfs directory (or a shared /tmp's) and the name (which
    must be free)."""
    r = _resolve_at(k, dirfd, path, follow=False)
    assert isinstance(r, Resolved)
    if r.node is not None:
        raise SyscallError(errno.EEXIST)
    if sharedtmp.holds(r.parent):
        return r.parent, r.name  # type: ignore[return-value]
    return _tmp_parent(k, r), r.name


def _symlink(k: Kernel, target: int, dirfd: int, path: int) -> int:
    raw = k.mem.cstring(target)
    if not raw:
        raise SyscallError(errno.ENOENT)
    parent, name = _new_entry(k, dirfd, path)
    if sharedtmp.holds(parent):
        sharedtmp.symlink(parent, name, raw.decode("utf-8", "surrogateescape"))
        return 0
    assert isinstance(parent, TmpDir)
    made = parent.add(name, TmpLink(k.ns.tmp.new_ino(), raw.decode("utf-8", "surrogateescape")))
    parent.mtime_ns = parent.ctime_ns = time.time_ns()
    entry_event(k, parent, name, made, IN_CREATE)
    return 0


def sys_symlink(k: Kernel, target: int, path: int, *_: int) -> int:
    return _symlink(k, target, AT_FDCWD, path)


def sys_symlinkat(k: Kernel, target: int, dirfd: int, path: int, *_: int) -> int:
    return _symlink(k, target, dirfd, path)


def _link(k: Kernel, olddir: int, old: int, newdir: int, new: int, flags: int) -> int:
    if flags & ~(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH):
        raise SyscallError(errno.EINVAL)
    node = _existing(k, olddir, old, follow=bool(flags & AT_SYMLINK_FOLLOW),
                     empty_ok=bool(flags & AT_EMPTY_PATH))
    if node.is_dir:
        raise SyscallError(errno.EPERM)
    parent, name = _new_entry(k, newdir, new)
    if sharedtmp.holds(node) != sharedtmp.holds(parent) or not (
            isinstance(node, TmpNode) or sharedtmp.holds(node)):
        raise SyscallError(errno.EXDEV)
    if sharedtmp.holds(node):
        sharedtmp.link(node, parent, name)
        return 0
    assert isinstance(parent, TmpDir)
    if node.dev != parent.dev:
        raise SyscallError(errno.EXDEV)  # /tmp and /dev/shm, two filesystems
    if isinstance(node, TmpFile) and node.links == 0 and not node.linkable:
        raise SyscallError(errno.ENOENT)  # an unlinked file or a memfd has no name to link
    if shmtree.in_tree(k, parent):
        shmtree.named(k, name, node)
    if isinstance(node, TmpFile):
        node.links += 1
        node.linkable = False
        node.ctime_ns = time.time_ns()
    parent.entries[name] = node
    entry_event(k, parent, name, node, IN_CREATE)
    return 0


def sys_link(k: Kernel, old: int, new: int, *_: int) -> int:
    return _link(k, AT_FDCWD, old, AT_FDCWD, new, 0)


def sys_linkat(k: Kernel, olddir: int, old: int, newdir: int, new: int, flags: int,
               *_: int) -> int:
    return _link(k, olddir, old, newdir, new, flags)


# -- inotify ----------------------------------------------------------------------

IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000


def sys_inotify_init1(k: Kernel, flags: int, *_: int) -> int:
    flags = s32(flags)
    if flags & ~(IN_NONBLOCK | IN_CLOEXEC):
        raise SyscallError(errno.EINVAL)
    return k.fds.install(InotifyFile(k, flags, k.ns.inodes.next()),
                         cloexec=bool(flags & IN_CLOEXEC))


def sys_inotify_init(k: Kernel, *_: int) -> int:
    return sys_inotify_init1(k, 0)


def _inotify(k: Kernel, fd: int) -> InotifyFile:
    f = k.fds.get(s32(fd))
    if not isinstance(f, InotifyFile):
        raise SyscallError(errno.EINVAL)
    return f


def sys_inotify_add_watch(k: Kernel, fd: int, path: int, mask: int, *_: int) -> int:
    f = _inotify(k, fd)
    mask &= 0xFFFFFFFF
    return f.add_watch(_existing(k, AT_FDCWD, path, follow=not mask & IN_DONT_FOLLOW), mask)


def sys_inotify_rm_watch(k: Kernel, fd: int, wd: int, *_: int) -> int:
    _inotify(k, fd).rm_watch(s32(wd))
    return 0


# -- file systems and locks -----------------------------------------------------


def _statfs(k: Kernel, node: Node, buf: int) -> int:
    tmp: TmpFS = k.ns.tmp
    if node.dev == DEV_TMPFS:
        blocks, free = tmp.limit // 4096, max(tmp.limit - tmp.used, 0) // 4096
        flags = ST_VALID | ST_NOSUID | ST_NODEV
    else:
        blocks = free = 0
        flags = ST_VALID | ST_NOSUID | (0 if node.dev == DEV_DEVFS else ST_RDONLY | ST_NODEV)
    raw = STATFS.pack(MAGIC.get(node.dev, SQUASHFS_MAGIC), 4096, blocks, free, free,
                      0, 0, node.dev, 0, NAME_MAX, 4096, flags)
    k.mem.write(buf, raw)
    return 0


def sys_statfs(k: Kernel, path: int, buf: int, *_: int) -> int:
    return _statfs(k, _existing(k, AT_FDCWD, path, follow=True), buf)


def sys_fstatfs(k: Kernel, fd: int, buf: int, *_: int) -> int:
    return _statfs(k, _open_node(k, fd), buf)


def sys_flock(k: Kernel, fd: int, operation: int, *_: int) -> int:
    """Locks of the open file description, against the process's other descriptions of the
    file (threads that each opened it: filelock, pip's and Hugging Face's caches)."""
    f = k.fds.get(s32(fd))
    op = s32(operation)
    if op & ~LOCK_NB not in (LOCK_SH, LOCK_EX, LOCK_UN):
        raise SyscallError(errno.EINVAL)
    if isinstance(f, sharedtmp.SharedOpenFile):
        return _host_flock(k, f, op)
    locks = k.fds.file_locks(f.node, k.sched)
    if op & LOCK_UN:
        locks.release(f)
        return 0
    exclusive = op & LOCK_EX != 0
    if f in locks.holders and locks.holders[f] == exclusive:
        return 0  # held so already
    if locks.conflicts(f, exclusive):
        locks.release(f)  # a conversion drops the old lock first, as Linux's does
        if op & LOCK_NB:
            raise SyscallError(errno.EWOULDBLOCK)
        raise Block((locks.queue,), k.sched.deadline_after(None))
    locks.holders[f] = exclusive
    if not exclusive:
        locks.queue.wake(k.sched)  # exclusive to shared: other shared takers may go on
    return 0


def _host_flock(k: Kernel, f: sharedtmp.SharedOpenFile, op: int) -> int:
    """flock of a shared /tmp file: the host's, between the processes of the tree; a wait
    for it polls (sharedtmp.lock_wait)."""
    try:
        f.flock(op | LOCK_NB)
    except SyscallError as e:
        if e.errno == errno.EWOULDBLOCK and not op & LOCK_NB:
            raise sharedtmp.lock_wait(k) from None
        raise
    return 0


# -- memfd -----------------------------------------------------------------------


class MemfdFile(TmpOpenFile):
    """A memfd: a tmpfs file in no directory, whose bytes go when its last fd closes."""

    def close(self) -> None:
        if self.node.links == 0:
            self.tmpfs.used -= len(self.node.data)


def sys_memfd_create(k: Kernel, name: int, flags: int, *_: int) -> int:
    if flags & ~(MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL | MFD_EXEC):
        raise SyscallError(errno.EINVAL)
    try:
        raw = k.mem.cstring(name, limit=MFD_NAME_MAX + 1)
    except SyscallError as e:
        raise SyscallError(errno.EINVAL if e.errno == errno.ENAMETOOLONG else e.errno) from None
    node = TmpFile(k.ns.tmp.new_ino(), 0o600 if flags & MFD_NOEXEC_SEAL else 0o777)
    node.links = 0
    if flags & MFD_NOEXEC_SEAL:  # implies MFD_ALLOW_SEALING, and seals the mode
        node.seals = F_SEAL_EXEC
    elif flags & MFD_ALLOW_SEALING:
        node.seals = 0
    label = f"/memfd:{raw.decode('utf-8', 'surrogateescape')} (deleted)"
    f = MemfdFile(node, O_RDWR, label, k.ns.tmp)
    return k.fds.install(f, cloexec=bool(flags & MFD_CLOEXEC))



# -- extended attributes: user.* on tmpfs files and directories -----------------------

XATTR_CREATE, XATTR_REPLACE = 1, 2
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = XATTR_LIST_MAX = 65536  # one value; one node's list of names
USER_XATTR = b"user."
XATTR_PREFIXES = (b"user.", b"trusted.", b"security.", b"system.")


def _xattr_node(k: Kernel, target: int, follow: bool, by_fd: bool) -> Node:
    return _open_node(k, target) if by_fd else _existing(k, AT_FDCWD, target, follow=follow)


def _xattr_name(k: Kernel, addr: int) -> bytes:
    try:
        name = k.mem.cstring(addr, limit=XATTR_NAME_MAX + 1)
    except SyscallError as e:
        raise SyscallError(errno.ERANGE if e.errno == errno.ENAMETOOLONG else e.errno) from None
    if not name:
        raise SyscallError(errno.ERANGE)
    if not name.startswith(XATTR_PREFIXES):
        raise SyscallError(errno.EOPNOTSUPP)
    return name


def _stored(node: Node) -> dict[bytes, bytes]:
    """The attributes a node holds: only tmpfs files and directories hold any (those of
    a shared /tmp on the host)."""
    if sharedtmp.holds(node):
        return sharedtmp.xattrs(node)
    if isinstance(node, TmpNode) and (node.is_dir or st.S_ISREG(node.mode)):
        return node.xattrs()
    return {}


def _changeable(node: Node, name: bytes) -> Node:
    """The node, if the guest may set or remove its attribute `name`. As Linux for a
    user that is not root: trusted.* is EPERM, security.* and system.* are not kept
    (EOPNOTSUPP), user.* only on files and directories."""
    if not sharedtmp.holds(node):
        node = _writable(node)
    if not name.startswith(USER_XATTR):
        raise SyscallError(errno.EPERM if name.startswith(b"trusted.") else errno.EOPNOTSUPP)
    if not (node.is_dir or st.S_ISREG(node.mode)):
        raise SyscallError(errno.EPERM)
    return node


def _reply(k: Kernel, data: bytes, buf: int, size: int) -> int:
    """A value or list for a buffer of `size`: 0 asks for the length; too small is ERANGE."""
    if size:
        if len(data) > size:
            raise SyscallError(errno.ERANGE)
        k.mem.write(buf, data)
    return len(data)


def _listxattr(k: Kernel, target: int, follow: bool, by_fd: bool, buf: int, size: int) -> int:
    node = _xattr_node(k, target, follow, by_fd)
    return _reply(k, b"".join(n + b"\0" for n in _stored(node)), buf, size)


def _getxattr(k: Kernel, target: int, follow: bool, by_fd: bool, name: int, buf: int,
              size: int) -> int:
    node = _xattr_node(k, target, follow, by_fd)
    value = _stored(node).get(_xattr_name(k, name))
    if value is None:
        raise SyscallError(errno.ENODATA)
    return _reply(k, value, buf, size)


def _setxattr(k: Kernel, target: int, follow: bool, by_fd: bool, name: int, value: int,
              size: int, flags: int) -> int:
    node = _xattr_node(k, target, follow, by_fd)
    key = _xattr_name(k, name)
    if flags & ~(XATTR_CREATE | XATTR_REPLACE):
        raise SyscallError(errno.EINVAL)
    if size > XATTR_SIZE_MAX:
        raise SyscallError(errno.E2BIG)
    data = bytes(k.mem.read(value, size)) if size else b""
    tmp = _changeable(node, key)
    if not isinstance(tmp, TmpNode):
        sharedtmp.set_xattr(tmp, key, data, flags)
        return 0
    attrs = tmp.xattrs()
    old = attrs.get(key)
    if old is not None and flags & XATTR_CREATE:
        raise SyscallError(errno.EEXIST)
    if old is None and flags & XATTR_REPLACE:
        raise SyscallError(errno.ENODATA)
    if old is None and sum(len(n) + 1 for n in attrs) + len(key) + 1 > XATTR_LIST_MAX:
        raise SyscallError(errno.ENOSPC)
    k.ns.tmp.charge(len(data) - len(old) if old is not None else len(key) + len(data))
    attrs[key] = data
    tmp.ctime_ns = time.time_ns()
    return 0


def _removexattr(k: Kernel, target: int, follow: bool, by_fd: bool, name: int) -> int:
    node = _xattr_node(k, target, follow, by_fd)
    key = _xattr_name(k, name)
    tmp = _changeable(node, key)
    if not isinstance(tmp, TmpNode):
        sharedtmp.remove_xattr(tmp, key)
        return 0
    old = tmp.xattrs().pop(key, None)
    if old is None:
        raise SyscallError(errno.ENODATA)
    k.ns.tmp.charge(-len(key) - len(old))
    tmp.ctime_ns = time.time_ns()
    return 0


def sys_listxattr(k: Kernel, path: int, buf: int, size: int, *_: int) -> int:
    return _listxattr(k, path, True, False, buf, size)


def sys_llistxattr(k: Kernel, path: int, buf: int, size: int, *_: int) -> int:
    return _listxattr(k, path, False, False, buf, size)


def sys_flistxattr(k: Kernel, fd: int, buf: int, size: int, *_: int) -> int:
    return _listxattr(k, fd, True, True, buf, size)


def sys_getxattr(k: Kernel, path: int, name: int, buf: int, size: int, *_: int) -> int:
    return _getxattr(k, path, True, False, name, buf, size)


def sys_lgetxattr(k: Kernel, path: int, name: int, buf: int, size: int, *_: int) -> int:
    return _getxattr(k, path, False, False, name, buf, size)


def sys_fgetxattr(k: Kernel, fd: int, name: int, buf: int, size: int, *_: int) -> int:
    return _getxattr(k, fd, True, True, name, buf, size)


def sys_setxattr(k: Kernel, path: int, name: int, value: int, size: int, flags: int,
                 *_: int) -> int:
    return _setxattr(k, path, True, False, name, value, size, flags)


def sys_lsetxattr(k: Kernel, path: int, name: int, value: int, size: int, flags: int,
                  *_: int) -> int:
    return _setxattr(k, path, False, False, name, value, size, flags)


def sys_fsetxattr(k: Kernel, fd: int, name: int, value: int, size: int, flags: int,
                  *_: int) -> int:
    return _setxattr(k, fd, True, True, name, value, size, flags)


def sys_removexattr(k: Kernel, path: int, name: int, *_: int) -> int:
    return _removexattr(k, path, True, False, name)


def sys_lremovexattr(k: Kernel, path: int, name: int, *_: int) -> int:
    return _removexattr(k, path, False, False, name)


def sys_fremovexattr(k: Kernel, fd: int, name: int, *_: int) -> int:
    return _removexattr(k, fd, True, True, name)
