"""The guest's network interfaces, as rtnetlink dumps them and the SIOCGIF* ioctls tell.

The guest has one interface, the loopback "lo" (index 1) with 127.0.0.1/8 and ::1/128,
which is what its sockets reach (libos/guestnet.py). glibc's getifaddrs and if_nameindex
ask for it with RTM_GETLINK and RTM_GETADDR dumps on an AF_NETLINK socket (libzmq's bind,
psutil.net_if_addrs); any other request is answered with an NLMSG_ERROR of EOPNOTSUPP.
Nothing ever changes, so a multicast group joined gets no messages. if_nametoindex and
psutil.net_if_stats ask with ioctls on any socket (interface_ioctl).
"""

from __future__ import annotations

import errno
import socket
import stat as st
import struct
from collections import deque
from typing import TYPE_CHECKING

from .errors import SyscallError
from .files import O_NONBLOCK, O_RDWR, StreamFile
from .fs import Node
from .ipc import READABLE, WRITABLE
from .net import MSG_DONTWAIT, MSG_PEEK
from .sched import Block, WaitQueue

if TYPE_CHECKING:
    from .files import FdTable
    from .kernel import Kernel
    from .sched import Scheduler

AF_NETLINK, NETLINK_ROUTE = 16, 0
SOCKADDR_NL = struct.Struct("<HHIi")  # family, pad, port id, groups (signed as Python has it)
NLMSGHDR = struct.Struct("<IHHII")  # length, type, flags, sequence, port id
RTATTR = struct.Struct("<HH")  # length, type
IFINFOMSG = struct.Struct("<BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("<BBBBi")  # family, prefix length, flags, scope, index
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP = 0x2, 0x4, 0x300
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR = 16, 18, 20, 22
IFLA_ADDRESS, IFLA_BROADCAST, IFLA_IFNAME, IFLA_MTU, IFLA_TXQLEN = 1, 2, 3, 4, 13
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL = 1, 2, 3
ARPHRD_LOOPBACK, LOOPBACK_INDEX, LOOPBACK_MTU = 772, 1, 65536
IFF_UP, IFF_LOOPBACK, IFF_RUNNING, IFF_LOWER_UP = 0x1, 0x8, 0x40, 0x10000
IFA_F_PERMANENT, RT_SCOPE_HOST = 0x80, 254
SOL_NETLINK = 270
SO_TYPE, SO_PROTOCOL, SO_DOMAIN, SO_RCVBUF, SO_SNDBUF = 3, 38, 39, 8, 7
SOCK_RAW, SOCK_DGRAM = 3, 2
# The loopback's addresses: (family, prefix length, address).
LOOPBACK = ((socket.AF_INET, 8, socket.inet_pton(socket.AF_INET, "127.0.0.1")),
            (socket.AF_INET6, 128, socket.inet_pton(socket.AF_INET6, "::1")))


# The ioctls on a socket that name an interface in a struct ifreq (a 16-byte name, then a
# 24-byte union at IFREQ_DATA).
SIOCGIFNAME, SIOCGIFCONF, SIOCGIFFLAGS, SIOCGIFADDR = 0x8910, 0x8912, 0x8913, 0x8915
SIOCGIFNETMASK, SIOCGIFMTU, SIOCGIFHWADDR, SIOCGIFINDEX = 0x891B, 0x8921, 0x8927, 0x8933
SIOCETHTOOL = 0x8946
SIOCSIF_FIRST, SIOCSIF_LAST = 0x8911, 0x8937  # the set requests among them take CAP_NET_ADMIN
IFREQ, IFREQ_DATA, IFNAMSIZ = 40, 16, 16
IFCONF = struct.Struct("<i4xQ")  # length, buffer


def _sockaddr_in(address: bytes) -> bytes:
    return struct.pack("<HH4s8x", socket.AF_INET, 0, address)


def interface_ioctl(k: Kernel, request: int, arg: int) -> int:
    """A SIOCGIF* request about the loopback (any other name is ENODEV)."""
    if request == SIOCGIFCONF:
        return _ifconf(k, arg)
    if request == SIOCGIFNAME:
        if struct.unpack("<i", k.mem.read(arg + IFREQ_DATA, 4))[0] != LOOPBACK_INDEX:
            raise SyscallError(errno.ENODEV)
        k.mem.write(arg, b"lo".ljust(IFNAMSIZ, b"\0"))
        return 0
    answers = {
        SIOCGIFFLAGS: struct.pack("<H", IFF_UP | IFF_LOOPBACK | IFF_RUNNING),
        SIOCGIFADDR: _sockaddr_in(LOOPBACK[0][2]),
        SIOCGIFNETMASK: _sockaddr_in(bytes([255, 0, 0, 0])),
        SIOCGIFMTU: struct.pack("<i", LOOPBACK_MTU),
        SIOCGIFHWADDR: struct.pack("<H6s8x", ARPHRD_LOOPBACK, bytes(6)),
        SIOCGIFINDEX: struct.pack("<i", LOOPBACK_INDEX),
    }
    if request not in answers and request != SIOCETHTOOL and not (
            SIOCSIF_FIRST <= request <= SIOCSIF_LAST):
        raise SyscallError(errno.ENOTTY)
    if k.mem.read(arg, IFNAMSIZ).split(b"\0", 1)[0] != b"lo":
        raise SyscallError(errno.ENODEV)
    if request not in answers:  # ethtool has nothing to say about lo; setting takes root
        raise SyscallError(errno.EOPNOTSUPP if request == SIOCETHTOOL else errno.EPERM)
    k.mem.write(arg + IFREQ_DATA, answers[request])
    return 0


def _ifconf(k: Kernel, arg: int) -> int:
    """SIOCGIFCONF: the IPv4 interfaces, one ifreq each (a NULL buffer: the room needed)."""
    length, buf = IFCONF.unpack(k.mem.read(arg, IFCONF.size))
    entry = b"lo".ljust(IFNAMSIZ, b"\0") + _sockaddr_in(LOOPBACK[0][2]).ljust(24, b"\0")
    if buf and length >= IFREQ:
        k.mem.write(buf, entry)
    k.mem.write(arg, struct.pack("<i", IFREQ if not buf or length >= IFREQ else 0))
    return 0


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, value: bytes) -> bytes:
    raw = RTATTR.pack(RTATTR.size + len(value), kind) + value
    return raw.ljust(_align(len(raw)), b"\0")


def _message(kind: int, flags: int, seq: int, port: int, body: bytes) -> bytes:
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, flags, seq, port) + body


def _links() -> list[bytes]:
    flags = IFF_UP | IFF_LOOPBACK | IFF_RUNNING | IFF_LOWER_UP
    return [IFINFOMSG.pack(socket.AF_UNSPEC, ARPHRD_LOOPBACK, LOOPBACK_INDEX, flags, 0)
            + _attr(IFLA_IFNAME, b"lo\0") + _attr(IFLA_ADDRESS, bytes(6))
            + _attr(IFLA_BROADCAST, bytes(6)) + _attr(IFLA_MTU, struct.pack("<I", LOOPBACK_MTU))
            + _attr(IFLA_TXQLEN, struct.pack("<I", 1000))]


def _addresses(family: int) -> list[bytes]:
    out = []
    for fam, prefix, raw in LOOPBACK:
        if family in (socket.AF_UNSPEC, fam):
            head = IFADDRMSG.pack(fam, prefix, IFA_F_PERMANENT, RT_SCOPE_HOST, LOOPBACK_INDEX)
            label = _attr(IFA_LABEL, b"lo\0") if fam == socket.AF_INET else b""
            local = _attr(IFA_LOCAL, raw) if fam == socket.AF_INET else b""
            out.append(head + _attr(IFA_ADDRESS, raw) + local + label)
    return out


class NetlinkSocket(StreamFile):
    """A NETLINK_ROUTE socket: each request's answer is queued as datagrams at once."""

    def __init__(self, sched: Scheduler, fds: FdTable, sock_type: int, flags: int, ino: int,
                 pid: int):
        super().__init__(Node(st.S_IFSOCK | 0o777, ino), O_RDWR | flags, "socket:")
        self.sched = sched
        self.fds = fds  # the process's fd table, whose netlink sockets' port ids are taken
        self.sock_type = sock_type
        self.port = 0  # its port id, given at bind or at the first send (autobind)
        self.process = pid
        self.groups = 0
        self.replies: deque[bytes] = deque()
        self.queue = WaitQueue()
        self.options: dict[tuple[int, int], bytes] = {}

    def _taken(self) -> set[int]:
        return {f.port for f in self.fds.files.values()
                if isinstance(f, NetlinkSocket) and f is not self and f.port}

    def bind(self, port: int, groups: int) -> None:
        if self.port and port and port != self.port:
            raise SyscallError(errno.EINVAL)
        taken = self._taken()
        if port and port in taken:
            raise SyscallError(errno.EADDRINUSE)
        self.port = self.port or port or self._free_port(taken)
        self.groups = groups

    def _free_port(self, taken: set[int]) -> int:
        """The process's pid for its first socket, as Linux gives; then unused negatives."""
        if self.process not in taken:
            return self.process
        port = -4096
        while port in taken:
            port -= 1
        return port & 0xFFFFFFFF

    def name(self) -> bytes:
        return SOCKADDR_NL.pack(AF_NETLINK, 0, self.port, self.groups)

    def send(self, data: bytes) -> int:
        """Requests to the kernel (port id 0), each answered at once."""
        if not self.port:
            self.bind(0, self.groups)
        at = 0
        while at + NLMSGHDR.size <= len(data):
            length, kind, flags, seq, _ = NLMSGHDR.unpack_from(data, at)
            if length < NLMSGHDR.size or at + length > len(data):
                break  # Linux ignores a truncated message
            self._answer(kind, flags, seq, data[at:at + length])
            at += _align(length)
        self.changed()
        return len(data)

    def _answer(self, kind: int, flags: int, seq: int, request: bytes) -> None:
        body = request[NLMSGHDR.size:]
        if kind in (RTM_GETLINK, RTM_GETADDR) and flags & NLM_F_DUMP == NLM_F_DUMP:
            family = body[0] if body else socket.AF_UNSPEC
            parts = _links() if kind == RTM_GETLINK else _addresses(family)
            reply = RTM_NEWLINK if kind == RTM_GETLINK else RTM_NEWADDR
            self.replies.append(b"".join(_message(reply, NLM_F_MULTI, seq, self.port, p)
                                         for p in parts)
                                + _message(NLMSG_DONE, NLM_F_MULTI, seq, self.port,
                                           struct.pack("<i", 0)))
        elif kind >= 16:  # a request of rtnetlink's this monitor does not serve
            self._error(-errno.EOPNOTSUPP, seq, request)
        elif flags & NLM_F_ACK:  # a control message (NLMSG_NOOP...): acknowledged
            self._error(0, seq, request)

    def _error(self, code: int, seq: int, request: bytes) -> None:
        self.replies.append(_message(NLMSG_ERROR, 0, seq, self.port,
                                     struct.pack("<i", code) + request[:NLMSGHDR.size]))

    def receive(self, room: int, flags: int) -> tuple[bytes, int]:
        """One datagram, cut to room, and its whole length (MSG_PEEK leaves it queued)."""
        if not self.replies:
            if self.flags & O_NONBLOCK or flags & MSG_DONTWAIT:
                raise SyscallError(errno.EAGAIN)
            raise Block((self.queue,), self.sched.deadline_after(None))
        data = self.replies[0] if flags & MSG_PEEK else self.replies.popleft()
        return data[:room], len(data)

    def changed(self) -> None:
        self.queue.wake(self.sched)

    def read(self, length: int) -> bytes:
        return self.receive(length, 0)[0]

    def write(self, data: memoryview) -> int:
        return self.send(bytes(data))

    def poll(self) -> int:
        return WRITABLE | (READABLE if self.replies else 0)

    def ioctl(self, k: Kernel, request: int, arg: int) -> int:
        return interface_ioctl(k, request, arg)

    def wait_queues(self) -> tuple[WaitQueue, ...]:
        return (self.queue,)

    def setsockopt(self, level: int, name: int, value: bytes) -> None:
        if level not in (socket.SOL_SOCKET, SOL_NETLINK):
            raise SyscallError(errno.ENOPROTOOPT)
        if len(value) < 4:
            raise SyscallError(errno.EINVAL)
        self.options[(level, name)] = value[:4]

    def getsockopt(self, level: int, name: int) -> bytes:
        fixed = {(socket.SOL_SOCKET, SO_TYPE): self.sock_type,
                 (socket.SOL_SOCKET, SO_PROTOCOL): NETLINK_ROUTE,
                 (socket.SOL_SOCKET, SO_DOMAIN): AF_NETLINK}
        if (level, name) in fixed:
            return struct.pack("<i", fixed[(level, name)])
        if (level, name) in self.options:
            return self.options[(level, name)]
        if (level, name) in ((socket.SOL_SOCKET, SO_RCVBUF), (socket.SOL_SOCKET, SO_SNDBUF)):
            return struct.pack("<i", 212992)  # Linux's net.core.rmem_default
        raise SyscallError(errno.ENOPROTOOPT)
