"""How a controller learns a new jailed process's pid.

The process sends one byte with SCM_CREDENTIALS. The kernel checks the pid it claims and
translates it into the controller's PID namespace, so the controller gets the real pid
(to place it in its cgroup and to signal it) whatever namespace the process is in, and
nothing the process says about itself is believed.

The process does not wait to be placed: moving a process between cgroups (v1) waits for
an RCU grace period, about 10 ms, which the controller spends while the process makes
its VM. Until then it is held by its parent's cgroup, whose limits are as tight.
"""

from __future__ import annotations

import os
import socket
import struct

from .spec import JailError

_UCRED = struct.Struct("iII")
HELLO = b"J"


def announce(sock: socket.socket) -> None:
    """In the new process: who I am."""
    creds = _UCRED.pack(os.getpid(), os.getuid(), os.getgid())
    sock.sendmsg([HELLO], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)])


def expect(sock: socket.socket) -> None:
    """In the controller, before the process can send: ask the kernel for credentials."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)


def receive(sock: socket.socket) -> int:
    """In the controller: the announcing process's pid, in the controller's namespace."""
    data, ancdata, _, _ = sock.recvmsg(1, socket.CMSG_SPACE(_UCRED.size))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 0)
    if data != HELLO:
        raise JailError("the new process did not announce itself" if not data
                        else f"the new process sent {data!r} instead of its credentials")
    for level, kind, value in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid, _, _ = _UCRED.unpack(value[: _UCRED.size])
            return pid
    raise JailError("the new process's credentials did not come with its announcement")
