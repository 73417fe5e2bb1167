"""Open file descriptions and the fd table."""

from __future__ import annotations

import errno
import os
import stat as st
import struct
import time
from typing import TYPE_CHECKING

from usetl.vm.layout import PAGE_SIZE

from .errors import SyscallError
from .fs import (
    F_SEAL_ALL,
    F_SEAL_EXEC,
    F_SEAL_FUTURE_WRITE,
    F_SEAL_GROW,
    F_SEAL_SEAL,
    F_SEAL_SHRINK,
    F_SEAL_WRITE,
    IN_ACCESS,
    IN_CLOSE_NOWRITE,
    IN_CLOSE_WRITE,
    IN_MODIFY,
    ImageNode,
    Node,
    StaticFile,
    TmpFile,
    TmpFS,
    dirent_type,
)
from .sched import WaitQueue

if TYPE_CHECKING:
    from .clock import Deadline
    from .kernel import Kernel
    from .sched import Scheduler

O_ACCMODE = 3
O_RDONLY, O_WRONLY, O_RDWR = 0, 1, 2
O_CREAT, O_EXCL, O_NOCTTY, O_TRUNC, O_APPEND = 0o100, 0o200, 0o400, 0o1000, 0o2000
O_NONBLOCK = 0o4000
O_DIRECTORY, O_NOFOLLOW, O_CLOEXEC = 0o200000, 0o400000, 0o2000000
O_PATH = 0o10000000
O_TMPFILE = 0o20000000 | O_DIRECTORY

SEEK_SET, SEEK_CUR, SEEK_END, SEEK_DATA, SEEK_HOLE = 0, 1, 2, 3, 4
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2
READY_ALWAYS = 0x1 | 0x4 | 0x40 | 0x100  # POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM
MAX_FDS = 1024
MAX_OFFSET = (1 << 63) - 1  # Linux's MAX_LFS_FILESIZE: the largest offset, signed


def check_io_range(offset: int, length: int) -> None:
    """Linux's rw_verify_area: an I/O range that ends past MAX_OFFSET is EINVAL."""
    if offset < 0 or offset + length > MAX_OFFSET:
        raise SyscallError(errno.EINVAL)


class OpenFile:
    """An open file description: a node, an offset and the open flags."""

    def __init__(self, node: Node, flags: int, path: str):
        self.node = node
        self.flags = flags
        self.path = path
        self.offset = 0

    @property
    def readable(self) -> bool:
        return self.flags & O_ACCMODE in (O_RDONLY, O_RDWR) and not self.flags & O_PATH

    @property
    def writable(self) -> bool:
        return self.flags & O_ACCMODE in (O_WRONLY, O_RDWR)

    # Subclasses override what they support; the rest is the errno Linux gives.
    def read_at(self, offset: int, length: int) -> bytes | memoryview:
        raise SyscallError(errno.EISDIR if self.node.is_dir else errno.EINVAL)

    def write_at(self, offset: int, data: memoryview) -> int:
        raise SyscallError(errno.EBADF)

    def read(self, length: int) -> bytes | memoryview:
        if not self.readable:
            raise SyscallError(errno.EBADF)
        check_io_range(self.offset, length)
        data = self.read_at(self.offset, length)
        self.offset += len(data)
        return data

    def write(self, data: memoryview) -> int:
        if not self.writable:
            raise SyscallError(errno.EBADF)
        if self.flags & O_APPEND:
            self.offset = self.node.size
        check_io_range(self.offset, len(data))
        n = self.write_at(self.offset, data)
        self.offset += n
        return n

    def seek(self, offset: int, whence: int) -> int:
        if whence == SEEK_SET:
            new = offset
        elif whence == SEEK_CUR:
            new = self.offset + offset
        elif whence == SEEK_END:
            new = self.node.size + offset
        elif whence in (SEEK_DATA, SEEK_HOLE) and st.S_ISREG(self.node.mode):
            if not 0 <= offset < self.node.size:
                raise SyscallError(errno.ENXIO)
            new = self.node.seek_data(offset, whence == SEEK_DATA)
        else:
            raise SyscallError(errno.EINVAL)
        if not 0 <= new <= MAX_OFFSET:  # past it the result would read as an errno
            raise SyscallError(errno.EINVAL)
        self.offset = new
        return new

    def truncate(self, length: int) -> None:
        raise SyscallError(errno.EINVAL)

    def isatty(self) -> bool:
        return False

    def map_device(self, length: int, prot: int, flags: int, offset: int) -> int:
        """mmap of a device: the guest address of its memory (devices that have some)."""
        raise SyscallError(errno.ENODEV)

    def ioctl(self, k: Kernel, request: int, arg: int) -> int:
        """A device's own ioctl requests (the generic ones are served by sys_ioctl)."""
        raise SyscallError(errno.ENOTTY)

    # Readiness, for poll, select and epoll. A file the monitor holds is ready
    # now or wakes its wait_queues() when it may have become so; a proxied
    # socket is asked on the host (host_fd).
    generation = 0  # changes counted for epoll's edge triggering (where the file counts them)

    def poll(self) -> int:
        """The poll events it is ready for: regular files and devices always are."""
        return READY_ALWAYS

    def wait_queues(self) -> tuple:
        return ()

    def ready_at(self) -> Deadline | None:
        """When it becomes ready by time alone (a timerfd), if it does: a wait watching it
        is timed to then."""
        return None

    def host_fd(self) -> int | None:
        """The host fd whose readiness is this file's (a proxied socket's), else None."""
        return None

    def host_fds(self) -> tuple[int, ...]:
        """Every host fd it holds: a forked copy or a program given it keeps them."""
        fd = self.host_fd()
        return () if fd is None else (fd,)

    def ready_from_host(self, revents: int) -> int:
        """Its poll events, from those of its host fd (host_fd)."""
        return revents

    def retarget(self, replaced: dict[int, OpenFile]) -> None:
        """Files this one refers to were replaced (id of the old -> the new file, as when a
        pipe becomes a host pipe for a child): refer to the new ones (an epoll's entries)."""

    def pipe_size(self, size: int | None) -> int:
        """F_GETPIPE_SZ (None) or F_SETPIPE_SZ: its pipe's capacity; EBADF if it is none."""
        raise SyscallError(errno.EBADF)

    def seals(self) -> int:
        """F_GET_SEALS: EINVAL but for a tmpfs file (a memfd)."""
        raise SyscallError(errno.EINVAL)

    def add_seals(self, seals: int, writably_mapped: bool) -> None:
        """F_ADD_SEALS; `writably_mapped`: the file has writable shared mappings."""
        raise SyscallError(errno.EINVAL)

    def reopen(self, flags: int) -> OpenFile:
        """A new open of this file through /proc/self/fd with `flags`, for files that have no
        name to open again (files that do are opened by their node): ENXIO, as Linux gives
        for a socket or an anonymous inode."""
        raise SyscallError(errno.ENXIO)

    def close(self) -> None:
        pass

    in_flight = 0  # SCM_RIGHTS messages holding it, not yet received: it stays open


class StreamFile(OpenFile):
    """A file with no offset (a pipe, a socket): pread, pwrite and lseek are ESPIPE."""

    def read_at(self, offset: int, length: int) -> bytes | memoryview:
        raise SyscallError(errno.ESPIPE)

    def write_at(self, offset: int, data: memoryview) -> int:
        raise SyscallError(errno.ESPIPE)

    def seek(self, offset: int, whence: int) -> int:
        raise SyscallError(errno.ESPIPE)


class ImageFile(OpenFile):
    """A read-only file: from the image, a host mount, or one the monitor wrote (StaticFile)."""

    node: ImageNode | StaticFile

    def read_at(self, offset: int, length: int) -> bytes | memoryview:
        if self.node.is_dir:
            raise SyscallError(errno.EISDIR)
        return self.node.read_at(offset, length)


class ProcOpenFile(OpenFile):
    """An open /proc or /sys file: the bytes its node rendered at open."""

    def __init__(self, node: Node, flags: int, path: str, data: bytes):
        super().__init__(node, flags, path)
        self.data = data

    def read_at(self, offset: int, length: int) -> bytes | memoryview:
        return memoryview(self.data)[offset : offset + length]


class TmpOpenFile(OpenFile):
    node: TmpFile

    def __init__(self, node: TmpFile, flags: int, path: str, tmpfs: TmpFS):
        super().__init__(node, flags, path)
        self.tmpfs = tmpfs

    def read_at(self, offset: int, length: int) -> bytes | memoryview:
        pages = self.node.pages
        if pages is not None:  # mapped shared: the mappings' stores are there
            data = pages.read(offset, min(length, self.node.size - offset))
        else:
            data = memoryview(self.node.data)[offset : offset + length]
        if len(data):
            self.tmpfs.file_changed(self, IN_ACCESS)
        return data

    def seals(self) -> int:
        return self.node.seals

    def add_seals(self, seals: int, writably_mapped: bool) -> None:
        """Linux's memfd_add_seals: on a writable open, sealing not sealed itself, and a
        write seal only while no shared mapping may write (EBUSY)."""
        node = self.node
        if not self.writable:
            raise SyscallError(errno.EPERM)
        if seals & ~F_SEAL_ALL:
            raise SyscallError(errno.EINVAL)
        if node.seals & F_SEAL_SEAL:
            raise SyscallError(errno.EPERM)
        if seals & F_SEAL_WRITE and not node.seals & F_SEAL_WRITE and writably_mapped:
            raise SyscallError(errno.EBUSY)
        if seals & F_SEAL_EXEC and node.mode & 0o111:
            seals |= F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE
        node.seals |= seals

    def _writable_length(self, offset: int, length: int) -> int:
        """How much of a write the seals let through: none under a write seal (EPERM);
        under F_SEAL_GROW, page by page as Linux writes, up to the page that would grow
        the file (EPERM if that is the first)."""
        seals = self.node.seals
        if seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE):
            raise SyscallError(errno.EPERM)
        if not seals & F_SEAL_GROW:
            return length
        n = 0
        while n < length:
            chunk = min(PAGE_SIZE - (offset + n) % PAGE_SIZE, length - n)
            if offset + n + chunk > self.node.size:
                break
            n += chunk
        if n == 0:
            raise SyscallError(errno.EPERM)
        return n

    def write_at(self, offset: int, data: memoryview) -> int:
        if self.node.seals & ~F_SEAL_SEAL:
            data = data[: self._writable_length(offset, len(data))]
        buf = self.node.data
        end = offset + len(data)
        if end > len(buf):
            self.tmpfs.charge(end - len(buf))
            self.node.make_hole(len(buf), offset)  # skipped
            buf.extend(bytes(end - len(buf)))
        buf[offset:end] = data
        self.node.fill(offset, end)
        if self.node.pages is not None:
            self.node.pages.write(offset, data)
        self.node.mtime_ns = time.time_ns()
        self.tmpfs.file_changed(self, IN_MODIFY)
        return len(data)

    def truncate(self, length: int) -> None:
        if not self.writable:
            raise SyscallError(errno.EINVAL)
        seals, size = self.node.seals, self.node.size
        if (length < size and seals & F_SEAL_SHRINK) or (length > size and seals & F_SEAL_GROW):
            raise SyscallError(errno.EPERM)
        truncate_tmp(self.node, length, self.tmpfs)
        self.tmpfs.file_changed(self, IN_MODIFY)

    def close(self) -> None:
        self.tmpfs.file_changed(self, IN_CLOSE_WRITE if self.writable else IN_CLOSE_NOWRITE)

    def allocate(self, mode: int, offset: int, length: int) -> None:
        """fallocate as tmpfs has it: mode 0 extends the file with zeros, KEEP_SIZE reserves
        (nothing to do in memory), KEEP_SIZE|PUNCH_HOLE zeroes the range within the file."""
        end = offset + length
        seals = self.node.seals
        if mode & FALLOC_FL_PUNCH_HOLE and seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE):
            raise SyscallError(errno.EPERM)
        if mode == 0 and end > self.node.size and seals & F_SEAL_GROW:
            raise SyscallError(errno.EPERM)
        if mode in (0, FALLOC_FL_KEEP_SIZE):
            if mode == 0 and end > self.node.size:
                truncate_tmp(self.node, end, self.tmpfs)
            self.node.allocate(offset, end)
        elif mode == FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE:
            end = min(end, self.node.size)
            if offset < end:
                self.node.data[offset:end] = bytes(end - offset)
                if self.node.pages is not None:
                    self.node.pages.zero(offset, end)
                self.node.make_hole(offset, end)
                self.node.mtime_ns = time.time_ns()
        else:
            raise SyscallError(errno.EOPNOTSUPP)


def truncate_tmp(node: TmpFile, length: int, tmpfs: TmpFS) -> None:
    if length < 0:
        raise SyscallError(errno.EINVAL)
    delta = length - len(node.data)
    if node.pages is not None:  # what a truncate cuts or adds reads as zero
        node.pages.zero(min(length, len(node.data)), max(length, len(node.data)))
    if delta > 0:
        tmpfs.charge(delta)
        node.make_hole(len(node.data), length)
        node.data.extend(bytes(delta))
    else:
        tmpfs.used += delta
        node.cut(length)
        del node.data[length:]
    node.mtime_ns = time.time_ns()


class DirFile(OpenFile):
    """An open directory: getdents64 walks a listing taken at open."""

    def __init__(self, node: Node, flags: int, path: str, parent: Node,
                 children: list[tuple[str, Node]]):
        super().__init__(node, flags, path)
        self.listing = [(".", node), ("..", parent), *children]

    def getdents(self, size: int) -> bytes:
        out = bytearray()
        while self.offset < len(self.listing):
            name, node = self.listing[self.offset]
            raw = name.encode("utf-8", "surrogateescape")
            reclen = (19 + len(raw) + 1 + 7) & ~7
            if len(out) + reclen > size:
                if not out:
                    raise SyscallError(errno.EINVAL)
                break
            rec = struct.pack("<QqHB", node.ino, self.offset + 1, reclen, dirent_type(node.mode))
            out += rec + raw + bytes(reclen - 19 - len(raw))
            self.offset += 1
        return bytes(out)

    def seek(self, offset: int, whence: int) -> int:
        if whence != SEEK_SET or offset < 0:
            raise SyscallError(errno.EINVAL)
        self.offset = offset
        return offset


class OutputFile(OpenFile):
    """stdout or stderr: captured by the monitor, up to `limit` bytes per invocation."""

    def __init__(self, node: Node, name: str, limit: int):
        super().__init__(node, O_WRONLY, name)
        self.buffer = bytearray()
        self.limit = limit
        self.truncated = False

    def write_at(self, offset: int, data: memoryview) -> int:
        room = self.limit - len(self.buffer)
        if room < len(data):
            self.truncated = True
        self.buffer += data[: max(room, 0)]
        return len(data)

    def reopen(self, flags: int) -> OpenFile:
        """/dev/stdout, /dev/stderr: the capture itself (it has no offset or state of its
        own to differ), for writing only."""
        if flags & O_ACCMODE != O_WRONLY:
            raise SyscallError(errno.EACCES)
        return self

    def take(self) -> tuple[bytes, bool]:
        data, truncated = bytes(self.buffer), self.truncated
        self.buffer.clear()
        self.truncated = False
        return data, truncated


class NullFile(OpenFile):
    def read_at(self, offset: int, length: int) -> bytes:
        return b""

    def write_at(self, offset: int, data: memoryview) -> int:
        return len(data)


class ZeroFile(NullFile):
    def read_at(self, offset: int, length: int) -> bytes:
        return bytes(min(length, 1 << 20))


class RandomFile(NullFile):
    def read_at(self, offset: int, length: int) -> bytes:
        return os.urandom(min(length, 1 << 20))


class FileLocks:
    """flock(2)'s locks on one file: held by open file descriptions (not fds, not threads),
    shared or exclusive; `queue` holds the callers waiting for one to go."""

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        self.holders: dict[OpenFile, bool] = {}  # open file description -> exclusive
        self.queue = WaitQueue()

    def conflicts(self, f: OpenFile, exclusive: bool) -> bool:
        others = [ex for holder, ex in self.holders.items() if holder is not f]
        return bool(others) and (exclusive or any(others))

    def release(self, f: OpenFile) -> None:
        if self.holders.pop(f, None) is not None:
            self.queue.wake(self.sched)


class FdTable:
    limit = MAX_FDS  # the soft RLIMIT_NOFILE: fds from it on cannot be made
    # flock(2)'s locks by file (dev, ino), made at the first flock (a rollback drops them
    # with the rest of the table's state)
    flocks: dict[tuple[int, int], FileLocks] | None = None

    def __init__(self) -> None:
        self.files: dict[int, OpenFile] = {}
        self.cloexec: set[int] = set()

    def get(self, fd: int) -> OpenFile:
        try:
            return self.files[fd]
        except KeyError:
            raise SyscallError(errno.EBADF) from None

    def install(self, f: OpenFile, lowest: int = 0, cloexec: bool = False) -> int:
        if not 0 <= lowest < self.limit:  # F_DUPFD's lower bound, checked as Linux does
            raise SyscallError(errno.EINVAL)
        fd = lowest
        while fd in self.files:
            fd += 1
        if fd >= self.limit:
            raise SyscallError(errno.EMFILE)
        self.files[fd] = f
        if cloexec:
            self.cloexec.add(fd)
        return fd

    def install_at(self, fd: int, f: OpenFile) -> None:
        if not 0 <= fd < self.limit:
            raise SyscallError(errno.EBADF)
        if fd in self.files:
            self.close(fd)
        self.files[fd] = f
        self.cloexec.discard(fd)

    def file_locks(self, node: Node, sched: Scheduler) -> FileLocks:
        if self.flocks is None:
            self.flocks = {}
        key = (node.dev, node.ino)
        if key not in self.flocks:
            self.flocks[key] = FileLocks(sched)
        return self.flocks[key]

    def _drop_locks(self, f: OpenFile) -> None:
        """The description is closed: its flock lock, if it holds one, goes."""
        if self.flocks and (locks := self.flocks.get((f.node.dev, f.node.ino))) is not None:
            locks.release(f)

    def close(self, fd: int) -> None:
        f = self.files.pop(fd, None)
        if f is None:
            raise SyscallError(errno.EBADF)
        self.cloexec.discard(fd)
        if f not in self.files.values() and not f.in_flight:
            self._drop_locks(f)
            f.close()

    def release(self, f: OpenFile) -> None:
        """A message in flight let go of f (received or dropped): closed if nothing holds it."""
        f.in_flight -= 1
        if not f.in_flight and f not in self.files.values():
            self._drop_locks(f)
            f.close()

