"""The socket calls on an AF_NETLINK socket (libos/netlink.py); sys_socket.py hands them here."""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING

from ..errors import SyscallError
from ..files import O_CLOEXEC, O_NONBLOCK
from ..netlink import AF_NETLINK, NETLINK_ROUTE, SOCK_DGRAM, SOCK_RAW, SOCKADDR_NL, NetlinkSocket
from .args import s32

if TYPE_CHECKING:
    from ..kernel import Kernel

KERNEL = SOCKADDR_NL.pack(AF_NETLINK, 0, 0, 0)  # the other end of every request
MSGHDR = struct.Struct("<QI4xQQQQi4x")
MSG_TRUNC = 0x20
MAX_REQUEST = 1 << 16


def socket_(k: Kernel, type_: int, protocol: int) -> int:
    if type_ & ~(0xF | O_NONBLOCK | O_CLOEXEC):
        raise SyscallError(errno.EINVAL)
    kind = type_ & 0xF
    if kind not in (SOCK_RAW, SOCK_DGRAM):
        raise SyscallError(errno.ESOCKTNOSUPPORT)
    if protocol != NETLINK_ROUTE:
        raise SyscallError(errno.EPROTONOSUPPORT)  # the only family of netlink's served here
    f = NetlinkSocket(k.sched, k.fds, kind, type_ & O_NONBLOCK, k.ns.inodes.next(),
                      k.identity.pid)
    return k.fds.install(f, cloexec=bool(type_ & O_CLOEXEC))


def _address(k: Kernel, addr: int, addrlen: int) -> tuple[int, int]:
    """A sockaddr_nl's port id and groups."""
    if s32(addrlen) < SOCKADDR_NL.size:
        raise SyscallError(errno.EINVAL)
    family, _, port, groups = SOCKADDR_NL.unpack(k.mem.read(addr, SOCKADDR_NL.size))
    if family != AF_NETLINK:
        raise SyscallError(errno.EINVAL)
    return port, groups & 0xFFFFFFFF


def _to_kernel(k: Kernel, addr: int, addrlen: int) -> None:
    """A destination given must be the kernel (port id 0): no other process is reachable."""
    if addr and s32(addrlen):
        port, _ = _address(k, addr, addrlen)
        if port != 0:
            raise SyscallError(errno.ECONNREFUSED)


def _put(k: Kernel, raw: bytes, addr: int, addrlen_ptr: int) -> None:
    room = s32(k.mem.u32(addrlen_ptr))
    if room < 0:
        raise SyscallError(errno.EINVAL)
    k.mem.write(addr, raw[:room])
    k.mem.put_u32(addrlen_ptr, len(raw))


def bind(k: Kernel, f: NetlinkSocket, addr: int, addrlen: int) -> int:
    f.bind(*_address(k, addr, addrlen))
    return 0


def connect(k: Kernel, f: NetlinkSocket, addr: int, addrlen: int) -> int:
    _to_kernel(k, addr, max(s32(addrlen), 1))
    f.bind(0, f.groups)
    return 0


def getsockname(k: Kernel, f: NetlinkSocket, addr: int, addrlen: int) -> int:
    _put(k, f.name(), addr, addrlen)
    return 0


def getpeername(k: Kernel, f: NetlinkSocket, addr: int, addrlen: int) -> int:
    _put(k, KERNEL, addr, addrlen)
    return 0


def setsockopt(k: Kernel, f: NetlinkSocket, level: int, name: int, val: int, length: int) -> int:
    if not 0 <= s32(length) <= 256:
        raise SyscallError(errno.EINVAL)
    f.setsockopt(s32(level), s32(name), bytes(k.mem.read(val, s32(length))))
    return 0


def getsockopt(k: Kernel, f: NetlinkSocket, level: int, name: int, val: int,
               length_ptr: int) -> int:  # fmt: skip
    room = s32(k.mem.u32(length_ptr))
    if room < 0:
        raise SyscallError(errno.EINVAL)
    value = f.getsockopt(s32(level), s32(name))[:room]
    k.mem.write(val, value)
    k.mem.put_u32(length_ptr, len(value))
    return 0


def sendto(k: Kernel, f: NetlinkSocket, buf: int, length: int, addr: int, addrlen: int) -> int:
    _to_kernel(k, addr, addrlen)
    return f.send(bytes(k.mem.read(buf, min(length, MAX_REQUEST))))


def recvfrom(k: Kernel, f: NetlinkSocket, buf: int, length: int, flags: int, addr: int,
             addrlen: int) -> int:  # fmt: skip
    data, whole = f.receive(min(length, 0x7FFFF000), s32(flags))
    k.mem.write(buf, data)
    if addr and addrlen:
        _put(k, KERNEL, addr, addrlen)
    return whole if s32(flags) & MSG_TRUNC else len(data)


def sendmsg(k: Kernel, f: NetlinkSocket, msg: int) -> int:
    name, namelen, iov, iovlen, _, _, _ = MSGHDR.unpack(k.mem.read(msg, MSGHDR.size))
    _to_kernel(k, name, namelen)
    data = b"".join(bytes(k.mem.read(base, length)) for base, length in k.mem.iovecs(iov, iovlen))
    return f.send(data[:MAX_REQUEST])


def recvmsg(k: Kernel, f: NetlinkSocket, msg: int, flags: int) -> int:
    """One reply datagram into the buffers, the kernel as its source (glibc checks it)."""
    name, namelen, iov, iovlen, control, _, _ = MSGHDR.unpack(k.mem.read(msg, MSGHDR.size))
    buffers = [k.mem.slice(base, length, write=True) for base, length in k.mem.iovecs(iov, iovlen)]
    data, whole = f.receive(sum(len(b) for b in buffers), s32(flags))
    at = 0
    for b in buffers:
        take = min(len(b), len(data) - at)
        b[:take] = data[at:at + take]
        at += take
    named = KERNEL[:s32(namelen)] if name else b""
    if named:
        k.mem.write(name, named)
    out_flags = MSG_TRUNC if whole > len(data) else 0
    k.mem.write(msg, MSGHDR.pack(name, len(KERNEL) if name else 0, iov, iovlen, control, 0,
                                 out_flags))
    return whole if s32(flags) & MSG_TRUNC else len(data)
