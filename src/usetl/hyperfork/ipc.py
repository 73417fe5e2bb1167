"""Messages between a controller and its template and clone processes.

A message is a pickled Python object behind a 4-byte length, on a Unix
stream socket; file descriptors (a new clone's socket) travel alongside
with SCM_RIGHTS. Both ends are usetl processes of the same installation.
"""

from __future__ import annotations

import pickle
import socket
import struct

from usetl.errors import UsetlError

_LENGTH = struct.Struct("<I")
MAX_FDS = 4


class HyperForkError(UsetlError):
    """A template or clone could not be made, or failed."""


class ChannelClosed(HyperForkError):
    """The process at the other end has gone (it exited or was killed)."""


class Channel:
    def __init__(self, sock: socket.socket):
        self.sock = sock

    @classmethod
    def pair(cls) -> tuple[Channel, Channel]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        return cls(a), cls(b)

    @classmethod
    def from_fd(cls, fd: int) -> Channel:
        return cls(socket.socket(fileno=fd))

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: object, fds: tuple[int, ...] = ()) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        frame = _LENGTH.pack(len(data)) + data
        try:
            if fds:
                sent = socket.send_fds(self.sock, [frame], list(fds))
                if sent < len(frame):
                    self.sock.sendall(frame[sent:])
            else:
                self.sock.sendall(frame)
        except OSError as e:
            raise ChannelClosed(f"the process went away ({e.strerror})") from None

    def recv(self) -> tuple[object, list[int]]:
        try:
            head, fds, _, _ = socket.recv_fds(self.sock, _LENGTH.size, MAX_FDS)
        except OSError as e:
            raise ChannelClosed(f"the process went away ({e.strerror})") from None
        if not head:
            raise ChannelClosed("the process went away")
        head += self._exactly(_LENGTH.size - len(head))
        (size,) = _LENGTH.unpack(head)
        return pickle.loads(self._exactly(size)), fds

    def _exactly(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ChannelClosed("the process went away mid-message")
            buf += chunk
        return bytes(buf)

    def request(self, message: object, fds: tuple[int, ...] = ()) -> object:
        """Send and wait for the answer; ("error", text) answers raise HyperForkError."""
        self.send(message, fds)
        reply, _ = self.recv()
        if isinstance(reply, tuple) and reply and reply[0] == "error":
            raise HyperForkError(reply[1])
        return reply

    def close(self) -> None:
        self.sock.close()

