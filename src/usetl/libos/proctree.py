"""An invocation's process tree: its pids, its table of processes, and the messages its
monitors send each other.

Every process of the tree (the USF and each child, forked or a program in a
sibling VM) has a monitor process of its own, joined to its parent's by a
control socket (children.py). The monitors share one ProcessTable, made
at the tree's first child and inherited by every host fork after it: the
tree's next pid, so that pids (and tids) are unique across the tree as on
Linux, and each process's pid, parent, group, session and whether it
ended, so that kill() knows at once whether a pid exists (ESRCH) and which
way a signal goes. A signal for another process travels as a Signal
message hop by hop along the control sockets: down to the child on the way
to its target, else up to the parent (children.route). The table's lock is
a POSIX record lock, which excludes the other monitors; within one monitor
only the vCPU's thread touches the table.

Every message on a control socket is one of TREE_MESSAGES (a tagged msgspec
Struct behind a 4-byte length), validated on receipt:
    child -> parent : Ready (a forked child's VM runs) | Signal | Exited (its last)
    parent -> child : Signal
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
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


class Exited(TreeMessage):
    """A child's end, its last message: its wait status and its changes to /tmp
    (tmpsync.encode_changes; empty if it never ran)."""

    status: int
    changes: bytes = b""


TREE_MESSAGES = Ready | Signal | Exited
FRAME = struct.Struct("<I")
FIRST_MESSAGE_LIMIT = 1 << 10  # a Ready is a few bytes
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(TREE_MESSAGES)


class TreeProtocolError(LibosError):
    """A monitor of the tree sent what is not a message (its guest may have taken it over)."""


def encode(message: TreeMessage) -> bytes:
    """A message as it goes on the socket: its length, then its msgpack."""
    data = _encoder.encode(message)
    return FRAME.pack(len(data)) + data


def send_message(sock: socket.socket, message: TreeMessage) -> bool:
    """Send one message; False if the other end has gone."""
    try:
        sock.sendall(encode(message))
    except OSError:
        return False
    return True


class MessageReader:
    """Messages out of the bytes a control socket gives, as they arrive."""

    def __init__(self) -> None:
        self.pending = bytearray()

    def feed(self, data: bytes) -> list[TreeMessage]:
        """The messages `data` completes; TreeProtocolError for anything else."""
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
    return got[0] if got else None


# -- the table ------------------------------------------------------------------------

CAPACITY = 256  # processes a tree may hold, ended ones not yet waited for included
HEAD = struct.Struct("<qi4x")  # the next pid; how many entries are in use (the first ones)
ENTRY = struct.Struct("<iiiii")  # pid, parent, group, session, ended
TABLE_BYTES = HEAD.size + CAPACITY * ENTRY.size


@dataclass
class Process:
    pid: int
    parent: int
    group: int
    session: int
    ended: bool


class ProcessTable:
    """The tree's processes, in a memfd every monitor of the tree maps (see the module)."""

    def __init__(self, next_pid: int, root: int):
        self.fd = os.memfd_create("usetl-processes")
        os.ftruncate(self.fd, TABLE_BYTES)
        self.buf = (ctypes.c_char * TABLE_BYTES).from_address(
            hostmm.map_shared(self.fd, TABLE_BYTES))
        HEAD.pack_into(self.buf, 0, next_pid, 0)
        self._write([Process(root, 0, root, root, False)])

    @contextmanager
    def _locked(self):
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def _entries(self) -> dict[int, Process]:
        """pid -> process, of the entries in use."""
        _, count = HEAD.unpack_from(self.buf, 0)
        raw = self.buf[HEAD.size:HEAD.size + min(count, CAPACITY) * ENTRY.size]
        return {f[0]: Process(*f[:4], bool(f[4])) for f in ENTRY.iter_unpack(raw)}

    def _write(self, processes: list[Process]) -> None:
        for slot, p in enumerate(processes):
            ENTRY.pack_into(self.buf, HEAD.size + slot * ENTRY.size,
                            p.pid, p.parent, p.group, p.session, int(p.ended))
        (next_pid, _) = HEAD.unpack_from(self.buf, 0)
        HEAD.pack_into(self.buf, 0, next_pid, len(processes))

    def new_pid(self) -> int:
        with self._locked():
            pid, count = HEAD.unpack_from(self.buf, 0)
            HEAD.pack_into(self.buf, 0, pid + 1, count)
        return pid

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
            return self._entries().get(pid)

    def all(self) -> list[Process]:
        with self._locked():
            return list(self._entries().values())

    def update(self, p: Process) -> None:
        """Write back a process's group, session or end (as `find` gave it, changed)."""
        with self._locked():
            entries = self._entries()
            if p.pid in entries:
                entries[p.pid] = p
                self._write(list(entries.values()))

    def forget(self, pid: int) -> None:
        """A process waited for (or killed with its parent's invocation) is gone, and with
        it every process below it: their monitors die with their parents' (PDEATHSIG)."""
        with self._locked():
            entries = self._entries()
            kept = [p for p in entries.values()
                    if p.pid != pid and pid not in self._ancestors(entries, p.pid)]
            self._write(kept)

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
