"""Sockets: in the guest (libos/guestnet.py), or TCP clients proxied to host sockets.

Every socket() is a GuestSocket. AF_INET and AF_INET6 stream and datagram
sockets bind to loopback or the wildcard in the guest's own port space,
listen and accept; AF_UNIX ones bind to a path under /tmp or an abstract
name. A connect reaches a guest listener when one holds the address (an
in-monitor connection, as a socketpair); any other stream connect is
proxied to a host socket where the policy allows (the connection made by
the egress, libos/net.py: in a jailed clone the broker), else EACCES (with no
policy on the kernel, `Kernel.net is None`, always). Datagrams go between
guest sockets only. Nothing outside the VM can connect in. poll, select
and epoll are in sys_poll.py.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct
from typing import TYPE_CHECKING

from usetl.errors import UsetlError

from ..children import connect_in_tree, file_of_host_fd, host_fds_of
from ..errors import SyscallError
from ..files import O_CLOEXEC, O_NONBLOCK
from ..guestnet import (
    AF_UNIX,
    SO_RCVTIMEO,
    SO_SNDTIMEO,
    SOCK_DGRAM,
    SOCK_STREAM,
    GuestSocket,
    inet_key,
    is_local,
    pack_timeout,
    parse_timeout,
)
from ..ipc import Ancillary, make_socketpair
from ..net import SocketFile
from ..netlink import AF_NETLINK, NetlinkSocket
from ..sigdelivery import sigpipe_on_epipe
from . import sys_netlink as nl
from .args import s32
from .sys_ipc import install_pair

if TYPE_CHECKING:
    from ..kernel import Kernel

log = logging.getLogger(__name__)

AF_UNSPEC, AF_INET, AF_INET6 = 0, socket.AF_INET, socket.AF_INET6
SOCK_RAW, SOCK_SEQPACKET, SOCK_TYPE_MASK, SOCK_MAX = 3, 5, 0xF, 11
SOCK_NONBLOCK, SOCK_CLOEXEC = O_NONBLOCK, O_CLOEXEC
IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE = 6, 17, 136
SOCKADDR_IN = struct.Struct("<H2s4s8x")  # family, port (network order), address
SOCKADDR_IN6 = struct.Struct("<H2s4s16sI")  # family, port, flowinfo, address, scope id
SUN_PATH_MAX = 108
MSGHDR = struct.Struct("<QI4xQQQQi4x")  # name, namelen, iov, iovlen, control, controllen, flags
CMSGHDR = struct.Struct("<Qii")  # cmsg_len, cmsg_level, cmsg_type
SCM_RIGHTS, SCM_MAX_FD, MAX_CONTROL = 1, 253, 20480  # Linux's net.core.optmem_max
IPPROTO_IPV6, IPV6_HOPLIMIT, IPV6_TCLASS = 41, 52, 67
MSG_PEEK, MSG_CTRUNC, MSG_TRUNC, MSG_CMSG_CLOEXEC = 0x2, 0x8, 0x20, 0x40000000
MAX_SOCKETS = 64  # proxied sockets per USF: each is a host fd of the monitor's
MAX_OPTLEN = 256
SOL_SOCKET = socket.SOL_SOCKET

# Options passed through to a proxied socket's host socket: what CPython,
# http.client and urllib3 set or read. Anything else is ENOPROTOOPT.
HOST_OPTIONS = {
    (SOL_SOCKET, socket.SO_KEEPALIVE), (SOL_SOCKET, socket.SO_ERROR),
    (SOL_SOCKET, socket.SO_TYPE), (SOL_SOCKET, socket.SO_REUSEADDR),
    (SOL_SOCKET, socket.SO_RCVBUF), (SOL_SOCKET, socket.SO_SNDBUF),
    (SOL_SOCKET, socket.SO_LINGER), (SOL_SOCKET, socket.SO_DOMAIN),
    (SOL_SOCKET, socket.SO_PROTOCOL), (SOL_SOCKET, socket.SO_ACCEPTCONN),
    (IPPROTO_TCP, socket.TCP_NODELAY), (IPPROTO_TCP, socket.TCP_KEEPIDLE),
    (IPPROTO_TCP, socket.TCP_KEEPINTVL), (IPPROTO_TCP, socket.TCP_KEEPCNT),
    (IPPROTO_TCP, socket.TCP_USER_TIMEOUT), (IPPROTO_TCP, socket.TCP_MAXSEG),
    (socket.IPPROTO_IP, socket.IP_TOS), (socket.IPPROTO_IPV6, socket.IPV6_V6ONLY),
}  # fmt: skip


def _netlink(k: Kernel, fd: int) -> NetlinkSocket | None:
    """The fd's netlink socket, whose calls sys_netlink.py serves; None for any other file."""
    f = k.fds.get(s32(fd))
    return f if isinstance(f, NetlinkSocket) else None


def _socket(k: Kernel, fd: int) -> GuestSocket:
    f = k.fds.get(s32(fd))
    if isinstance(f, NetlinkSocket):
        raise SyscallError(errno.EOPNOTSUPP)  # listen, accept, shutdown: not on netlink
    if not isinstance(f, GuestSocket):
        raise SyscallError(errno.ENOTSOCK)
    return f


# -- creating ------------------------------------------------------------------------


def _kind(domain: int, type_: int, protocol: int) -> int:
    """The socket type socket() or socketpair() asks for, its flags and protocol checked."""
    if type_ & ~(SOCK_TYPE_MASK | SOCK_NONBLOCK | SOCK_CLOEXEC):
        raise SyscallError(errno.EINVAL)
    kind = type_ & SOCK_TYPE_MASK
    if domain == AF_UNIX:
        if kind not in (SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET):
            raise SyscallError(errno.ESOCKTNOSUPPORT)
        if protocol:
            raise SyscallError(errno.EPROTONOSUPPORT)
        return kind
    if kind == SOCK_RAW:
        raise SyscallError(errno.EPERM)  # raw sockets need CAP_NET_RAW
    wanted = {SOCK_STREAM: (IPPROTO_TCP,), SOCK_DGRAM: (IPPROTO_UDP, IPPROTO_UDPLITE)}.get(kind)
    if wanted is None:
        raise SyscallError(errno.ESOCKTNOSUPPORT if kind >= SOCK_MAX else errno.EPROTONOSUPPORT)
    if protocol and protocol not in wanted:
        raise SyscallError(errno.EPROTONOSUPPORT)
    return kind


def sys_socket(k: Kernel, domain: int, type_: int, protocol: int, *_: int) -> int:
    domain, type_, protocol = s32(domain), s32(type_), s32(protocol)
    if domain == AF_NETLINK:
        return nl.socket_(k, type_, protocol)
    if domain not in (AF_UNIX, AF_INET, AF_INET6):
        raise SyscallError(errno.EAFNOSUPPORT)
    kind = _kind(domain, type_, protocol)
    f = GuestSocket(k.guest_net, domain, kind, type_ & SOCK_NONBLOCK, k.ns.inodes.next(),
                    protocol)
    return k.fds.install(f, cloexec=bool(type_ & SOCK_CLOEXEC))


def sys_socketpair(k: Kernel, domain: int, type_: int, protocol: int, sv: int, *_: int) -> int:
    """A connected pair of AF_UNIX sockets within the guest (asyncio's self-pipe)."""
    domain, type_, protocol = s32(domain), s32(type_), s32(protocol)
    if domain != AF_UNIX:
        raise SyscallError(errno.EAFNOSUPPORT if domain not in (AF_INET, AF_INET6)
                           else errno.EOPNOTSUPP)
    kind = _kind(domain, type_, protocol)
    ends = make_socketpair(k.sched, kind, 0, k.ns.inodes)
    pair = []
    for end in ends:
        f = GuestSocket(k.guest_net, AF_UNIX, kind, type_ & SOCK_NONBLOCK, k.ns.inodes.next())
        f.conn, f.cred_pid = end, k.identity.pid
        pair.append(f)
    return install_pair(k, pair[0], pair[1], bool(type_ & SOCK_CLOEXEC), sv)


# -- addresses ------------------------------------------------------------------------


def _read_sockaddr(k: Kernel, addr: int, addrlen: int, family: int) -> tuple | bytes:
    """A guest sockaddr: an inet tuple as Python's socket module has it, or an AF_UNIX name
    (a path without its NUL, an abstract name with its leading NUL, b"" for none)."""
    addrlen = s32(addrlen)
    if addrlen < 2 or addrlen > 128:
        raise SyscallError(errno.EINVAL)
    raw = k.mem.read(addr, addrlen)
    if int.from_bytes(raw[:2], "little") != family:
        raise SyscallError(errno.EINVAL if family == AF_UNIX else errno.EAFNOSUPPORT)
    if family == AF_UNIX:
        if addrlen > 2 + SUN_PATH_MAX:
            raise SyscallError(errno.EINVAL)
        name = bytes(raw[2:])
        return name if name.startswith(b"\0") else name.split(b"\0", 1)[0]
    if family == AF_INET:
        if addrlen < 16:
            raise SyscallError(errno.EINVAL)
        _, port, ip = SOCKADDR_IN.unpack_from(raw)
        return (str(ipaddress.IPv4Address(ip)), int.from_bytes(port, "big"))
    if addrlen < 24:  # sin6_scope_id is optional, as in Linux's SIN6_LEN_RFC2133
        raise SyscallError(errno.EINVAL)
    raw = bytes(raw[:28]).ljust(28, b"\0")
    _, port, flow, ip, scope = SOCKADDR_IN6.unpack_from(raw)
    return (str(ipaddress.IPv6Address(ip)), int.from_bytes(port, "big"),
            int.from_bytes(flow, "big"), scope)  # fmt: skip


def _pack_sockaddr(family: int, address: tuple | bytes | None) -> bytes:
    if family == AF_UNIX:
        name = address if isinstance(address, bytes) else b""
        if name and not name.startswith(b"\0"):
            name += b"\0"  # Linux counts a path's NUL in the length it reports
        return AF_UNIX.to_bytes(2, "little") + name
    if address is None:
        address = ("0.0.0.0", 0) if family == AF_INET else ("::", 0, 0, 0)
    assert isinstance(address, tuple)
    port = address[1].to_bytes(2, "big")
    if family == AF_INET:
        return SOCKADDR_IN.pack(AF_INET, port, ipaddress.IPv4Address(address[0]).packed)
    ip = ipaddress.IPv6Address(address[0].split("%", 1)[0]).packed
    flow, scope = (address[2], address[3]) if len(address) == 4 else (0, 0)
    return SOCKADDR_IN6.pack(AF_INET6, port, flow.to_bytes(4, "big"), ip, scope)


def _put_sockaddr(k: Kernel, family: int, address: tuple | bytes | None, addr: int,
                  addrlen_ptr: int) -> None:
    """Write a socket address as Linux does: truncated to *addrlen, which gets the full size."""
    raw = _pack_sockaddr(family, address)
    room = s32(k.mem.u32(addrlen_ptr))
    if room < 0:
        raise SyscallError(errno.EINVAL)
    k.mem.write(addr, raw[:room])
    k.mem.put_u32(addrlen_ptr, len(raw))


def _policy_host(ip: str) -> str:
    """The address the policy judges: an IPv4-mapped IPv6 address is its IPv4 address."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


# -- bind, listen, accept, connect ------------------------------------------------------


def sys_bind(k: Kernel, fd: int, addr: int, addrlen: int, *_: int) -> int:
    if (n := _netlink(k, fd)) is not None:
        return nl.bind(k, n, addr, addrlen)
    f = _socket(k, fd)
    f.bind(_read_sockaddr(k, addr, addrlen, f.family), k.umask)
    return 0


def sys_listen(k: Kernel, fd: int, backlog: int, *_: int) -> int:
    _socket(k, fd).listen(s32(backlog))
    return 0


def sys_accept4(k: Kernel, fd: int, addr: int, addrlen: int, flags: int, *_: int) -> int:
    f = _socket(k, fd)
    flags = s32(flags)
    if flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC):
        raise SyscallError(errno.EINVAL)
    if addr:
        k.mem.slice(addrlen, 4, write=True)  # EFAULT before a connection is taken
    s = f.accept(flags)
    try:
        new = k.fds.install(s, cloexec=bool(flags & SOCK_CLOEXEC))
    except SyscallError:
        assert f.backlog is not None
        f.backlog.appendleft(s)  # EMFILE: the connection waits for the next accept
        raise
    if addr:
        _put_sockaddr(k, s.family, s.peer, addr, addrlen)
    return new


def sys_accept(k: Kernel, fd: int, addr: int, addrlen: int, *_: int) -> int:
    return sys_accept4(k, fd, addr, addrlen, 0)


def sys_connect(k: Kernel, fd: int, addr: int, addrlen: int, *_: int) -> int:
    if (n := _netlink(k, fd)) is not None:
        return nl.connect(k, n, addr, addrlen)
    f = _socket(k, fd)
    if f.sock_type == SOCK_DGRAM and f.conn is None:
        return _connect_datagram(k, f, addr, addrlen)
    address = _read_sockaddr(k, addr, addrlen, f.family)
    if f.proxied:
        f.connection().connect(address)  # again: how the host's connect went, or EISCONN
        return 0
    if f.conn is not None or (f.backlog is not None and f.family != AF_UNIX):
        raise SyscallError(errno.EISCONN)
    if f.backlog is not None:
        raise SyscallError(errno.EINVAL)
    if isinstance(address, bytes):
        if not address:
            raise SyscallError(errno.EINVAL)
        holder = k.guest_net.holder_elsewhere(address)
        if holder is not None:
            connect_in_tree(k, f, holder, address)
            return 0
        listener = k.guest_net.find_unix(address)
        if listener.backlog is None:
            raise SyscallError(errno.ECONNREFUSED)
        f.connect_guest(listener, address)
        return 0
    key = inet_key(f.family, address[0])
    # Another process's listener first: one this process has may be a fork's copy of it.
    holder = k.guest_net.listener_elsewhere(f, address[1]) if is_local(key) else None
    if holder is not None:
        connect_in_tree(k, f, holder, address)
        return 0
    found = k.guest_net.find_inet(f.protocol, key, address[1], listening=True)
    if found is not None:
        f.connect_guest(found, address)
        return 0
    _connect_host(k, f, address)
    return 0


def _connect_datagram(k: Kernel, f: GuestSocket, addr: int, addrlen: int) -> int:
    """A datagram socket's default peer; AF_UNSPEC dissolves it."""
    if s32(addrlen) >= 2 and int.from_bytes(k.mem.read(addr, 2), "little") == AF_UNSPEC:
        f.set_peer(None)
        return 0
    address = _read_sockaddr(k, addr, addrlen, f.family)
    if isinstance(address, bytes):
        k.guest_net.find_unix(address)  # ENOENT or ECONNREFUSED as on Linux
    f.set_peer(address)
    return 0


def _connect_host(k: Kernel, f: GuestSocket, address: tuple) -> None:
    """No guest listener there: a host socket, where the policy allows.

    A loopback address the policy does not grant is the guest's own loopback, where
    nothing listens: ECONNREFUSED, as Linux answers. Any other refused address is EACCES.
    """
    host, port = _policy_host(address[0]), address[1]
    denied = errno.ECONNREFUSED if ipaddress.ip_address(host).is_loopback else errno.EACCES
    if k.net is None:
        raise SyscallError(denied)
    try:
        k.net.check_socket(host, port)
    except UsetlError as e:
        log.info("connect to %s:%d refused: %s", host, port, e)
        raise SyscallError(denied) from None
    if sum(isinstance(s, GuestSocket) and s.proxied for s in k.fds.files.values()) >= MAX_SOCKETS:
        raise SyscallError(errno.EMFILE)
    f.connect_host(k, address)


def sys_shutdown(k: Kernel, fd: int, how: int, *_: int) -> int:
    _socket(k, fd).shutdown(s32(how))
    return 0


def sys_getsockname(k: Kernel, fd: int, addr: int, addrlen: int, *_: int) -> int:
    if (n := _netlink(k, fd)) is not None:
        return nl.getsockname(k, n, addr, addrlen)
    f = _socket(k, fd)
    if f.proxied:
        local = f.conn.host.getsockname()
    else:
        local = f.local
    _put_sockaddr(k, f.family, local, addr, addrlen)
    return 0


def sys_getpeername(k: Kernel, fd: int, addr: int, addrlen: int, *_: int) -> int:
    if (n := _netlink(k, fd)) is not None:
        return nl.getpeername(k, n, addr, addrlen)
    f = _socket(k, fd)
    if f.proxied:
        try:
            peer = f.conn.host.getpeername()
        except OSError as e:
            raise SyscallError(e.errno or errno.ENOTCONN) from None
    elif (f.conn is None and f.peer is None) or f.aborted:
        raise SyscallError(errno.ENOTCONN)
    else:
        peer = f.peer  # None for an unnamed AF_UNIX peer
    _put_sockaddr(k, f.family, peer, addr, addrlen)
    return 0


# -- options ------------------------------------------------------------------------


def sys_setsockopt(k: Kernel, fd: int, level: int, name: int, val: int, length: int,
                   *_: int) -> int:  # fmt: skip
    if (n := _netlink(k, fd)) is not None:
        return nl.setsockopt(k, n, level, name, val, length)
    f = _socket(k, fd)
    level, name, length = s32(level), s32(name), s32(length)
    if not 0 <= length <= MAX_OPTLEN:
        raise SyscallError(errno.EINVAL)
    value = bytes(k.mem.read(val, length))
    if not f.proxied:
        f.setsockopt(level, name, value)
        return 0
    proxy = f.conn
    if level == SOL_SOCKET and name in (SO_RCVTIMEO, SO_SNDTIMEO):
        timeout = parse_timeout(value)
        if name == SO_RCVTIMEO:
            proxy.recv_timeout = timeout
        else:
            proxy.send_timeout = timeout
        return 0
    if (level, name) not in HOST_OPTIONS:
        raise SyscallError(errno.ENOPROTOOPT)
    try:
        proxy.set_option(level, name, value)
    except OSError as e:
        raise SyscallError(e.errno or errno.EINVAL) from None
    return 0


def sys_getsockopt(k: Kernel, fd: int, level: int, name: int, val: int, length_ptr: int,
                   *_: int) -> int:  # fmt: skip
    if (n := _netlink(k, fd)) is not None:
        return nl.getsockopt(k, n, level, name, val, length_ptr)
    f = _socket(k, fd)
    level, name = s32(level), s32(name)
    room = s32(k.mem.u32(length_ptr))
    if room < 0:
        raise SyscallError(errno.EINVAL)
    proxy = f.conn
    if not f.proxied:
        value = f.getsockopt(level, name)
    elif level == SOL_SOCKET and name in (SO_RCVTIMEO, SO_SNDTIMEO):
        value = pack_timeout(proxy.recv_timeout if name == SO_RCVTIMEO else proxy.send_timeout)
    elif (level, name) in HOST_OPTIONS:
        try:
            value = proxy.host.getsockopt(level, name, min(max(room, 4), MAX_OPTLEN))
        except OSError as e:
            raise SyscallError(e.errno or errno.EINVAL) from None
    else:
        raise SyscallError(errno.ENOPROTOOPT)
    value = value[:room]
    k.mem.write(val, value)
    k.mem.put_u32(length_ptr, len(value))
    return 0


# -- data -----------------------------------------------------------------------------


def _datagram_socket(f: GuestSocket) -> bool:
    """Sends and receives with addresses: a datagram socket not made by socketpair."""
    return f.sock_type == SOCK_DGRAM and f.conn is None


def sys_sendto(k: Kernel, fd: int, buf: int, length: int, flags: int, addr: int,
               addrlen: int) -> int:  # fmt: skip
    if (n := _netlink(k, fd)) is not None:
        return nl.sendto(k, n, buf, length, addr, addrlen)
    f = _socket(k, fd)
    data = k.mem.slice(buf, min(length, 0x7FFFF000))
    if _datagram_socket(f) and addr:
        address = _read_sockaddr(k, addr, addrlen, f.family)
        return f.send_datagram(bytes(data), address, s32(flags))
    with sigpipe_on_epipe(k, s32(flags)):
        return f.send([data], s32(flags))  # a stream socket sends to its peer: no address


def sys_recvfrom(k: Kernel, fd: int, buf: int, length: int, flags: int, addr: int,
                 addrlen: int) -> int:  # fmt: skip
    if (n := _netlink(k, fd)) is not None:
        return nl.recvfrom(k, n, buf, length, flags, addr, addrlen)
    f = _socket(k, fd)
    dest = k.mem.slice(buf, min(length, 0x7FFFF000), write=True)
    if _datagram_socket(f):
        data, source, ancillary, whole = f.receive_datagram(len(dest), s32(flags))
        if ancillary is not None and not flags & MSG_PEEK:
            ancillary.drop(k.fds)  # no control buffer: passed files are closed, as on Linux
        dest[: len(data)] = data
        if addr and addrlen:
            _put_sockaddr(k, f.family, source, addr, addrlen)
        return whole if flags & MSG_TRUNC else len(data)
    n = f.recv_into(dest, s32(flags))
    if addr and addrlen:
        k.mem.put_u32(addrlen, 0)  # a stream socket reports no source address
    return n


def _msghdr(k: Kernel, msg: int) -> tuple[list[memoryview], tuple]:
    fields = MSGHDR.unpack(k.mem.read(msg, MSGHDR.size))
    _, _, iov, iovlen, _, _, _ = fields
    buffers = [k.mem.slice(base, length, write=True) for base, length in k.mem.iovecs(iov, iovlen)]
    return buffers, fields


def _cmsg_int(data: bytes) -> int:
    """An IPv6 hop limit or traffic class: -1 (the default) to 255."""
    if len(data) < 4:
        raise SyscallError(errno.EINVAL)
    value = int.from_bytes(data[:4], "little", signed=True)
    if not -1 <= value <= 255:
        raise SyscallError(errno.EINVAL)
    return value


def _ancillary(k: Kernel, f: GuestSocket, control: int, length: int) -> Ancillary | None:
    """sendmsg's control messages: SCM_RIGHTS on AF_UNIX, IPV6_HOPLIMIT and IPV6_TCLASS on
    IPv6 datagrams; anything else is EINVAL, as Linux answers a message it does not take."""
    if not control or not length:
        return None
    if length > MAX_CONTROL:
        raise SyscallError(errno.ENOBUFS)
    raw = bytes(k.mem.read(control, length))
    files: list = []
    values: dict[int, int] = {}
    at = 0
    while at + CMSGHDR.size <= len(raw):
        size, level, kind = CMSGHDR.unpack_from(raw, at)
        if size < CMSGHDR.size or at + size > len(raw):
            raise SyscallError(errno.EINVAL)
        data = raw[at + CMSGHDR.size : at + size]
        if (level, kind) == (SOL_SOCKET, SCM_RIGHTS) and f.family == AF_UNIX:
            fds = struct.unpack(f"<{len(data) // 4}i", data[: len(data) // 4 * 4])
            if len(files) + len(fds) > SCM_MAX_FD:
                raise SyscallError(errno.EINVAL)
            files += [k.fds.get(fd) for fd in fds]
        elif level == IPPROTO_IPV6 and kind in (IPV6_HOPLIMIT, IPV6_TCLASS) \
                and f.family == AF_INET6 and f.sock_type == SOCK_DGRAM:
            values[kind] = _cmsg_int(data)
        else:
            raise SyscallError(errno.EINVAL)
        at += _align(size)
    if not files and not values:
        return None
    hops, tclass = values.get(IPV6_HOPLIMIT, -1), values.get(IPV6_TCLASS, -1)
    return Ancillary(files, None if hops == -1 else hops, None if tclass == -1 else tclass)


def _align(n: int) -> int:
    return (n + 7) & ~7


def sys_sendmsg(k: Kernel, fd: int, msg: int, flags: int, *_: int) -> int:
    if (n := _netlink(k, fd)) is not None:
        return nl.sendmsg(k, n, msg)
    f = _socket(k, fd)
    buffers, fields = _msghdr(k, msg)
    name, namelen, _, _, control, controllen, _ = fields
    ancillary = _ancillary(k, f, control, controllen)
    if ancillary is not None and ancillary.files and isinstance(f.conn, SocketFile):
        ancillary.host_fds = host_fds_of(k, ancillary.files)  # to another process
    if _datagram_socket(f) and name and namelen:
        address = _read_sockaddr(k, name, namelen, f.family)
        return f.send_datagram(b"".join(buffers), address, s32(flags), ancillary)
    with sigpipe_on_epipe(k, s32(flags)):
        return f.send(buffers, s32(flags), ancillary)


class ControlWriter:
    """recvmsg's control buffer, filled as Linux's put_cmsg and scm_detach_fds fill it:
    what does not fit is cut and flagged MSG_CTRUNC."""

    def __init__(self, k: Kernel, addr: int, room: int):
        self.k, self.addr, self.room, self.used = k, addr, max(room, 0), 0
        self.truncated = False

    def put(self, level: int, kind: int, data: bytes) -> None:
        if self.room < CMSGHDR.size:
            self.truncated = True
            return
        size = CMSGHDR.size + len(data)
        if self.room < size:
            self.truncated = True
            size = self.room
        raw = CMSGHDR.pack(size, level, kind) + data
        self.k.mem.write(self.addr + self.used, raw[:size])
        self._advance(min(_align(CMSGHDR.size + len(data)), self.room))

    def _advance(self, n: int) -> None:
        self.used += n
        self.room -= n

    def put_files(self, files: list, cloexec: bool, peek: bool) -> None:
        """SCM_RIGHTS: as many new fds as fit; the files of the rest are dropped."""
        fits = (self.room - CMSGHDR.size) // 4 if self.room > CMSGHDR.size else 0
        fds = []
        for f in files[:fits]:
            try:
                fds.append(self.k.fds.install(f, cloexec=cloexec))
            except SyscallError:
                break  # EMFILE: the rest are cut, as Linux does
        if not peek:
            for f in files:
                self.k.fds.release(f)
        if fds:
            data = struct.pack(f"<{len(fds)}i", *fds)
            self.k.mem.write(self.addr + self.used,
                             CMSGHDR.pack(CMSGHDR.size + len(data), SOL_SOCKET, SCM_RIGHTS) + data)
            self._advance(min(_align(CMSGHDR.size + len(data)), self.room))
        if len(fds) < len(files):
            self.truncated = True


def _put_ancillary(k: Kernel, f: GuestSocket, ancillary: Ancillary | None, control: int,
                   controllen: int, flags: int) -> ControlWriter:
    out = ControlWriter(k, control, controllen if control else 0)
    if ancillary is None:
        return out
    if ancillary.files:
        out.put_files(ancillary.files, bool(flags & MSG_CMSG_CLOEXEC), bool(flags & MSG_PEEK))
    if ancillary.hoplimit is not None and f.option_on("recvhoplimit"):
        out.put(IPPROTO_IPV6, IPV6_HOPLIMIT, struct.pack("<i", ancillary.hoplimit))
    if ancillary.tclass is not None and f.option_on("recvtclass"):
        out.put(IPPROTO_IPV6, IPV6_TCLASS, struct.pack("<i", ancillary.tclass))
    return out


def sys_recvmsg(k: Kernel, fd: int, msg: int, flags: int, *_: int) -> int:
    if (n := _netlink(k, fd)) is not None:
        return nl.recvmsg(k, n, msg, flags)
    f = _socket(k, fd)
    flags = s32(flags)
    buffers, fields = _msghdr(k, msg)
    name, namelen, iov, iovlen, control, controllen, _ = fields
    room = sum(len(b) for b in buffers)
    if isinstance(f.conn, SocketFile):  # a host socket: straight into the buffers
        n, fds = f.recv_with_fds(buffers, flags, SCM_MAX_FD if control else 0)
        files = [g for fd in fds if (g := file_of_host_fd(k, fd)) is not None]
        for g in files:
            g.in_flight += 1  # held by the message until installed (put_files)
        written = _put_ancillary(k, f, Ancillary(files), control, controllen, flags)
        k.mem.write(msg, MSGHDR.pack(name, 0, iov, iovlen, control, written.used,
                                     MSG_CTRUNC if written.truncated else 0))
        return n
    data, source, ancillary, whole = f.recv_message(room, flags)
    at = 0
    for b in buffers:
        take = min(len(b), len(data) - at)
        b[:take] = data[at : at + take]
        at += take
    raw = _pack_sockaddr(f.family, source) if name and _datagram_socket(f) else b""
    if raw:
        k.mem.write(name, raw[: min(namelen, len(raw))])
    written = _put_ancillary(k, f, ancillary, control, controllen, flags)
    message = f.sock_type != SOCK_STREAM  # a datagram or record cut short is MSG_TRUNC
    out_flags = (MSG_TRUNC if message and whole > len(data) else 0) | (
        MSG_CTRUNC if written.truncated else 0)
    k.mem.write(msg, MSGHDR.pack(name, len(raw), iov, iovlen, control, written.used, out_flags))
    return whole if message and flags & MSG_TRUNC else len(data)
