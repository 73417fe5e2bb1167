"""An invocation's process tree: its pids, its table of processes, and the messages its
monitors send each other.

Every process of the tree (the USF and each child, forked or a program in a
sibling VM) has a monitor process of its own, joined to its parent's by a
control socket (children.py). The monitors share one ProcessTable, made
at the tree's first child and inherited by every host fork after it: the
tree's next pid, so that pids (and tids) are unique across the tree as on
Linux, and each process's pid, parent, group, session and whether it
ended, so that kill() knows at once whether a pid exists (ESRCH) and which
way a signal goes; and the AF_UNIX names its processes bound (a path or an
abstract name, by digest) and the TCP ports its processes listen on, with the
process that holds each, so that a listener in one process is connectable
from all of them, as on Linux, and from nothing outside the tree. A signal for another process
travels as a Signal message hop by hop along the control sockets: down to
the child on the way to its target, else up to the parent
(children.route); so does a Connect to another process's listener, with
one end of a host socketpair passed along it (SCM_RIGHTS: a jailed monitor
has no connect of its own), the connecting socket holding the other. The table's lock is
a POSIX record lock, which excludes the other monitors; within one monitor
only the vCPU's thread touches the table.

Every message on a control socket is one of TREE_MESSAGES (a tagged msgspec
Struct behind a 4-byte length), validated on receipt:
    child -> parent : Ready (a forked child's VM runs) | Routed | Exited (its last)
    parent -> child : Routed (Signal, Connect, FifoOpen, FifoEnd, LimitsAsk, LimitsAnswer,
                      ShmOpen, ShmFile, ShmUnlink, ShmUnlinked)
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import os
import socket
import stat
import struct
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from usetl import hostmm

from .errors import LibosError, SyscallError
from .files import O_RDWR, StreamFile
from .fs import Node
from .net import POLLIN, POLLRDNORM

if TYPE_CHECKING:
    from .kernel import Kernel

# -- messages ------------------------------------------------------------------------


class TreeMessage(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    pass


class Ready(TreeMessage):
    """A forked child's VM is made: its parent's fork() returns."""


class Signal(TreeMessage):
    """A signal for process `to`, sent by `sender` (si_code `code`, si_uid `uid`)."""

    to: int
    signo: int
    sender: int
    uid: int
    code: int = 0  # SI_USER
    tid: int = 0  # tgkill's thread of `to`; 0: for the process


class Connect(TreeMessage):
    """A connection to the listener process `to` holds at `name` (its key: guestnet's
    unix_key, or listener_name for a TCP port), from `sender` (an AF_UNIX one bound at
    `peer`, or b""; a TCP one from the address `client`, to the address `connected`); the
    connection's host socket comes with it."""

    to: int
    name: bytes
    sender: int
    peer: bytes = b""
    connected: tuple = ()
    client: tuple = ()


class FifoOpen(TreeMessage):
    """An open of the named pipe at `path` that process `to` made (fifo.py), by `sender`,
    for reading or writing; `request` names it in the answer."""

    to: int
    path: str
    sender: int
    reads: bool
    nonblocking: bool
    request: int


class FifoEnd(TreeMessage):
    """The answer to a FifoOpen: its pipe end comes with it, unless `error` (an errno)."""

    to: int
    request: int
    error: int = 0


class LimitsAsk(TreeMessage):
    """prlimit of process `to` by `sender` (whose uid and gid are `uid` and `gid`): the
    limits of `resource`, set to `new` (soft, hard) unless None (limits.py); `request`
    names it in the answer."""

    to: int
    sender: int
    uid: int
    gid: int
    resource: int
    request: int
    new: tuple[int, int] | None = None


class LimitsAnswer(TreeMessage):
    """The answer to a LimitsAsk: the limits before, unless `error` (an errno)."""

    to: int
    request: int
    soft: int = 0
    hard: int = 0
    error: int = 0


class ShmOpen(TreeMessage):
    """An open by `sender` of /dev/shm/`name`, which process `to` holds (shmtree.py);
    `request` names it in the answer."""

    to: int
    sender: int
    name: str
    request: int


class ShmFile(TreeMessage):
    """The answer to a ShmOpen: the file's memfd comes with it, unless `error` (an errno)."""

    to: int
    request: int
    size: int = 0
    mode: int = 0
    error: int = 0


class ShmUnlink(TreeMessage):
    """/dev/shm/`name`, which process `to` holds, was unlinked by process `sender`, which
    waits for the answer (ShmUnlinked) as its unlink's end."""

    to: int
    name: str
    sender: int
    request: int


class ShmUnlinked(TreeMessage):
    """The answer to a ShmUnlink: the name is gone in its holder too."""

    to: int
    request: int


class Exited(TreeMessage):
    """A child's end: its wait status and its changes to /tmp (tmpsync.encode_changes;
    empty if it never ran). Its last message, unless it `lingers`: its own children run
    on (orphans), and its monitor passes their messages on until the last has ended."""

    status: int
    changes: bytes = b""
    lingers: bool = False


# What travels hop by hop to a process.
Routed = (Signal | Connect | FifoOpen | FifoEnd | LimitsAsk | LimitsAnswer | ShmOpen | ShmFile
          | ShmUnlink | ShmUnlinked)
TREE_MESSAGES = Ready | Routed | Exited
FRAME = struct.Struct("<I")
FIRST_MESSAGE_LIMIT = 1 << 10  # a Ready is a few bytes
MAX_PENDING_FDS = 8  # host fds received ahead of the messages they belong to
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(TREE_MESSAGES)


class TreeProtocolError(LibosError):
    """A monitor of the tree sent what is not a message (its guest may have taken it over)."""


def encode(message: TreeMessage) -> bytes:
    """A message as it goes on the socket: its length, then its msgpack."""
    data = _encoder.encode(message)
    return FRAME.pack(len(data)) + data


class PassedFd:
    """A host fd that travels with a message (a FifoEnd's pipe end, a ShmFile's memfd),
    closed unless detached."""

    def __init__(self, fd: int):
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def detach(self) -> int:
        fd, self.fd = self.fd, -1
        return fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.detach())


Passed = socket.socket | PassedFd  # a host fd a message carries


def carries(message: TreeMessage) -> bool:
    """Does this message come with a host fd (SCM_RIGHTS)?"""
    return isinstance(message, Connect) or \
        isinstance(message, (FifoEnd, ShmFile)) and not message.error


def send_message(sock: socket.socket, message: TreeMessage,
                 passed: Passed | None = None) -> bool:
    """Send one message (a Connect with its socket, a FifoEnd with its pipe end:
    `passed`); False if the other end has gone."""
    data = encode(message)
    try:
        if passed is not None:
            sent = socket.send_fds(sock, [data], [passed.fileno()])
            data = data[sent:]
        sock.sendall(data)
    except OSError:
        return False
    return True


class MessageReader:
    """Messages out of the bytes (and host fds) a control socket gives, as they arrive."""

    def __init__(self) -> None:
        self.pending = bytearray()
        self.fds: list[int] = []  # received, for the Connects not yet complete

    def feed(self, data: bytes, fds: list[int] | tuple = ()
             ) -> list[tuple[TreeMessage, Passed | None]]:
        """The messages `data` completes, each Connect with its socket (an AF_UNIX one, the
        next of the fds received), each FifoEnd with its pipe end; TreeProtocolError for
        anything else."""
        self.fds += fds
        if len(self.fds) > MAX_PENDING_FDS:
            self.close()
            raise TreeProtocolError("more host fds than messages to carry them")
        return [(m, self._passed(m) if carries(m) else None) for m in self._messages(data)]

    def _passed(self, message: TreeMessage) -> Passed:
        if isinstance(message, FifoEnd):
            return self._fd(stat.S_ISFIFO, "a FifoEnd", "a pipe")
        if isinstance(message, ShmFile):
            return self._fd(stat.S_ISREG, "a ShmFile", "a memory file")
        return self._socket()

    def _fd(self, kind: Callable[[int], bool], message: str, what: str) -> PassedFd:
        if not self.fds:
            raise TreeProtocolError(f"{message} without its fd")
        fd = self.fds.pop(0)
        if not kind(os.fstat(fd).st_mode):
            os.close(fd)
            raise TreeProtocolError(f"{message} with what is not {what}")
        return PassedFd(fd)

    def _socket(self) -> socket.socket:
        if not self.fds:
            raise TreeProtocolError("a Connect without its socket")
        fd = self.fds.pop(0)
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            raise TreeProtocolError("a Connect with what is not a socket") from None
        if sock.family != socket.AF_UNIX:
            sock.close()
            raise TreeProtocolError("a Connect with what is not an AF_UNIX socket")
        return sock

    def close(self) -> None:
        """Close the fds received that no message took."""
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def _messages(self, data: bytes) -> list[TreeMessage]:
        self.pending += data
        out = []
        while len(self.pending) >= FRAME.size:
            (size,) = FRAME.unpack_from(self.pending)
            if len(self.pending) < FRAME.size + size:
                break
            body = bytes(self.pending[FRAME.size:FRAME.size + size])
            del self.pending[:FRAME.size + size]
            try:
                out.append(_decoder.decode(body))
            except (msgspec.ValidationError, msgspec.DecodeError) as e:
                raise TreeProtocolError(f"not a process-tree message: {e}") from None
        return out


def recv_message(sock: socket.socket, timeout: float) -> TreeMessage | None:
    """One message read in place (the first a forked child sends), and not a byte past
    it; None if the other end ended, said nothing in time or sent what is not one."""
    reader = MessageReader()
    sock.settimeout(timeout)
    try:
        head = sock.recv(FRAME.size, socket.MSG_WAITALL)
        if len(head) < FRAME.size:
            return None
        (size,) = FRAME.unpack(head)
        if size > FIRST_MESSAGE_LIMIT:
            return None
        body = sock.recv(size, socket.MSG_WAITALL)
        got = reader.feed(head + body)
    except (OSError, TreeProtocolError):
        return None
    finally:
        sock.settimeout(None)
    return got[0][0] if got else None


# -- the table ------------------------------------------------------------------------

CAPACITY = 256  # processes a tree may hold, ended ones not yet waited for included
NAME_CAPACITY = 256  # AF_UNIX names bound and TCP ports listened on in a tree at once
# The next pid; how many process entries, then name entries, are in use (the first ones).
HEAD = struct.Struct("<qii")
ENTRY = struct.Struct("<iiiii")  # pid, parent, group, session, ended (RUNNING...GONE)
# A process's end: ENDED, or LINGERING (ended, its monitor passing its orphans' messages
# on); GONE once its parent waited for a lingering one, kept as a hop to its orphans.
RUNNING, ENDED, LINGERING, GONE = range(4)
NAME = struct.Struct("<i32s")  # the process holding a name, the name's digest
NAMES_AT = HEAD.size + CAPACITY * ENTRY.size
TABLE_BYTES = NAMES_AT + NAME_CAPACITY * NAME.size


def name_digest(name: bytes) -> bytes:
    """How a table holds an AF_UNIX name (a path's may be long)."""
    return hashlib.sha256(name).digest()


@dataclass
class Process:
    pid: int
    parent: int
    group: int
    session: int
    ended: int  # RUNNING, ENDED, LINGERING (GONE ones are not found)


class ProcessTable:
    """The tree's processes, in a memfd every monitor of the tree maps (see the module)."""

    def __init__(self, next_pid: int, root: int):
        self.root = root  # the tree's first process: an orphan's parent, as init is
        self.fd = os.memfd_create("usetl-processes")
        os.ftruncate(self.fd, TABLE_BYTES)
        self.buf = (ctypes.c_char * TABLE_BYTES).from_address(
            hostmm.map_shared(self.fd, TABLE_BYTES))
        HEAD.pack_into(self.buf, 0, next_pid, 0, 0)
        self._write([Process(root, 0, root, root, False)])

    def close(self) -> None:
        """Unmap and close the table (the state that held it is gone: a rollback)."""
        hostmm.unmap(ctypes.addressof(self.buf), TABLE_BYTES)
        os.close(self.fd)

    @contextmanager
    def _locked(self):
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def _entries(self) -> dict[int, Process]:
        """pid -> process, of the entries in use."""
        _, count, _ = HEAD.unpack_from(self.buf, 0)
        raw = self.buf[HEAD.size:HEAD.size + min(count, CAPACITY) * ENTRY.size]
        return {f[0]: Process(*f) for f in ENTRY.iter_unpack(raw)}

    def _write(self, processes: list[Process]) -> None:
        for slot, p in enumerate(processes):
            ENTRY.pack_into(self.buf, HEAD.size + slot * ENTRY.size,
                            p.pid, p.parent, p.group, p.session, int(p.ended))
        next_pid, _, names = HEAD.unpack_from(self.buf, 0)
        HEAD.pack_into(self.buf, 0, next_pid, len(processes), names)

    def _names(self) -> dict[bytes, int]:
        """digest -> the pid holding that name, of the name entries in use."""
        _, _, count = HEAD.unpack_from(self.buf, 0)
        raw = self.buf[NAMES_AT:NAMES_AT + min(count, NAME_CAPACITY) * NAME.size]
        return {digest: pid for pid, digest in NAME.iter_unpack(raw)}

    def _write_names(self, names: dict[bytes, int]) -> None:
        for slot, (digest, pid) in enumerate(names.items()):
            NAME.pack_into(self.buf, NAMES_AT + slot * NAME.size, pid, digest)
        next_pid, count, _ = HEAD.unpack_from(self.buf, 0)
        HEAD.pack_into(self.buf, 0, next_pid, count, len(names))

    def new_pid(self) -> int:
        with self._locked():
            pid, count, names = HEAD.unpack_from(self.buf, 0)
            HEAD.pack_into(self.buf, 0, pid + 1, count, names)
        return pid

    def claim_name(self, name: bytes, pid: int) -> bool:
        """`pid` holds AF_UNIX name `name` from now on; False if another process holds it
        (EADDRINUSE) or the table has no room (kept to `pid`'s own monitor then)."""
        digest = name_digest(name)
        with self._locked():
            names = self._names()
            if names.get(digest, pid) != pid:
                return False
            if digest not in names and len(names) >= NAME_CAPACITY:
                return True
            names[digest] = pid
            self._write_names(names)
        return True

    def hand_name(self, name: bytes, pid: int) -> None:
        """`pid` holds AF_UNIX name `name` from now on, whoever did (a listener given to a
        program at its execve)."""
        digest = name_digest(name)
        with self._locked():
            names = self._names()
            if digest in names or len(names) < NAME_CAPACITY:
                names[digest] = pid
                self._write_names(names)

    def name_holder(self, name: bytes) -> int | None:
        """The process holding AF_UNIX name `name`, if one does."""
        with self._locked():
            return self._names().get(name_digest(name))

    def release_name(self, name: bytes, pid: int) -> None:
        """`pid` no longer holds `name` (its socket closed); another's claim stays."""
        digest = name_digest(name)
        with self._locked():
            names = self._names()
            if names.get(digest) == pid:
                del names[digest]
                self._write_names(names)

    def add(self, pid: int, parent: int) -> None:
        """A new child of `parent`, in its group and session; EAGAIN if the table is full."""
        with self._locked():
            entries = self._entries()
            if len(entries) >= CAPACITY:
                raise SyscallError(errno.EAGAIN)
            up = entries.get(parent)
            group, session = (up.group, up.session) if up is not None else (parent, parent)
            self._write([*entries.values(), Process(pid, parent, group, session, False)])

    def find(self, pid: int) -> Process | None:
        with self._locked():
            found = self._entries().get(pid)
        return None if found is None or found.ended == GONE else found

    def all(self) -> list[Process]:
        with self._locked():
            return [p for p in self._entries().values() if p.ended != GONE]

    def update(self, p: Process) -> None:
        """Write back a process's group, session or end (as `find` gave it, changed)."""
        with self._locked():
            entries = self._entries()
            if p.pid in entries:
                entries[p.pid] = p
                self._write(list(entries.values()))

    def forget(self, pid: int) -> None:
        """A process waited for (or killed with its parent's invocation) is gone, and with
        it every process below it (their monitors die with their parents': PDEATHSIG),
        unless it lingers: then its orphans run on, and it stays as their hop (GONE)."""
        with self._locked():
            entries = self._entries()
            if pid in entries and entries[pid].ended == LINGERING:
                entries[pid].ended = GONE
                self._write(list(entries.values()))
                return
            kept = [p for p in entries.values()
                    if p.pid != pid and pid not in self._ancestors(entries, p.pid)]
            self._write(kept)
            alive = {p.pid for p in kept}
            self._write_names({d: p for d, p in self._names().items() if p in alive})

    def lingers(self, pid: int, lingering: bool) -> None:
        """Process `pid` has ended with orphans (LINGERING), or its last orphan has ended:
        it is gone if its parent has waited for it, else an ENDED process to wait for."""
        with self._locked():
            entries = self._entries()
            p = entries.get(pid)
            if p is None:
                return
            if lingering:
                p.ended = LINGERING
            elif p.ended == GONE:
                del entries[pid]
            else:
                p.ended = ENDED
            self._write(list(entries.values()))

    @staticmethod
    def _ancestors(entries: dict[int, Process], pid: int) -> list[int]:
        out: list[int] = []
        while pid in entries and len(out) < CAPACITY:
            pid = entries[pid].parent
            out.append(pid)
        return out

    def next_hop(self, me: int, to: int) -> int | None:
        """The child of `me` on the way down to `to`, or None if `to` is not below `me`."""
        with self._locked():
            entries = self._entries()
            below = to
            for up in self._ancestors(entries, to):
                if up == me:
                    return below
                below = up
        return None


class PidFile(StreamFile):
    """pidfd_open's file: names one process of the tree; readable once it has ended (a
    child's end wakes its waiters; another process's is seen when polled again)."""

    def __init__(self, kernel: Kernel, pid: int, flags: int):
        super().__init__(Node(0o600, kernel.ns.inodes.next()), O_RDWR | flags,
                         "anon_inode:[pidfd]")
        self.kernel = kernel
        self.pid = pid

    def read(self, length: int) -> bytes:
        raise SyscallError(errno.EINVAL)

    def write(self, data: memoryview) -> int:
        raise SyscallError(errno.EINVAL)

    def ended(self) -> bool:
        children = self.kernel.children
        if self.pid in children.running or self.pid in children.pre_exec \
                or self.pid == self.kernel.identity.pid:
            return False
        if self.pid in children.ended or children.table is None:
            return True
        found = children.table.find(self.pid)
        return found is None or found.ended

    def poll(self) -> int:
        return POLLIN | POLLRDNORM if self.ended() else 0

    def wait_queues(self) -> tuple:
        return (self.kernel.children.exits,)
