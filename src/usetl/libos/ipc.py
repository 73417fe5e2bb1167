"""Files that connect guest threads inside the monitor: pipes, AF_UNIX socketpairs, eventfds.

Each keeps its bytes (or messages, or counter) in the monitor state and a
WaitQueue that is woken on every change of state: a thread blocked in read
or write re-runs its syscall, and poll, select and epoll waiters look
again. `generation` counts those changes, for epoll's edge triggering.

A blocking write that does not fit writes what fits (a short count, which
CPython's file objects and sendall() complete); only one that fits nowhere
blocks, so that a re-run never writes the same bytes twice. Writes of up to
PIPE_BUF bytes are atomic, as on Linux.
"""

from __future__ import annotations

import errno
import stat as st
from collections import deque
from typing import TYPE_CHECKING

from usetl.vm.layout import PAGE_SIZE

from .errors import SyscallError
from .files import (
    O_ACCMODE,
    O_NONBLOCK,
    O_RDONLY,
    O_RDWR,
    O_WRONLY,
    FdTable,
    OpenFile,
    StreamFile,
)
from .fs import Inodes, Node
from .net import MSG_DONTWAIT, MSG_PEEK, POLLERR, POLLHUP, POLLIN, POLLOUT, POLLRDNORM, POLLWRNORM
from .sched import Block, WaitQueue

if TYPE_CHECKING:
    from .sched import Scheduler

PIPE_CAPACITY = 1 << 16  # Linux's default pipe buffer
PIPE_MAX_SIZE = 1 << 20  # /proc/sys/fs/pipe-max-size: past it F_SETPIPE_SZ is EPERM
F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032
PIPE_BUF = 4096
UNIX_CAPACITY = 212992  # Linux's default socket buffer (net.core.wmem_default)
MAX_DATAGRAMS = 512
POLLRDHUP = 0x2000
READABLE = POLLIN | POLLRDNORM
WRITABLE = POLLOUT | POLLWRNORM
EFD_SEMAPHORE = 1
COUNTER_MAX = (1 << 64) - 2


class Ancillary:
    """What a message carries besides its bytes (sendmsg's control data): files passed
    with SCM_RIGHTS, an IPv6 hop limit and traffic class."""

    def __init__(self, files: list[OpenFile] | None = None, hoplimit: int | None = None,
                 tclass: int | None = None):
        self.files = files or []
        self.hoplimit = hoplimit
        self.tclass = tclass
        # The files' host fds, where they go over a host socket (a shared connection).
        self.host_fds: list[int] = []

    def hold(self) -> None:
        for f in self.files:
            f.in_flight += 1

    def drop(self, fds: FdTable) -> None:
        """Never received: the files it held go (closed if no fd names them)."""
        for f in self.files:
            fds.release(f)
        self.files = []


class Channel:
    """One direction of bytes (stream) or messages (dgram) with its ends counted.

    Ancillary data travels with a message, or (stream) with the bytes of the write that
    sent it: a read that reaches them gets it and ends with them, as Linux's AF_UNIX does.
    """

    def __init__(self, sched: Scheduler, capacity: int, datagrams: bool, tcp: bool = False):
        self.sched = sched
        self.tcp = tcp
        self.reset = False  # TCP: a write after the reader closed went out and was reset
        self.aborted = False  # TCP: an end closed with SO_LINGER 0 (an RST): not connected
        self.capacity = capacity
        self.datagrams = datagrams
        self.data = bytearray()
        self.messages: deque[tuple[bytes, Ancillary | None]] = deque()
        self.queued = 0  # bytes held in messages
        self.read_at = self.written = 0  # stream positions, for attached ancillary data
        self.attached: deque[tuple[int, int, Ancillary]] = deque()  # (start, end, data)
        self.readers = 0
        self.writers = 0
        self.queue = WaitQueue()
        self.generation = 0

    def changed(self) -> None:
        self.generation += 1
        self.queue.wake(self.sched)

    @property
    def held(self) -> int:
        return self.queued if self.datagrams else len(self.data)

    @property
    def readable(self) -> bool:
        return bool(self.messages) if self.datagrams else bool(self.data)

    @property
    def room(self) -> int:
        if self.datagrams and len(self.messages) >= MAX_DATAGRAMS:
            return 0
        return self.capacity - self.held

    def wait(self, blocking: bool) -> Block:
        """What a call that cannot go on now raises: EAGAIN, or a wait for a change."""
        if not blocking:
            raise SyscallError(errno.EAGAIN)
        return Block((self.queue,), self.sched.deadline_after(None))

    def take(self, length: int, blocking: bool, peek: bool = False) -> bytes:
        """Read up to length bytes (one message for dgram); b"" at end of stream. Files
        passed with them are closed: a read without a control buffer cannot take them."""
        data, ancillary, _ = self.take_message(length, blocking, peek)
        if ancillary is not None and not peek:
            ancillary.drop(self.sched.k.fds)
        return data

    def take_message(self, length: int, blocking: bool, peek: bool = False
                     ) -> tuple[bytes, Ancillary | None, int]:
        """take(), with the ancillary data it reached and the message's whole length."""
        if not self.readable:
            if self.aborted:
                raise SyscallError(errno.ECONNRESET)  # what was sent before the RST is read
            if self.writers == 0:
                return b"", None, 0
            raise self.wait(blocking)
        ancillary = None
        if self.datagrams:
            msg, ancillary = self.messages[0] if peek else self.messages.popleft()
            if not peek:
                self.queued -= len(msg)
            data, whole = msg[:length], len(msg)
        else:
            if self.attached and self.attached[0][0] < self.read_at + length:
                start, end, ancillary = self.attached[0]
                length = min(length, end - self.read_at)  # the read ends with its bytes
                if not peek:
                    self.attached.popleft()
            data = bytes(self.data[:length])
            whole = len(data)
            if not peek:
                del self.data[:length]
                self.read_at += len(data)
        if not peek:
            self.changed()
        return data, ancillary, whole

    def discard(self, fds: FdTable) -> None:
        """The last reader went: files in flight to it are dropped."""
        for _, ancillary in self.messages:
            if ancillary is not None:
                ancillary.drop(fds)
        for _, _, ancillary in self.attached:
            ancillary.drop(fds)
        self.attached.clear()

    def put(self, data: memoryview, blocking: bool, ancillary: Ancillary | None = None) -> int:
        """Write what fits; EPIPE with no reader left (the syscall sends SIGPIPE).

        As on Linux, an empty write to a stream does nothing, and over TCP the first
        write after the peer closed goes out (the peer's RST makes the next one fail).
        """
        size = len(data)
        if size == 0 and not self.datagrams and ancillary is None:
            return 0
        if self.readers == 0:
            if self.tcp and not self.reset:
                self.reset = True
                return size
            raise SyscallError(errno.EPIPE)
        room = self.room
        if self.datagrams:
            if size > self.capacity:
                raise SyscallError(errno.EMSGSIZE)
            if size > room:
                raise self.wait(blocking)
            self.messages.append((bytes(data), ancillary))
            self.queued += size
        else:
            if room == 0 or (size <= PIPE_BUF and size > room):
                raise self.wait(blocking)
            size = min(size, room)
            self.data += data[:size]
            if ancillary is not None:
                self.attached.append((self.written, self.written + max(size, 1), ancillary))
            self.written += size
        if ancillary is not None:
            ancillary.hold()
        self.changed()
        return size


class ChannelFile(StreamFile):
    """An end of one or two channels: a pipe end (one) or a socketpair end (both)."""

    def __init__(self, path: str, node: Node, flags: int, rx: Channel | None,
                 tx: Channel | None):
        super().__init__(node, flags, path)
        self.rx = rx
        self.tx = tx
        if rx is not None:
            rx.readers += 1
        if tx is not None:
            tx.writers += 1

    def _blocking(self, flags: int = 0) -> bool:
        return not (self.flags & O_NONBLOCK or flags & MSG_DONTWAIT)

    def read(self, length: int) -> bytes:
        if self.rx is None:
            raise SyscallError(errno.EBADF)
        return self.rx.take(length, self._blocking())

    def write(self, data: memoryview) -> int:
        if self.tx is None:
            raise SyscallError(errno.EBADF)
        return self.tx.put(data, self._blocking())

    def poll(self) -> int:
        """As Linux: a pipe's reader sees POLLHUP with no writer, its writer POLLERR with no
        reader; a socket sees its peer's end as readable with POLLRDHUP, both as POLLHUP."""
        socket = isinstance(self, UnixSocketFile)
        events = 0
        rx_done = self.rx is None or self.rx.writers == 0
        tx_done = self.tx is None or self.tx.readers == 0
        if socket and rx_done:
            events |= READABLE | POLLRDHUP  # reads return end of stream at once
        if self.rx is not None:
            if self.rx.readable:
                events |= READABLE
            if self.rx.writers == 0 and not socket:
                events |= POLLHUP
        if self.tx is not None:
            if self.tx.readers == 0:
                events |= WRITABLE if socket else POLLERR
            elif self.tx.room:
                events |= WRITABLE
        if socket and rx_done and tx_done:
            events |= POLLHUP
        return events

    def wait_queues(self) -> tuple[WaitQueue, ...]:
        return tuple(c.queue for c in (self.rx, self.tx) if c is not None)

    def pipe_size(self, size: int | None) -> int:
        channel = self.rx or self.tx
        if not st.S_ISFIFO(self.node.mode) or channel is None:
            return super().pipe_size(size)
        if size is not None:
            channel.capacity = round_pipe_size(size, channel.held)
            channel.changed()
        return channel.capacity

    def reopen(self, flags: int) -> OpenFile:
        """A pipe opened again through /proc/self/fd: a new end of the same pipe, reading,
        writing or both as `flags` ask (a FIFO's open, which Linux does for these)."""
        channel = self.rx or self.tx
        if not st.S_ISFIFO(self.node.mode) or channel is None:
            return super().reopen(flags)
        access = flags & O_ACCMODE
        return ChannelFile(self.path, self.node, access | flags & O_NONBLOCK,
                           channel if access != O_WRONLY else None,
                           channel if access != O_RDONLY else None)

    @property
    def generation(self) -> int:
        return sum(c.generation for c in (self.rx, self.tx) if c is not None)

    def close(self) -> None:
        if self.rx is not None:
            self.rx.readers -= 1
            if not self.rx.readers:
                self.rx.discard(self.rx.sched.k.fds)
            self.rx.changed()
        if self.tx is not None:
            self.tx.writers -= 1
            self.tx.changed()
        self.rx = self.tx = None


def round_pipe_size(size: int, held: int) -> int:
    """F_SETPIPE_SZ's size as Linux makes it: a power of two of pages; EPERM past
    PIPE_MAX_SIZE (the guest has no CAP_SYS_RESOURCE), EBUSY below what the pipe holds."""
    if size > PIPE_MAX_SIZE:
        raise SyscallError(errno.EPERM)
    pages = max(-(-size // PAGE_SIZE), 1)
    rounded = PAGE_SIZE << (pages - 1).bit_length()
    if rounded < held:
        raise SyscallError(errno.EBUSY)
    return rounded


def make_pipe(sched: Scheduler, flags: int, ino: int) -> tuple[ChannelFile, ChannelFile]:
    """A pipe's two ends: one inode, as on Linux."""
    channel = Channel(sched, PIPE_CAPACITY, datagrams=False)
    node = Node(st.S_IFIFO | 0o600, ino)
    extra = flags & O_NONBLOCK
    return (ChannelFile("pipe:", node, O_RDONLY | extra, channel, None),
            ChannelFile("pipe:", node, O_WRONLY | extra, None, channel))


class UnixSocketFile(ChannelFile):
    """One end of an AF_UNIX socketpair: connected, unnamed, within the guest."""

    def __init__(self, sock_type: int, flags: int, rx: Channel, tx: Channel, ino: int):
        super().__init__("socket:", Node(st.S_IFSOCK | 0o777, ino), O_RDWR | flags, rx, tx)
        self.sock_type = sock_type

    def recv_into(self, dest: memoryview, flags: int) -> int:
        if self.rx is None:
            return 0  # shut down for reading: end of stream
        data = self.rx.take(len(dest), self._blocking(flags), bool(flags & MSG_PEEK))
        dest[: len(data)] = data
        return len(data)

    def recv_vectored(self, buffers: list[memoryview], flags: int) -> int:
        if self.rx is None:
            return 0
        data = self.rx.take(sum(len(b) for b in buffers), self._blocking(flags),
                            bool(flags & MSG_PEEK))
        at = 0
        for b in buffers:
            n = min(len(b), len(data) - at)
            b[:n] = data[at : at + n]
            at += n
        return len(data)

    def recv_message(self, room: int, flags: int) -> tuple[bytes, Ancillary | None, int]:
        """recvmsg: the bytes, the ancillary data they carried and the message's length."""
        if self.rx is None:
            return b"", None, 0
        return self.rx.take_message(room, self._blocking(flags), bool(flags & MSG_PEEK))

    def send(self, data: list[memoryview], flags: int, ancillary: Ancillary | None = None
             ) -> int:
        if self.tx is None:
            raise SyscallError(errno.EPIPE)
        joined = memoryview(b"".join(data)) if len(data) != 1 else data[0]
        return self.tx.put(joined, self._blocking(flags), ancillary)

    def read(self, length: int) -> bytes:
        return super().read(length) if self.rx is not None else b""

    def shutdown(self, how: int) -> None:
        if how not in (0, 1, 2):
            raise SyscallError(errno.EINVAL)
        if how in (0, 2) and self.rx is not None:
            self.rx.readers -= 1
            if not self.rx.readers:
                self.rx.discard(self.rx.sched.k.fds)
            self.rx.changed()
            self.rx = None
        if how in (1, 2) and self.tx is not None:
            self.tx.writers -= 1
            self.tx.changed()
            self.tx = None


def make_socketpair(sched: Scheduler, sock_type: int, flags: int, inodes: Inodes
                    ) -> tuple[UnixSocketFile, UnixSocketFile]:
    dgram = sock_type != 1
    a_to_b = Channel(sched, UNIX_CAPACITY, dgram)
    b_to_a = Channel(sched, UNIX_CAPACITY, dgram)
    return (UnixSocketFile(sock_type, flags, b_to_a, a_to_b, inodes.next()),
            UnixSocketFile(sock_type, flags, a_to_b, b_to_a, inodes.next()))


class EventFile(OpenFile):
    """eventfd: a 64-bit counter; read takes it (or 1 with EFD_SEMAPHORE), write adds."""

    def __init__(self, sched: Scheduler, initial: int, flags: int, semaphore: bool, ino: int):
        super().__init__(Node(0o600, ino), O_RDWR | flags,  # an anonymous inode
                         "anon_inode:[eventfd]")
        self.sched = sched
        self.counter = initial
        self.semaphore = semaphore
        self.queue = WaitQueue()
        self.generation = 0

    def _changed(self) -> None:
        self.generation += 1
        self.queue.wake(self.sched)

    def _block(self) -> Block:
        if self.flags & O_NONBLOCK:
            raise SyscallError(errno.EAGAIN)
        return Block((self.queue,), self.sched.deadline_after(None))

    def read(self, length: int) -> bytes:
        if length < 8:
            raise SyscallError(errno.EINVAL)
        if self.counter == 0:
            raise self._block()
        value = 1 if self.semaphore else self.counter
        self.counter -= value
        self._changed()
        return value.to_bytes(8, "little")

    def write(self, data: memoryview) -> int:
        if len(data) < 8:
            raise SyscallError(errno.EINVAL)
        value = int.from_bytes(data[:8], "little")
        if value > COUNTER_MAX:
            raise SyscallError(errno.EINVAL)
        if self.counter + value > COUNTER_MAX:
            raise self._block()
        self.counter += value
        self._changed()
        return 8

    def read_at(self, offset: int, length: int) -> bytes:
        raise SyscallError(errno.ESPIPE)

    def poll(self) -> int:
        events = READABLE if self.counter else 0
        if self.counter < COUNTER_MAX:
            events |= WRITABLE
        return events

    def wait_queues(self) -> tuple[WaitQueue, ...]:
        return (self.queue,)
