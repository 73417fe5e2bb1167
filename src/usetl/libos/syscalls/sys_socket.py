"""Sockets: TCP clients proxied to host sockets under the policy, and AF_UNIX socketpairs.

Only what unmodified client code (urllib, http.client) needs: AF_INET and
AF_INET6 stream sockets that connect out. Listening is refused (EPERM),
other families are EAFNOSUPPORT, datagram and raw sockets EACCES (so
glibc's DNS over UDP fails at once; names come from /etc/hosts). With no
policy on the kernel (`Kernel.net is None`) every socket() is EACCES.
socketpair makes two connected AF_UNIX sockets held in the monitor
(libos/ipc.py); send and receive calls serve both kinds. poll, select and
epoll are in sys_poll.py.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct
from typing import TYPE_CHECKING

from usetl.errors import UsetlError

from ..errors import SyscallError
from ..files import O_CLOEXEC, O_NONBLOCK
from ..ipc import UNIX_CAPACITY, UnconnectedUnixSocket, UnixSocketFile, make_socketpair
from ..net import SocketFile
from .args import s32
from .sys_ipc import install_pair

if TYPE_CHECKING:
    from ..kernel import Kernel

log = logging.getLogger(__name__)

AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6
SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET, SOCK_TYPE_MASK = 1, 2, 5, 0xF
SOCK_NONBLOCK, SOCK_CLOEXEC = O_NONBLOCK, O_CLOEXEC
IPPROTO_TCP = 6
SOCKADDR_IN = struct.Struct("<H2s4s8x")  # family, port (network order), address
SOCKADDR_IN6 = struct.Struct("<H2s4s16sI")  # family, port, flowinfo, address, scope id
MSGHDR = struct.Struct("<QI4xQQQQi4x")  # name, namelen, iov, iovlen, control, controllen, flags
MAX_SOCKETS = 64  # open sockets per USF
MAX_OPTLEN = 256
SOL_SOCKET = socket.SOL_SOCKET
SO_RCVTIMEO, SO_SNDTIMEO = 20, 21
TIMEVAL = struct.Struct("<qq")

# Options passed through to the host socket: what CPython, http.client and
# urllib3 set or read. Anything else is ENOPROTOOPT.
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


def _socket(k: Kernel, fd: int) -> SocketFile:
    f = k.fds.get(s32(fd))
    if not isinstance(f, SocketFile):
        raise SyscallError(errno.EISCONN if isinstance(f, UnixSocketFile) else errno.ENOTSOCK)
    return f


def _any_socket(k: Kernel, fd: int) -> SocketFile | UnixSocketFile:
    """A proxied TCP socket or an end of a socketpair: both send and receive alike."""
    f = k.fds.get(s32(fd))
    if not isinstance(f, SocketFile | UnixSocketFile):
        raise SyscallError(errno.ENOTSOCK)
    return f


# -- creating and connecting -------------------------------------------------------


def sys_socket(k: Kernel, domain: int, type_: int, protocol: int, *_: int) -> int:
    domain, type_, protocol = s32(domain), s32(type_), s32(protocol)
    if domain == socket.AF_UNIX:
        return _unix_socket(k, type_, protocol)
    if domain not in (AF_INET, AF_INET6):
        raise SyscallError(errno.EAFNOSUPPORT)
    if k.net is None or type_ & SOCK_TYPE_MASK != SOCK_STREAM:
        raise SyscallError(errno.EACCES)
    if type_ & ~(SOCK_TYPE_MASK | SOCK_NONBLOCK | SOCK_CLOEXEC):
        raise SyscallError(errno.EINVAL)
    if protocol not in (0, IPPROTO_TCP):
        raise SyscallError(errno.EPROTONOSUPPORT)
    if sum(isinstance(f, SocketFile) for f in k.fds.files.values()) >= MAX_SOCKETS:
        raise SyscallError(errno.EMFILE)  # each is a host fd of the monitor's
    try:
        f = SocketFile(k, domain, nonblocking=bool(type_ & SOCK_NONBLOCK))
    except OSError as e:
        raise SyscallError(e.errno or errno.ENOBUFS) from None
    try:
        return k.fds.install(f, cloexec=bool(type_ & SOCK_CLOEXEC))
    except SyscallError:
        f.close()
        raise


def _unix_kind(type_: int, protocol: int) -> int:
    """The socket type an AF_UNIX socket() or socketpair() asks for, its flags checked."""
    if type_ & ~(SOCK_TYPE_MASK | SOCK_NONBLOCK | SOCK_CLOEXEC):
        raise SyscallError(errno.EINVAL)
    kind = type_ & SOCK_TYPE_MASK
    if kind not in (SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET):
        raise SyscallError(errno.ESOCKTNOSUPPORT)
    if protocol:
        raise SyscallError(errno.EPROTONOSUPPORT)
    return kind


def _unix_socket(k: Kernel, type_: int, protocol: int) -> int:
    """An AF_UNIX socket that will never connect: nothing in a USF can listen."""
    kind = _unix_kind(type_, protocol)
    f = UnconnectedUnixSocket(kind, type_ & SOCK_NONBLOCK, k.ns.inodes.next())
    return k.fds.install(f, cloexec=bool(type_ & SOCK_CLOEXEC))


def _read_sockaddr(k: Kernel, addr: int, addrlen: int, family: int) -> tuple:
    addrlen = s32(addrlen)
    if addrlen < 2 or addrlen > 128:
        raise SyscallError(errno.EINVAL)
    raw = k.mem.read(addr, addrlen)
    if int.from_bytes(raw[:2], "little") != family:
        raise SyscallError(errno.EAFNOSUPPORT)
    if family == AF_INET:
        if addrlen < 16:
            raise SyscallError(errno.EINVAL)
        _, port, ip = SOCKADDR_IN.unpack_from(raw)
        return (str(ipaddress.IPv4Address(ip)), int.from_bytes(port, "big"))
    if addrlen < 28:
        raise SyscallError(errno.EINVAL)
    _, port, flow, ip, scope = SOCKADDR_IN6.unpack_from(raw)
    return (str(ipaddress.IPv6Address(ip)), int.from_bytes(port, "big"),
            int.from_bytes(flow, "big"), scope)  # fmt: skip


def _pack_sockaddr(family: int, address: tuple) -> bytes:
    port = address[1].to_bytes(2, "big")
    if family == AF_INET:
        return SOCKADDR_IN.pack(AF_INET, port, ipaddress.IPv4Address(address[0]).packed)
    ip = ipaddress.IPv6Address(address[0].split("%", 1)[0]).packed
    return SOCKADDR_IN6.pack(AF_INET6, port, address[2].to_bytes(4, "big"), ip, address[3])


def _policy_host(ip: str) -> str:
    """The address the policy judges: an IPv4-mapped IPv6 address is its IPv4 address."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def sys_connect(k: Kernel, fd: int, addr: int, addrlen: int, *_: int) -> int:
    if isinstance(k.fds.get(s32(fd)), UnconnectedUnixSocket):
        raise SyscallError(errno.ENOENT)  # no socket file can exist: bind is refused
    f = _socket(k, fd)
    address = _read_sockaddr(k, addr, addrlen, f.family)
    if k.net is None:
        raise SyscallError(errno.EACCES)
    host, port = _policy_host(address[0]), address[1]
    try:
        k.net.check_socket(host, port)
    except UsetlError as e:
        log.info("connect to %s:%d refused: %s", host, port, e)
        raise SyscallError(errno.EACCES) from None
    f.connect(address)
    return 0


def _refuse_listening(k: Kernel, fd: int, *_: int) -> int:
    _any_socket(k, fd)
    raise SyscallError(errno.EPERM)


sys_bind = sys_listen = sys_accept = sys_accept4 = _refuse_listening


def sys_socketpair(k: Kernel, domain: int, type_: int, protocol: int, sv: int, *_: int) -> int:
    """A connected pair of AF_UNIX sockets within the guest (asyncio's self-pipe)."""
    domain, type_, protocol = s32(domain), s32(type_), s32(protocol)
    if domain != socket.AF_UNIX:
        raise SyscallError(errno.EAFNOSUPPORT if domain not in (AF_INET, AF_INET6)
                           else errno.EOPNOTSUPP)
    kind = _unix_kind(type_, protocol)
    a, b = make_socketpair(k.sched, kind, type_ & SOCK_NONBLOCK, k.ns.inodes)
    return install_pair(k, a, b, bool(type_ & SOCK_CLOEXEC), sv)


def sys_shutdown(k: Kernel, fd: int, how: int, *_: int) -> int:
    f = _any_socket(k, fd)
    if isinstance(f, UnixSocketFile):
        f.shutdown(s32(how))
        return 0
    try:
        f.host.shutdown(s32(how))
    except OSError as e:
        raise SyscallError(e.errno or errno.EINVAL) from None
    return 0


def _put_sockaddr(k: Kernel, f: SocketFile | UnixSocketFile, address: tuple, addr: int,
                  addrlen_ptr: int) -> int:
    """Write a socket address as Linux does: truncated to *addrlen, which gets the full size."""
    if isinstance(f, UnixSocketFile):
        raw = socket.AF_UNIX.to_bytes(2, "little")  # unnamed
    else:
        raw = _pack_sockaddr(f.family, address)
    room = s32(k.mem.u32(addrlen_ptr))
    if room < 0:
        raise SyscallError(errno.EINVAL)
    k.mem.write(addr, raw[:room])
    k.mem.put_u32(addrlen_ptr, len(raw))
    return 0


def sys_getsockname(k: Kernel, fd: int, addr: int, addrlen: int, *_: int) -> int:
    f = _any_socket(k, fd)
    if isinstance(f, UnixSocketFile):
        return _put_sockaddr(k, f, (), addr, addrlen)
    return _put_sockaddr(k, f, f.host.getsockname(), addr, addrlen)


def sys_getpeername(k: Kernel, fd: int, addr: int, addrlen: int, *_: int) -> int:
    f = _any_socket(k, fd)
    if isinstance(f, UnixSocketFile):
        return _put_sockaddr(k, f, (), addr, addrlen)
    try:
        peer = f.host.getpeername()
    except OSError as e:
        raise SyscallError(e.errno or errno.ENOTCONN) from None
    return _put_sockaddr(k, f, peer, addr, addrlen)


# -- options ------------------------------------------------------------------------


def sys_setsockopt(k: Kernel, fd: int, level: int, name: int, val: int, length: int,
                   *_: int) -> int:  # fmt: skip
    f = _any_socket(k, fd)
    level, name, length = s32(level), s32(name), s32(length)
    if not 0 <= length <= MAX_OPTLEN:
        raise SyscallError(errno.EINVAL)
    value = k.mem.read(val, length)
    if isinstance(f, UnixSocketFile):
        if level != SOL_SOCKET:
            raise SyscallError(errno.EOPNOTSUPP)
        return 0  # buffer sizes and timeouts are accepted and not applied
    if level == SOL_SOCKET and name in (SO_RCVTIMEO, SO_SNDTIMEO):
        if length < TIMEVAL.size:
            raise SyscallError(errno.EINVAL)
        sec, usec = TIMEVAL.unpack_from(value)
        if sec < 0 or not 0 <= usec < 1_000_000:
            raise SyscallError(errno.EDOM)
        timeout = None if sec == usec == 0 else sec + usec / 1e6
        if name == SO_RCVTIMEO:
            f.recv_timeout = timeout
        else:
            f.send_timeout = timeout
        return 0
    if (level, name) not in HOST_OPTIONS:
        raise SyscallError(errno.ENOPROTOOPT)
    try:
        f.host.setsockopt(level, name, value)
    except OSError as e:
        raise SyscallError(e.errno or errno.EINVAL) from None
    return 0


def sys_getsockopt(k: Kernel, fd: int, level: int, name: int, val: int, length_ptr: int,
                   *_: int) -> int:  # fmt: skip
    f = _any_socket(k, fd)
    level, name = s32(level), s32(name)
    room = s32(k.mem.u32(length_ptr))
    if room < 0:
        raise SyscallError(errno.EINVAL)
    if isinstance(f, UnixSocketFile):
        value = _unix_option(f, level, name)
    elif level == SOL_SOCKET and name in (SO_RCVTIMEO, SO_SNDTIMEO):
        timeout = f.recv_timeout if name == SO_RCVTIMEO else f.send_timeout
        sec, frac = divmod(timeout or 0.0, 1.0)
        value = TIMEVAL.pack(int(sec), round(frac * 1e6))
    elif (level, name) in HOST_OPTIONS:
        try:
            value = f.host.getsockopt(level, name, min(max(room, 4), MAX_OPTLEN))
        except OSError as e:
            raise SyscallError(e.errno or errno.EINVAL) from None
    else:
        raise SyscallError(errno.ENOPROTOOPT)
    value = value[:room]
    k.mem.write(val, value)
    k.mem.put_u32(length_ptr, len(value))
    return 0


def _unix_option(f: UnixSocketFile, level: int, name: int) -> bytes:
    values = {socket.SO_TYPE: f.sock_type, socket.SO_DOMAIN: socket.AF_UNIX,
              socket.SO_PROTOCOL: 0, socket.SO_ERROR: 0, socket.SO_ACCEPTCONN: 0,
              socket.SO_RCVBUF: UNIX_CAPACITY, socket.SO_SNDBUF: UNIX_CAPACITY}  # fmt: skip
    if level != SOL_SOCKET or name not in values:
        raise SyscallError(errno.ENOPROTOOPT)
    return struct.pack("<i", values[name])


# -- data -----------------------------------------------------------------------------


def sys_sendto(k: Kernel, fd: int, buf: int, length: int, flags: int, *_: int) -> int:
    # The destination address is ignored: a stream socket sends to its peer.
    f = _any_socket(k, fd)
    return f.send([k.mem.slice(buf, min(length, 0x7FFFF000))], s32(flags))


def sys_recvfrom(k: Kernel, fd: int, buf: int, length: int, flags: int, addr: int,
                 addrlen: int) -> int:  # fmt: skip
    f = _any_socket(k, fd)
    dest = k.mem.slice(buf, min(length, 0x7FFFF000), write=True)
    n = f.recv_into(dest, s32(flags))
    if addr and addrlen:
        k.mem.put_u32(addrlen, 0)  # TCP reports no source address
    return n


def _msghdr(k: Kernel, msg: int) -> tuple[list[memoryview], tuple]:
    fields = MSGHDR.unpack(k.mem.read(msg, MSGHDR.size))
    _, _, iov, iovlen, control, controllen, _ = fields
    if control and controllen:
        raise SyscallError(errno.EOPNOTSUPP)  # no ancillary data (no fd passing)
    buffers = [k.mem.slice(base, length, write=True) for base, length in k.mem.iovecs(iov, iovlen)]
    return buffers, fields


def sys_sendmsg(k: Kernel, fd: int, msg: int, flags: int, *_: int) -> int:
    f = _any_socket(k, fd)
    buffers, _ = _msghdr(k, msg)
    return f.send(buffers, s32(flags))


def sys_recvmsg(k: Kernel, fd: int, msg: int, flags: int, *_: int) -> int:
    f = _any_socket(k, fd)
    buffers, fields = _msghdr(k, msg)
    n = f.recv_vectored(buffers, s32(flags))
    name, _, iov, iovlen, control, _, _ = fields
    k.mem.write(msg, MSGHDR.pack(name, 0, iov, iovlen, control, 0, 0))  # no name, no control
    return n
