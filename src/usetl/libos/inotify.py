"""inotify: files that report changes to watched tmpfs files and directories, as Linux's.

A watch is on a node (a directory or a file of the tmpfs); an event about an
entry of a watched directory carries the entry's name, one about a watched
node itself none. The syscall layer reports what it changes through
`entry_event` and `node_event` (a cheap no-op while nothing watches); each
inotify file queues the struct inotify_event records its watches match,
merging one that repeats the last, and read, poll, select and epoll see them.
Events of other processes of the tree do not reach it (each has its copy of
/tmp), nor do changes made through shared mappings.
"""

from __future__ import annotations

import errno
import itertools
import struct
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import SyscallError
from .files import O_NONBLOCK, O_RDONLY, OpenFile
from .fs import Node, TmpDir
from .ipc import READABLE
from .sched import Block, WaitQueue

if TYPE_CHECKING:
    from .fs import TmpFS
    from .kernel import Kernel

IN_ATTRIB, IN_OPEN, IN_MOVED_FROM, IN_MOVED_TO = 0x4, 0x20, 0x40, 0x80
IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_MOVE_SELF = 0x100, 0x200, 0x400, 0x800
IN_Q_OVERFLOW, IN_IGNORED = 0x4000, 0x8000
IN_ALL_EVENTS = 0xFFF
IN_ONLYDIR, IN_DONT_FOLLOW, IN_EXCL_UNLINK = 0x1000000, 0x2000000, 0x4000000
IN_MASK_CREATE, IN_MASK_ADD, IN_ISDIR, IN_ONESHOT = 0x10000000, 0x20000000, 0x40000000, 0x80000000
WATCH_FLAGS = IN_ALL_EVENTS | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK | IN_MASK_CREATE \
    | IN_MASK_ADD | IN_ONESHOT
EVENT = struct.Struct("<iIII")  # wd, mask, cookie, len; then the name, NUL-padded
MAX_QUEUED = 16384  # /proc/sys/fs/inotify/max_queued_events
MAX_WATCHES = 8192  # /proc/sys/fs/inotify/max_user_watches, for one file here


@dataclass
class Watch:
    node: Node
    mask: int


class InotifyFile(OpenFile):
    """An open inotify instance: its watches by descriptor, and the events queued."""

    def __init__(self, kernel: Kernel, flags: int, ino: int):
        super().__init__(Node(0o600, ino), O_RDONLY | flags & O_NONBLOCK,  # anonymous inode
                         "anon_inode:inotify")
        self.kernel = kernel
        self.watches: dict[int, Watch] = {}
        self.next_wd = 1
        self.events: deque[bytes] = deque()
        self.queue = WaitQueue()
        self.generation = 0
        self.overflowed = False
        kernel.ns.tmp.watchers.append(self)

    def add_watch(self, node: Node, mask: int) -> int:
        if mask & ~WATCH_FLAGS or not mask & IN_ALL_EVENTS or \
                mask & IN_MASK_ADD and mask & IN_MASK_CREATE:
            raise SyscallError(errno.EINVAL)
        if mask & IN_ONLYDIR and not node.is_dir:
            raise SyscallError(errno.ENOTDIR)
        for wd, watch in self.watches.items():
            if watch.node is node:
                if mask & IN_MASK_CREATE:
                    raise SyscallError(errno.EEXIST)
                watch.mask = (watch.mask if mask & IN_MASK_ADD else 0) | mask & ~IN_MASK_ADD
                return wd
        if len(self.watches) >= MAX_WATCHES:
            raise SyscallError(errno.ENOSPC)
        wd, self.next_wd = self.next_wd, self.next_wd + 1
        self.watches[wd] = Watch(node, mask & ~(IN_MASK_ADD | IN_MASK_CREATE))
        return wd

    def rm_watch(self, wd: int) -> None:
        if self.watches.pop(wd, None) is None:
            raise SyscallError(errno.EINVAL)
        self._queue(wd, IN_IGNORED, 0, b"")

    def deliver(self, node: Node, mask: int, name: bytes, cookie: int) -> None:
        """An event about `node` (name: b"", the node itself; else its entry `name`)."""
        for wd, watch in list(self.watches.items()):
            if watch.node is not node or not watch.mask & mask & IN_ALL_EVENTS:
                continue
            self._queue(wd, mask, cookie, name)
            if watch.mask & IN_ONESHOT:
                self.rm_watch(wd)

    def entry(self, parent: Node | None, name: str, node: Node, mask: int,
              cookie: int) -> None:
        """An event about entry `name` of directory `parent` (None: not known), `node`."""
        flagged = mask | (IN_ISDIR if node.is_dir else 0)
        if parent is not None:
            self.deliver(parent, flagged, name.encode("utf-8", "surrogateescape"), cookie)
        if not mask & NAMING:
            self.deliver(node, flagged, b"", 0)

    def file_event(self, f: OpenFile, mask: int) -> None:
        """A content event (IN_MODIFY, IN_CLOSE_*) of open file f: its directory is the
        one its path names now, if that entry is still f's file."""
        directory, _, name = f.path.rpartition("/")
        try:
            parent = self.kernel.ns.resolve(directory or "/").node
        except SyscallError:
            parent = None
        if not isinstance(parent, TmpDir) or parent.entries.get(name) is not f.node:
            parent = None
        self.entry(parent, name, f.node, mask, 0)

    def gone(self, node: Node) -> None:
        """`node` is no more (its last link removed): its watches end with IN_IGNORED."""
        for wd, watch in list(self.watches.items()):
            if watch.node is node:
                self.rm_watch(wd)

    def _queue(self, wd: int, mask: int, cookie: int, name: bytes) -> None:
        size = (len(name) + 1 + 15) // 16 * 16 if name else 0  # NUL-terminated, aligned
        record = EVENT.pack(wd, mask, cookie, size) + name.ljust(size, b"\0")
        if self.events and self.events[-1] == record:
            return  # as Linux, an event repeating the last one unread is merged into it
        if len(self.events) >= MAX_QUEUED:
            if not self.overflowed:
                self.events.append(EVENT.pack(-1, IN_Q_OVERFLOW, 0, 0))
                self.overflowed = True
            return
        self.events.append(record)
        self.generation += 1
        self.queue.wake(self.kernel.sched)

    def read(self, length: int) -> bytes:
        if not self.events:
            if self.flags & O_NONBLOCK:
                raise SyscallError(errno.EAGAIN)
            raise Block((self.queue,), self.kernel.sched.deadline_after(None))
        if len(self.events[0]) > length:
            raise SyscallError(errno.EINVAL)  # too small for the first event
        out = bytearray()
        while self.events and len(out) + len(self.events[0]) <= length:
            out += self.events.popleft()
        self.overflowed = self.overflowed and bool(self.events)
        return bytes(out)

    def write(self, data: memoryview) -> int:
        raise SyscallError(errno.EINVAL)

    def read_at(self, offset: int, length: int) -> bytes:
        raise SyscallError(errno.ESPIPE)

    def ioctl(self, k: Kernel, request: int, arg: int) -> int:
        if request != FIONREAD:
            raise SyscallError(errno.ENOTTY)
        k.mem.put_u32(arg, sum(len(e) for e in self.events))
        return 0

    def poll(self) -> int:
        return READABLE if self.events else 0

    def wait_queues(self) -> tuple[WaitQueue, ...]:
        return (self.queue,)

    def close(self) -> None:
        watchers = self.kernel.ns.tmp.watchers
        if self in watchers:
            watchers.remove(self)


FIONREAD = 0x541B
NAMING = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO
_cookies = itertools.count(1)  # what ties a rename's IN_MOVED_FROM to its IN_MOVED_TO


def entry_event(k: Kernel, parent: Node, name: str, node: Node, mask: int,
                cookie: int = 0) -> None:
    """Something happened to entry `name` (now or until now `node`) of directory `parent`:
    the directory's watchers see it with the name; a content event (not a name made,
    moved or removed) the node's own watchers see too, without one."""
    _deliver(k.ns.tmp, parent, name, node, mask, cookie)


def _deliver(tmpfs: TmpFS, parent: Node | None, name: str, node: Node, mask: int,
             cookie: int) -> None:
    for w in list(tmpfs.watchers):
        w.entry(parent, name, node, mask, cookie)


def moved(k: Kernel, old: tuple[Node, str], new: tuple[Node, str], node: Node) -> None:
    """rename of `node` from entry old to entry new: IN_MOVED_FROM and IN_MOVED_TO with one
    cookie, IN_MOVE_SELF to its own watchers."""
    tmpfs = k.ns.tmp
    if not tmpfs.watchers:
        return
    cookie = next(_cookies) & 0xFFFFFFFF
    _deliver(tmpfs, old[0], old[1], node, IN_MOVED_FROM, cookie)
    _deliver(tmpfs, new[0], new[1], node, IN_MOVED_TO, cookie)
    for w in list(tmpfs.watchers):
        w.deliver(node, IN_MOVE_SELF, b"", 0)


def removed(k: Kernel, node: Node, last: bool) -> None:
    """A link of `node` went: IN_ATTRIB (its link count) for a file and, with the last,
    IN_DELETE_SELF and the end of its watches."""
    for w in list(k.ns.tmp.watchers):
        if not node.is_dir:
            w.deliver(node, IN_ATTRIB, b"", 0)
        if last:
            w.deliver(node, IN_DELETE_SELF, b"", 0)
            w.gone(node)
