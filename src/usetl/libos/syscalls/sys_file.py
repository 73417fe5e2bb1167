"""Files: open/read/write/stat and friends over the guest's namespace."""

from __future__ import annotations

import errno
import os
import stat as st
import struct
from typing import TYPE_CHECKING

from .. import sharedtmp, shmtree
from ..children import route
from ..errors import SyscallError
from ..fifo import open_fifo
from ..files import (
    O_ACCMODE,
    O_APPEND,
    O_CLOEXEC,
    O_CREAT,
    O_DIRECTORY,
    O_EXCL,
    O_NOFOLLOW,
    O_NONBLOCK,
    O_PATH,
    O_RDONLY,
    O_RDWR,
    O_TMPFILE,
    O_TRUNC,
    O_WRONLY,
    DirFile,
    ImageFile,
    OpenFile,
    ProcOpenFile,
    TmpOpenFile,
    check_io_range,
    truncate_tmp,
)
from ..fs import (
    DeviceNode,
    ImageNode,
    Node,
    ProcNode,
    Resolved,
    StaticFile,
    TmpDir,
    TmpFifo,
    TmpFile,
)
from ..hostfs import HostNode
from ..inotify import IN_CREATE, IN_DELETE, IN_OPEN, entry_event, moved, removed
from ..ipc import F_GETPIPE_SZ, F_SETPIPE_SZ
from ..limits import RLIMIT_FSIZE, soft_limit
from ..pty import PtmxNode, PtsNode
from ..sched import Block
from ..sigdelivery import file_too_big, sigpipe_on_epipe
from .args import AT_EMPTY_PATH, AT_FDCWD, AT_REMOVEDIR, AT_SYMLINK_NOFOLLOW, s32, s64

if TYPE_CHECKING:
    from ..kernel import Kernel

MAX_IO = 0x7FFFF000  # Linux caps one read or write at this many bytes
SENDFILE_CHUNK = 1 << 20  # sendfile copies in pieces, so a large count holds little memory

F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL = 0, 1, 2, 3, 4
F_GETLK, F_SETLK, F_SETLKW = 5, 6, 7
F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW = 36, 37, 38
RECORD_LOCKS = (F_GETLK, F_SETLK, F_SETLKW, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW)
FLOCK = struct.Struct("<hh4xqqi4x")  # struct flock on x86-64, the host's and the guest's
F_UNLCK = 2
F_DUPFD_CLOEXEC = 1030
F_ADD_SEALS, F_GET_SEALS = 1033, 1034
FD_CLOEXEC = 1

TCGETS, TIOCGWINSZ, FIONBIO, FIONCLEX, FIOCLEX = 0x5401, 0x5413, 0x5421, 0x5450, 0x5451

R_OK, W_OK, X_OK = 4, 2, 1


# -- resolution helpers --------------------------------------------------------


def _base(k: Kernel, dirfd: int) -> str | None:
    dirfd = s32(dirfd)
    if dirfd == AT_FDCWD:
        return None
    f = k.fds.get(dirfd)
    if not f.node.is_dir:
        raise SyscallError(errno.ENOTDIR)
    return f.path


def _resolve_at(k: Kernel, dirfd: int, path_addr: int, follow: bool = True,
                empty_ok: bool = False) -> Resolved | OpenFile:
    raw = k.mem.cstring(path_addr)
    if not raw:
        if empty_ok:
            return k.fds.get(s32(dirfd))
        raise SyscallError(errno.ENOENT)
    path = raw.decode("utf-8", "surrogateescape")
    base = None if path.startswith("/") else _base(k, dirfd)
    return k.ns.resolve(path, follow, base)


def _tmp_parent(k: Kernel, r: Resolved) -> TmpDir:
    """The tmpfs directory a new entry goes into, or why it cannot."""
    if r.parent is None:
        raise SyscallError(errno.ENOENT)
    if not isinstance(r.parent, TmpDir):
        raise SyscallError(errno.EROFS if r.parent.is_dir else errno.ENOTDIR)
    return r.parent


RENAME_NOREPLACE = 1


# -- open and close -------------------------------------------------------------


def _open_tmpfile(k: Kernel, dirfd: int, path_addr: int, flags: int, mode: int) -> int:
    """O_TMPFILE: a regular file without a name in the directory's tmpfs, which linkat
    may name later unless O_EXCL (as Linux's I_LINKABLE)."""
    if flags & O_ACCMODE not in (O_WRONLY, O_RDWR):
        raise SyscallError(errno.EINVAL)
    r = _resolve_at(k, dirfd, path_addr, follow=True)
    assert isinstance(r, Resolved)
    if r.node is None:
        raise SyscallError(errno.ENOENT)
    if not r.node.is_dir:
        raise SyscallError(errno.ENOTDIR)
    if sharedtmp.holds(r.node):
        return k.fds.install(sharedtmp.open_tmpfile(k, r.node, flags, mode),
                             cloexec=bool(flags & O_CLOEXEC))
    if not isinstance(r.node, TmpDir):
        raise SyscallError(errno.EROFS if isinstance(r.node, ImageNode) else errno.EOPNOTSUPP)
    node = TmpFile(k.ns.tmp.new_ino(), mode & 0o7777 & ~k.umask)
    node.links, node.linkable = 0, not flags & O_EXCL
    node.dev = r.node.dev  # the directory's filesystem, which linkat may name it in
    path = f"{r.path.rstrip('/')}/#{node.ino}"  # Linux's name for it, shown "(deleted)"
    f = TmpOpenFile(node, flags & ~O_TMPFILE, path, k.ns.tmp)
    return k.fds.install(f, cloexec=bool(flags & O_CLOEXEC))


def _create(k: Kernel, r: Resolved, path_addr: int, flags: int, mode: int) -> TmpFile:
    """open's new file at r, which names none (ENOENT without O_CREAT)."""
    shared_name = shmtree.in_tree(k, r.parent)
    if shared_name:
        shmtree.fetch(k, r.name, route)  # another process of the tree may hold it
    if not flags & O_CREAT:
        raise SyscallError(errno.ENOENT)
    if k.mem.cstring(path_addr).endswith(b"/"):
        raise SyscallError(errno.EISDIR)  # O_CREAT makes files, not directories
    parent = _tmp_parent(k, r)
    node = TmpFile(k.ns.tmp.new_ino(), mode & 0o7777 & ~k.umask)
    if shared_name:
        shmtree.named(k, r.name, node)
    parent.add(r.name, node)
    entry_event(k, parent, r.name, node, IN_CREATE)
    return node


def _shared_file(r: Resolved, flags: int) -> bool:
    """Does open find or make a regular file of a shared /tmp (sharedtmp.py)?"""
    if r.opened is not None or flags & O_PATH:
        return False
    if r.node is None:
        return sharedtmp.holds(r.parent)
    return sharedtmp.holds(r.node) and st.S_ISREG(r.node.mode)


def _open(k: Kernel, dirfd: int, path_addr: int, flags: int, mode: int) -> int:
    flags &= 0xFFFFFFFF
    if flags & O_TMPFILE == O_TMPFILE:
        return _open_tmpfile(k, dirfd, path_addr, flags, mode)
    r = _resolve_at(k, dirfd, path_addr, follow=not flags & O_NOFOLLOW)
    assert isinstance(r, Resolved)
    node = r.node
    writable = flags & O_ACCMODE != O_RDONLY
    if _shared_file(r, flags):
        if node is None and flags & O_CREAT and k.mem.cstring(path_addr).endswith(b"/"):
            raise SyscallError(errno.EISDIR)
        f = sharedtmp.open_file(k, r.parent, r.name, flags, mode)
        return k.fds.install(f, cloexec=bool(flags & O_CLOEXEC))
    if node is None:
        node = _create(k, r, path_addr, flags, mode)
    elif flags & O_CREAT and flags & O_EXCL:
        raise SyscallError(errno.EEXIST)
    if node.is_symlink:
        raise SyscallError(errno.ELOOP)
    if flags & O_DIRECTORY and not node.is_dir:
        raise SyscallError(errno.ENOTDIR)
    f: OpenFile
    path = r.path if r.opened is None else r.opened.path
    if isinstance(node, DeviceNode):
        f = node.open(flags)  # type: ignore[assignment]
    elif isinstance(node, (PtmxNode, PtsNode)):
        f = node.open(k, flags)
    elif node.is_dir:
        if writable:
            raise SyscallError(errno.EISDIR)
        f = DirFile(node, flags, path, r.parent or node, k.ns.children(path, node))
    elif isinstance(node, (ImageNode, HostNode, StaticFile)):
        if writable or flags & O_TRUNC:
            raise SyscallError(errno.EROFS)
        f = ImageFile(node, flags, path)
    elif isinstance(node, ProcNode):
        if writable or flags & O_TRUNC:
            raise SyscallError(errno.EACCES)
        f = ProcOpenFile(node, flags, path, node.render(k))
    elif isinstance(node, TmpFile):
        f = TmpOpenFile(node, flags, path, k.ns.tmp)
        if r.parent is not None:
            entry_event(k, r.parent, r.name, node, IN_OPEN)
        if flags & O_TRUNC and writable:
            f.truncate(0)
    elif isinstance(node, TmpFifo) and not flags & O_PATH:
        return open_fifo(k, node, path, flags, route)
    elif sharedtmp.holds(node) and st.S_ISFIFO(node.mode) and not flags & O_PATH:
        return open_fifo(k, sharedtmp.fifo(k, node), path, flags, route)
    elif flags & O_PATH:
        f = OpenFile(node, flags, path)
    elif r.opened is not None:
        f = r.opened.reopen(flags)  # a pipe, socket or capture named by /proc/self/fd
    else:
        raise SyscallError(errno.ENXIO)
    return k.fds.install(f, cloexec=bool(flags & O_CLOEXEC))


def sys_open(k: Kernel, path: int, flags: int, mode: int, *_: int) -> int:
    return _open(k, AT_FDCWD, path, flags, mode)


def sys_openat(k: Kernel, dirfd: int, path: int, flags: int, mode: int, *_: int) -> int:
    return _open(k, dirfd, path, flags, mode)


def sys_creat(k: Kernel, path: int, mode: int, *_: int) -> int:
    return _open(k, AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode)


def sys_close(k: Kernel, fd: int, *_: int) -> int:
    k.fds.close(s32(fd))
    return 0


def sys_close_range(k: Kernel, first: int, last: int, flags: int, *_: int) -> int:
    """Close (or, with CLOSE_RANGE_CLOEXEC, mark close-on-exec) fds first..last."""
    CLOSE_RANGE_UNSHARE, CLOSE_RANGE_CLOEXEC = 2, 4
    first, last = first & 0xFFFFFFFF, last & 0xFFFFFFFF
    if flags & ~(CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC) or first > last:
        raise SyscallError(errno.EINVAL)
    for fd in [fd for fd in k.fds.files if first <= fd <= last]:
        if flags & CLOSE_RANGE_CLOEXEC:
            k.fds.cloexec.add(fd)
        else:
            k.fds.close(fd)
    return 0


def sys_dup(k: Kernel, fd: int, *_: int) -> int:
    return k.fds.install(k.fds.get(s32(fd)))


def sys_dup2(k: Kernel, old: int, new: int, *_: int) -> int:
    f = k.fds.get(s32(old))
    if s32(old) != s32(new):
        k.fds.install_at(s32(new), f)
    return s32(new)


def sys_dup3(k: Kernel, old: int, new: int, flags: int, *_: int) -> int:
    if s32(old) == s32(new) or flags & ~O_CLOEXEC:
        raise SyscallError(errno.EINVAL)
    k.fds.install_at(s32(new), k.fds.get(s32(old)))
    if flags & O_CLOEXEC:
        k.fds.cloexec.add(s32(new))
    return s32(new)


# -- reading and writing ---------------------------------------------------------


def sys_read(k: Kernel, fd: int, buf: int, count: int, *_: int) -> int:
    f = k.fds.get(s32(fd))
    count = min(count, MAX_IO)
    dest = k.mem.slice(buf, count, write=True)
    data = f.read(count)
    n = len(data)
    dest[:n] = data
    return n


def fsize_room(k: Kernel, f: OpenFile, count: int, at: int | None = None) -> int:
    """How much of a write of `count` bytes at `at` (None: where f writes next) RLIMIT_FSIZE
    lets through, as Linux applies it to regular files: one reaching past the soft limit is
    cut short at it, one that starts there or beyond is EFBIG (with SIGXFSZ)."""
    if not count or not f.writable or not st.S_ISREG(f.node.mode):
        return count
    limit = soft_limit(k, RLIMIT_FSIZE)
    if at is None:
        at = f.node.size if f.flags & O_APPEND else f.offset
    if at + count <= limit:
        return count
    if at >= limit:
        raise file_too_big(k)
    return limit - at


def sys_write(k: Kernel, fd: int, buf: int, count: int, *_: int) -> int:
    f = k.fds.get(s32(fd))
    count = fsize_room(k, f, min(count, MAX_IO))
    with sigpipe_on_epipe(k):
        return f.write(k.mem.slice(buf, count))


def sys_pread64(k: Kernel, fd: int, buf: int, count: int, offset: int, *_: int) -> int:
    f = k.fds.get(s32(fd))
    if not f.readable:
        raise SyscallError(errno.EBADF)
    count = min(count, MAX_IO)
    check_io_range(s64(offset), count)
    dest = k.mem.slice(buf, count, write=True)
    data = f.read_at(offset, count)
    dest[: len(data)] = data
    return len(data)


def sys_pwrite64(k: Kernel, fd: int, buf: int, count: int, offset: int, *_: int) -> int:
    f = k.fds.get(s32(fd))
    if not f.writable:
        raise SyscallError(errno.EBADF)
    count = min(count, MAX_IO)
    check_io_range(s64(offset), count)
    return f.write_at(offset, k.mem.slice(buf, fsize_room(k, f, count, offset)))


def sys_readv(k: Kernel, fd: int, iov: int, iovcnt: int, *_: int) -> int:
    f = k.fds.get(s32(fd))
    total = 0
    for base, length in k.mem.iovecs(iov, s32(iovcnt)):
        dest = k.mem.slice(base, length, write=True)
        try:
            data = f.read(length)
        except (Block, SyscallError):
            if total:
                break  # what was read is returned; the wait or error comes next call
            raise
        dest[: len(data)] = data
        total += len(data)
        if len(data) < length:
            break
    return total


def sys_writev(k: Kernel, fd: int, iov: int, iovcnt: int, *_: int) -> int:
    f = k.fds.get(s32(fd))
    vectors = k.mem.iovecs(iov, s32(iovcnt))
    room = fsize_room(k, f, sum(length for _, length in vectors))
    total = 0
    for base, whole in vectors:
        length = min(whole, room - total)
        try:
            with sigpipe_on_epipe(k):
                n = f.write(k.mem.slice(base, length))
        except (Block, SyscallError):
            if total:
                break  # a short write, as Linux's when the pipe or socket fills
            raise
        total += n
        if n < whole:
            break
    return total


def sys_sendfile(k: Kernel, out_fd: int, in_fd: int, offset_addr: int, count: int,
                 *_: int) -> int:
    """Copy from in_fd (at *offset_addr if given, else at its offset) to out_fd."""
    src, dst = k.fds.get(s32(in_fd)), k.fds.get(s32(out_fd))
    if not src.readable or not dst.writable or src.node.is_dir:
        raise SyscallError(errno.EBADF)
    offset = file_offset(k, src, offset_addr)
    count, done = fsize_room(k, dst, min(count, MAX_IO)), 0
    while done < count:
        data = src.read_at(offset + done, min(count - done, SENDFILE_CHUNK))
        if not data:
            break
        with sigpipe_on_epipe(k):
            n = dst.write(memoryview(data))
        done += n
        if n < len(data):
            break
    moved_offset(k, src, offset_addr, offset + done)
    return done


def file_offset(k: Kernel, f: OpenFile, addr: int) -> int:
    """Where a copy reads or writes f: at *addr if given (then f's offset stays), else f's."""
    offset = s64(k.mem.u64(addr)) if addr else f.offset
    if offset < 0:
        raise SyscallError(errno.EINVAL)
    return offset


def moved_offset(k: Kernel, f: OpenFile, addr: int, offset: int) -> None:
    """After a copy: *addr, or f's own offset, is `offset` now."""
    if addr:
        k.mem.put_u64(addr, offset)
    else:
        f.offset = offset


def sys_copy_file_range(k: Kernel, fd_in: int, off_in: int, fd_out: int, off_out: int,
                        length: int, flags: int) -> int:
    """Copy between two regular files in the monitor (no reflinks: the bytes are copied)."""
    src, dst = k.fds.get(s32(fd_in)), k.fds.get(s32(fd_out))
    if flags:
        raise SyscallError(errno.EINVAL)
    if not src.readable or not dst.writable or dst.flags & O_APPEND:
        raise SyscallError(errno.EBADF)
    if src.node.is_dir or dst.node.is_dir:
        raise SyscallError(errno.EISDIR)
    if not (st.S_ISREG(src.node.mode) and st.S_ISREG(dst.node.mode)):
        raise SyscallError(errno.EINVAL)
    start, at = file_offset(k, src, off_in), file_offset(k, dst, off_out)
    length = min(length, MAX_IO)
    check_io_range(at, length)
    if src.node is dst.node and start < at + length and at < start + length:
        raise SyscallError(errno.EINVAL)  # overlapping ranges of one file
    length = fsize_room(k, dst, length, at)
    done = 0
    while done < length:
        data = src.read_at(start + done, min(length - done, SENDFILE_CHUNK))
        if not data:
            break
        done += dst.write_at(at + done, memoryview(data))
    moved_offset(k, src, off_in, start + done)
    moved_offset(k, dst, off_out, at + done)
    return done


def sys_lseek(k: Kernel, fd: int, offset: int, whence: int, *_: int) -> int:
    f = k.fds.get(s32(fd))
    if st.S_ISCHR(f.node.mode):
        return 0
    return f.seek(s64(offset), s32(whence))


def sys_getdents64(k: Kernel, fd: int, buf: int, count: int, *_: int) -> int:
    f = k.fds.get(s32(fd))
    if not isinstance(f, DirFile):
        raise SyscallError(errno.ENOTDIR)
    data = f.getdents(count)
    k.mem.write(buf, data)
    return len(data)


def sys_ftruncate(k: Kernel, fd: int, length: int, *_: int) -> int:
    f = k.fds.get(s32(fd))
    if isinstance(f.node, ImageNode):
        raise SyscallError(errno.EINVAL)
    if s64(length) > soft_limit(k, RLIMIT_FSIZE):
        raise file_too_big(k)
    f.truncate(s64(length))
    return 0


def sys_fallocate(k: Kernel, fd: int, mode: int, offset: int, length: int, *_: int) -> int:
    f = k.fds.get(s32(fd))
    mode, offset, length = s32(mode), s64(offset), s64(length)
    if offset < 0 or length <= 0:
        raise SyscallError(errno.EINVAL)
    if not f.writable:
        raise SyscallError(errno.EBADF)
    if st.S_ISFIFO(f.node.mode) or st.S_ISSOCK(f.node.mode):
        raise SyscallError(errno.ESPIPE)
    if not isinstance(f, (TmpOpenFile, sharedtmp.SharedOpenFile)):
        raise SyscallError(errno.ENODEV)
    if mode == 0 and offset + length > soft_limit(k, RLIMIT_FSIZE):
        raise file_too_big(k)
    f.allocate(mode, offset, length)
    return 0


def sys_truncate(k: Kernel, path: int, length: int, *_: int) -> int:
    r = _resolve_at(k, AT_FDCWD, path)
    assert isinstance(r, Resolved)
    if r.node is None:
        raise SyscallError(errno.ENOENT)
    if not isinstance(r.node, TmpFile) and not sharedtmp.holds(r.node):
        raise SyscallError(errno.EISDIR if r.node.is_dir else errno.EROFS)
    if s64(length) > soft_limit(k, RLIMIT_FSIZE):
        raise file_too_big(k)
    if sharedtmp.holds(r.node):
        sharedtmp.truncate(r.node, s64(length))
    else:
        truncate_tmp(r.node, s64(length), k.ns.tmp)
    return 0


def sys_fsync(k: Kernel, fd: int, *_: int) -> int:
    k.fds.get(s32(fd))
    return 0


def sys_fadvise64(k: Kernel, fd: int, *_: int) -> int:
    k.fds.get(s32(fd))
    return 0


# -- metadata ------------------------------------------------------------------


def _stat_into(k: Kernel, target: Resolved | OpenFile, statbuf: int) -> int:
    node = target.node
    if node is None:
        raise SyscallError(errno.ENOENT)
    k.mem.write(statbuf, node.pack_stat())
    return 0


def sys_stat(k: Kernel, path: int, statbuf: int, *_: int) -> int:
    return _stat_into(k, _resolve_at(k, AT_FDCWD, path), statbuf)


def sys_lstat(k: Kernel, path: int, statbuf: int, *_: int) -> int:
    return _stat_into(k, _resolve_at(k, AT_FDCWD, path, follow=False), statbuf)


def sys_fstat(k: Kernel, fd: int, statbuf: int, *_: int) -> int:
    return _stat_into(k, k.fds.get(s32(fd)), statbuf)


def sys_newfstatat(k: Kernel, dirfd: int, path: int, statbuf: int, flags: int, *_: int) -> int:
    target = _resolve_at(
        k, dirfd, path, follow=not flags & AT_SYMLINK_NOFOLLOW, empty_ok=bool(flags & AT_EMPTY_PATH)
    )
    return _stat_into(k, target, statbuf)


def _access(k: Kernel, dirfd: int, path: int, mode: int, flags: int) -> int:
    r = _resolve_at(k, dirfd, path, follow=not flags & AT_SYMLINK_NOFOLLOW)
    assert isinstance(r, Resolved)
    if r.node is None:
        raise SyscallError(errno.ENOENT)
    # Writable: the tmpfs, devices, and nameless nodes (pipes, sockets, the captures).
    if mode & W_OK and type(r.node) is not Node and \
            not isinstance(r.node, (TmpFile, TmpDir, DeviceNode, PtmxNode, PtsNode)) and \
            not sharedtmp.holds(r.node):
        raise SyscallError(errno.EROFS)
    if mode & X_OK and not r.node.mode & 0o111:
        raise SyscallError(errno.EACCES)
    return 0


def sys_access(k: Kernel, path: int, mode: int, *_: int) -> int:
    return _access(k, AT_FDCWD, path, mode, 0)


def sys_faccessat(k: Kernel, dirfd: int, path: int, mode: int, *_: int) -> int:
    return _access(k, dirfd, path, mode, 0)


def sys_faccessat2(k: Kernel, dirfd: int, path: int, mode: int, flags: int, *_: int) -> int:
    return _access(k, dirfd, path, mode, flags)


def _readlink(k: Kernel, dirfd: int, path: int, buf: int, size: int) -> int:
    if s32(size) <= 0:
        raise SyscallError(errno.EINVAL)
    r = _resolve_at(k, dirfd, path, follow=False)
    assert isinstance(r, Resolved)
    if r.node is None:
        raise SyscallError(errno.ENOENT)
    target = r.node.readlink().encode("utf-8", "surrogateescape")[:size]
    k.mem.write(buf, target)
    return len(target)


def sys_readlink(k: Kernel, path: int, buf: int, size: int, *_: int) -> int:
    return _readlink(k, AT_FDCWD, path, buf, size)


def sys_readlinkat(k: Kernel, dirfd: int, path: int, buf: int, size: int, *_: int) -> int:
    return _readlink(k, dirfd, path, buf, size)


def sys_getcwd(k: Kernel, buf: int, size: int, *_: int) -> int:
    # Paths are bytes held as surrogateescape str: a non-UTF-8 name comes back unchanged.
    cwd = k.ns.cwd.encode("utf-8", "surrogateescape") + b"\0"
    if size < len(cwd):
        raise SyscallError(errno.ERANGE)
    k.mem.write(buf, cwd)
    return len(cwd)


def sys_chdir(k: Kernel, path: int, *_: int) -> int:
    k.ns.chdir(k.mem.path(path))
    return 0


def sys_fchdir(k: Kernel, fd: int, *_: int) -> int:
    f = k.fds.get(s32(fd))
    if not f.node.is_dir:
        raise SyscallError(errno.ENOTDIR)
    k.ns.cwd = f.path
    return 0


def sys_umask(k: Kernel, mask: int, *_: int) -> int:
    old, k.umask = k.umask, mask & 0o777
    return old


# -- changing the tmpfs ----------------------------------------------------------


def _mkdir(k: Kernel, dirfd: int, path: int, mode: int) -> int:
    r = _resolve_at(k, dirfd, path, follow=False)
    assert isinstance(r, Resolved)
    if r.node is not None:
        raise SyscallError(errno.EEXIST)
    if sharedtmp.holds(r.parent):
        sharedtmp.mkdir(k, r.parent, r.name, mode)
        return 0
    parent = _tmp_parent(k, r)
    made = parent.add(r.name, TmpDir(k.ns.tmp.new_ino(), mode & 0o7777 & ~k.umask))
    entry_event(k, parent, r.name, made, IN_CREATE)
    return 0


def sys_mkdir(k: Kernel, path: int, mode: int, *_: int) -> int:
    return _mkdir(k, AT_FDCWD, path, mode)


def sys_mkdirat(k: Kernel, dirfd: int, path: int, mode: int, *_: int) -> int:
    return _mkdir(k, dirfd, path, mode)


def _unlink(k: Kernel, dirfd: int, path: int, flags: int) -> int:
    r = _resolve_at(k, dirfd, path, follow=False)
    assert isinstance(r, Resolved)
    if r.node is None:
        raise SyscallError(errno.ENOENT)
    if sharedtmp.holds(r.parent):
        last = _last_part(k, path)
        if flags & AT_REMOVEDIR and last in (b".", b".."):
            raise SyscallError(errno.EINVAL if last == b"." else errno.ENOTEMPTY)
        sharedtmp.remove(r.parent, r.name, directory=bool(flags & AT_REMOVEDIR))
        return 0
    parent = _tmp_parent(k, r)
    if flags & AT_REMOVEDIR:
        if not isinstance(r.node, TmpDir):
            raise SyscallError(errno.ENOTDIR)
        last = _last_part(k, path)
        if last in (b".", b".."):
            raise SyscallError(errno.EINVAL if last == b"." else errno.ENOTEMPTY)
        if r.node.entries:
            raise SyscallError(errno.ENOTEMPTY)
    elif r.node.is_dir:
        raise SyscallError(errno.EISDIR)
    node = parent.entries.pop(r.name)
    k.ns.tmp.drop_link(node)
    wait = shmtree.unlinked(k, r.name, route) if shmtree.in_tree(k, parent) else None
    removed(k, node, last=not isinstance(node, TmpFile) or node.links == 0)
    entry_event(k, parent, r.name, node, IN_DELETE)
    if wait is not None:
        raise wait  # done here; it returns 0 once the name is gone in its holder too
    return 0


def sys_unlink(k: Kernel, path: int, *_: int) -> int:
    return _unlink(k, AT_FDCWD, path, 0)


def sys_rmdir(k: Kernel, path: int, *_: int) -> int:
    return _unlink(k, AT_FDCWD, path, AT_REMOVEDIR)


def sys_unlinkat(k: Kernel, dirfd: int, path: int, flags: int, *_: int) -> int:
    return _unlink(k, dirfd, path, flags)


def _last_part(k: Kernel, path_addr: int) -> bytes:
    """The path's last component as written: Linux refuses "." and ".." before resolving."""
    return k.mem.cstring(path_addr).rstrip(b"/").rpartition(b"/")[2]


def _replaceable(src: Node, dst: Node | None, noreplace: bool) -> None:
    """May rename put src where dst is? Linux's errors if not: a directory only over an
    empty directory, a file only over a non-directory."""
    if dst is None:
        return
    if noreplace:
        raise SyscallError(errno.EEXIST)
    if dst.is_dir and not src.is_dir:
        raise SyscallError(errno.EISDIR)
    if src.is_dir and not dst.is_dir:
        raise SyscallError(errno.ENOTDIR)
    if isinstance(dst, TmpDir) and dst.entries:
        raise SyscallError(errno.ENOTEMPTY)


def _rename(k: Kernel, olddir: int, old: int, newdir: int, new: int,
            noreplace: bool = False) -> int:
    if _last_part(k, old) in (b".", b"..") or _last_part(k, new) in (b".", b".."):
        raise SyscallError(errno.EBUSY)
    src = _resolve_at(k, olddir, old, follow=False)
    dst = _resolve_at(k, newdir, new, follow=False)
    assert isinstance(src, Resolved) and isinstance(dst, Resolved)
    if src.node is None:
        raise SyscallError(errno.ENOENT)
    if sharedtmp.holds(src.parent) or sharedtmp.holds(dst.parent):
        if not (sharedtmp.holds(src.parent) and sharedtmp.holds(dst.parent)):
            raise SyscallError(errno.EXDEV)  # another file system, as /dev/shm is on Linux
        sharedtmp.rename(src.parent, src.name, dst.parent, dst.name, noreplace)
        return 0
    src_parent, dst_parent = _tmp_parent(k, src), _tmp_parent(k, dst)
    if src_parent.dev != dst_parent.dev:
        raise SyscallError(errno.EXDEV)  # /tmp and /dev/shm, two filesystems
    if dst.node is src.node:
        return 0  # two names of one file (or the same name): Linux changes nothing
    _replaceable(src.node, dst.node, noreplace)
    if dst.path.startswith(src.path + "/"):
        raise SyscallError(errno.EINVAL)
    if shmtree.in_tree(k, dst_parent):
        shmtree.named(k, dst.name, src.node)
    node = src_parent.entries.pop(src.name)
    wait = shmtree.unlinked(k, src.name, route) if shmtree.in_tree(k, src_parent) else None
    old = dst_parent.entries.get(dst.name)
    if old is not None:
        k.ns.tmp.drop_link(old)
    dst_parent.entries[dst.name] = node
    moved(k, (src_parent, src.name), (dst_parent, dst.name), node)
    if old is not None:
        removed(k, old, last=not isinstance(old, TmpFile) or old.links == 0)
    if wait is not None:
        raise wait  # done here; it returns 0 once the old name is gone in its holder too
    return 0


def sys_rename(k: Kernel, old: int, new: int, *_: int) -> int:
    return _rename(k, AT_FDCWD, old, AT_FDCWD, new)


def sys_renameat(k: Kernel, olddir: int, old: int, newdir: int, new: int, *_: int) -> int:
    return _rename(k, olddir, old, newdir, new)


def sys_renameat2(k: Kernel, olddir: int, old: int, newdir: int, new: int, flags: int,
                  *_: int) -> int:
    if flags & ~RENAME_NOREPLACE:
        raise SyscallError(errno.EINVAL)
    return _rename(k, olddir, old, newdir, new, noreplace=bool(flags & RENAME_NOREPLACE))


# -- control --------------------------------------------------------------------


def sys_fcntl(k: Kernel, fd: int, cmd: int, arg: int, *_: int) -> int:
    fd, cmd = s32(fd), s32(cmd)
    f = k.fds.get(fd)
    if cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
        return k.fds.install(f, lowest=s32(arg), cloexec=cmd == F_DUPFD_CLOEXEC)
    if cmd == F_GETFD:
        return FD_CLOEXEC if fd in k.fds.cloexec else 0
    if cmd == F_SETFD:
        (k.fds.cloexec.add if arg & FD_CLOEXEC else k.fds.cloexec.discard)(fd)
        return 0
    if cmd == F_GETFL:
        return f.flags & ~O_CLOEXEC
    if cmd == F_SETFL:
        changeable = O_APPEND | O_NONBLOCK
        f.flags = (f.flags & ~changeable) | (arg & changeable)
        if isinstance(f, sharedtmp.SharedOpenFile):
            f.set_append(bool(arg & O_APPEND))
        return 0
    if cmd in RECORD_LOCKS and isinstance(f, sharedtmp.SharedOpenFile):
        return _host_lock(k, f, cmd, arg)
    if cmd == F_GETLK:
        # One process holds every lock, and its own never conflict: nothing would block
        # (SQLite's WAL mode asks before it resets its shared-memory index).
        k.mem.write(arg, F_UNLCK.to_bytes(2, "little"))  # struct flock's l_type
        return 0
    if cmd in (F_SETLK, F_SETLKW):
        return 0  # one process: every lock is granted
    if cmd in (F_SETPIPE_SZ, F_GETPIPE_SZ):
        return f.pipe_size(arg & 0xFFFFFFFF if cmd == F_SETPIPE_SZ else None)
    if cmd == F_GET_SEALS:
        return f.seals()
    if cmd == F_ADD_SEALS:
        f.add_seals(arg & 0xFFFFFFFF, any(m.node is f.node for m in k.mm.shared))
        return 0
    raise SyscallError(errno.EINVAL)


def _host_lock(k: Kernel, f: sharedtmp.SharedOpenFile, cmd: int, arg: int) -> int:
    """A record or OFD lock on a shared /tmp file: the host's, between the processes of the
    tree as on Linux. A waiting one (F_SETLKW, F_OFD_SETLKW) tries F_SETLK every
    sharedtmp.LOCK_POLL until it is granted or a signal comes (EINTR)."""
    wait = cmd in (F_SETLKW, F_OFD_SETLKW)
    host_cmd = {F_SETLKW: F_SETLK, F_OFD_SETLKW: F_OFD_SETLK}.get(cmd, cmd)
    flock = k.mem.read(arg, FLOCK.size)
    try:
        result = f.lock(host_cmd, bytes(flock))
    except SyscallError as e:
        if wait and e.errno in (errno.EAGAIN, errno.EACCES):
            raise sharedtmp.lock_wait(k) from None
        raise
    if cmd in (F_GETLK, F_OFD_GETLK):
        k.mem.write(arg, _guest_holder(k, result))
    return 0


def _guest_holder(k: Kernel, flock: bytes) -> bytes:
    """F_GETLK's answer with the holder's guest pid for the host's pid of its monitor (this
    process's or a child's; another's is not known here: 0)."""
    kind, whence, start, length, host_pid = FLOCK.unpack(flock)
    if kind == F_UNLCK or host_pid <= 0:
        return flock
    pids = {os.getpid(): k.identity.pid,
            **{c.host_pid: pid for pid, c in k.children.running.items()}}
    return FLOCK.pack(kind, whence, start, length, pids.get(host_pid, 0))


def sys_ioctl(k: Kernel, fd: int, request: int, arg: int, *_: int) -> int:
    f = k.fds.get(s32(fd))
    request &= 0xFFFFFFFF
    if request == FIONBIO:  # CPython's setblocking() on a socket
        f.flags = f.flags | O_NONBLOCK if k.mem.u32(arg) else f.flags & ~O_NONBLOCK
        return 0
    if request in (FIOCLEX, FIONCLEX):  # CPython's os.set_inheritable()
        (k.fds.cloexec.add if request == FIOCLEX else k.fds.cloexec.discard)(s32(fd))
        return 0
    return f.ioctl(k, request, arg)

