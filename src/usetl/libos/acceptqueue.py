"""One accept queue for a listener that several processes of a tree hold (a fork's copy,
a program given it at execve), as Linux has one for a socket however many processes
hold it: a pre-fork server's workers each accept on their copy, and each connection is
accepted by exactly one of them.

The queue is a host SOCK_SEQPACKET socketpair that every holder's monitor has (a host
fd survives the fork and goes with the program). Each record is one connection: its host
socket (SCM_RIGHTS; the connection itself is a host socketpair, as one made across the
tree is) and its addresses. A holder queues at `connect_end` and takes at `accept_end`;
the host gives each record to one taker, and readiness is the host's (POLLIN on the
accept end in every process that waits). shutdown() of the listener in any process shuts
the accept end down for all of them (their accepts fail, as on Linux); the accept end
closed in every process hangs the connect end up: no one holds the listener any more.
"""

from __future__ import annotations

import errno
import socket

import msgspec

from .errors import SyscallError

RECORD_LIMIT = 1024  # a record's addresses: an AF_UNIX name is 108 bytes at most


class Queued(msgspec.Struct, forbid_unknown_fields=True):
    """A queued connection's addresses: the server end's own and its peer's (an inet
    address as a list, an AF_UNIX name as bytes, or None), and SO_PEERCRED's process."""

    local: list | bytes | None
    peer: list | bytes | None
    cred_pid: int = 0


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Queued)


class AcceptQueue:
    def __init__(self) -> None:
        accept_end, connect_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.accept_end: socket.socket | None = accept_end
        self.connect_end: socket.socket | None = connect_end
        for end in (accept_end, connect_end):
            end.setblocking(False)

    def __getstate__(self) -> dict:
        return {"accept_end": None, "connect_end": None}  # host sockets are one process's

    def host_fds(self) -> tuple[int, ...]:
        return tuple(end.fileno() for end in (self.accept_end, self.connect_end)
                     if end is not None)

    def put(self, conn: socket.socket, local: object, peer: object, cred_pid: int) -> None:
        """Queue a connection (the caller closes its copy of `conn`): EAGAIN if the queue
        is full, ECONNREFUSED if the listener was shut down or no process holds it."""
        if self.connect_end is None:
            raise SyscallError(errno.ECONNREFUSED)
        record = _encoder.encode(Queued(_plain(local), _plain(peer), cred_pid))
        try:
            socket.send_fds(self.connect_end, [record], [conn.fileno()], socket.MSG_NOSIGNAL)
        except BlockingIOError:
            raise SyscallError(errno.EAGAIN) from None
        except OSError:
            raise SyscallError(errno.ECONNREFUSED) from None

    def take(self) -> tuple[socket.socket, Queued] | None:
        """The oldest connection and its addresses; None if none is queued; EINVAL once the
        listener was shut down (as Linux's accept on a listener no longer listening)."""
        while True:
            if self.accept_end is None:
                raise SyscallError(errno.EINVAL)
            try:
                record, fds, _, _ = socket.recv_fds(self.accept_end, RECORD_LIMIT, 1,
                                                    socket.MSG_CMSG_CLOEXEC)
            except BlockingIOError:
                return None
            if not record and not fds:
                raise SyscallError(errno.EINVAL)
            taken = _connection(record, fds)
            if taken is not None:
                return taken

    def shut(self) -> None:
        """shutdown() of the listener: no accept takes anything in any process; the
        connections queued are closed (their clients see the end)."""
        if self.accept_end is None:
            return
        try:
            self.accept_end.shutdown(socket.SHUT_RDWR)
        except OSError:
            return
        while True:
            try:
                _, fds, _, _ = socket.recv_fds(self.accept_end, RECORD_LIMIT, 1)
            except OSError:
                return
            if not fds:
                return
            for fd in fds:
                socket.close(fd)

    def stop_taking(self) -> None:
        """This process no longer accepts (its copy was closed)."""
        if self.accept_end is not None:
            self.accept_end.close()
            self.accept_end = None

    def close(self) -> None:
        self.stop_taking()
        if self.connect_end is not None:
            self.connect_end.close()
            self.connect_end = None

    def forget(self) -> None:
        """A forked copy of a queue this process never held: its fd numbers are not its."""
        for end in (self.accept_end, self.connect_end):
            if end is not None:
                end.detach()
        self.accept_end = self.connect_end = None


def _plain(address: object) -> list | bytes | None:
    return list(address) if isinstance(address, tuple) else address  # type: ignore[return-value]


def _connection(record: bytes, fds: list[int]) -> tuple[socket.socket, Queued] | None:
    """A record's connection, or None (its fd closed) if it is not one: another monitor
    of the tree wrote it, and its guest may have taken it over."""
    try:
        queued = _decoder.decode(record)
        conn = socket.socket(fileno=fds.pop(0)) if len(fds) == 1 else None
    except (msgspec.ValidationError, msgspec.DecodeError, OSError):
        conn = None
    for fd in fds:
        socket.close(fd)
    if conn is None:
        return None
    if conn.family != socket.AF_UNIX:
        conn.close()
        return None
    return conn, queued
