"""Sockets within one USF: bound, listening, accepted and connected inside the guest.

Linux's loopback is the model. Every socket() the guest makes is a
GuestSocket held in the monitor. bind takes an address in the guest's own
port space (AF_INET/AF_INET6 on loopback or the wildcard; AF_UNIX by a path
in the tmpfs or an abstract name), listen makes it accept, and a connect to
a guest listener makes an in-monitor connection: two channels, as a
socketpair (libos/ipc.py). A stream connect to any other address is proxied
to a host socket (net.SocketFile) under the policy, as before. Nothing
outside the VM can reach a guest listener: the VM has no network device.
Datagrams travel between guest sockets only.

An AF_UNIX name (a path, by its absolute form: unix_key; or an abstract
name) and a TCP port a socket listens on (listener_name) are the process
tree's once the process has children: its process table (proctree.py)
holds which process bound or listens there, a bind of it elsewhere in the
tree is EADDRINUSE, and a stream connect to it from another process
reaches the listener through a host socketpair that travels along the
monitors' control sockets (children.connect_in_tree), as on Linux, where
every process of a machine sees one namespace and one loopback; another
invocation's tree never sees them. A listener a fork copied stays its
parent's: connections reach the process that listened.

A connected socket hands its calls to its connection (`conn`: a channel
end, or the host socket), which keeps the semantics those already have.
"""

from __future__ import annotations

import errno
import ipaddress
import posixpath
import select
import socket
import stat as st
import struct
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from . import sharedtmp
from .acceptqueue import AcceptQueue
from .errors import SyscallError
from .files import O_NONBLOCK, O_RDWR, StreamFile
from .fs import Node, TmpDir, TmpSocket
from .ipc import READABLE, UNIX_CAPACITY, WRITABLE, Ancillary, Channel, UnixSocketFile
from .net import MSG_DONTWAIT, MSG_PEEK, POLLHUP, POLLIN, POLLOUT, SocketFile
from .netlink import interface_ioctl
from .proctree import RUNNING
from .sched import Block, WaitQueue

T = TypeVar("T")

if TYPE_CHECKING:
    from .fs import Namespace
    from .kernel import Kernel
    from .proctree import Connect, ProcessTable
    from .sched import Scheduler

AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10
SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET = 1, 2, 5
EPHEMERAL_FIRST, EPHEMERAL_LAST = 32768, 60999  # Linux's net.ipv4.ip_local_port_range
PRIVILEGED_PORTS = 1024  # below it bind is EACCES: the guest's user is not root
SOMAXCONN = 4096
MAX_UDP_PAYLOAD = 65507
DEFAULT_HOPS = 64  # Linux's net.ipv6.conf.*.hop_limit
WILDCARD = "*"

Address = tuple | bytes  # an inet (host, port[, flowinfo, scope]) tuple, or an AF_UNIX name
Key = tuple[int, str]  # (4 or 6, an address or WILDCARD): where an inet socket is bound


def inet_key(family: int, host: str) -> Key:
    """The address an inet socket's address names, an IPv4-mapped one as IPv4."""
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return (ip.version, WILDCARD)
    return (ip.version, str(ip))


def _binding(family: int, host: str, v6only: bool) -> frozenset[Key]:
    """What a bind covers: an AF_INET6 wildcard without V6ONLY takes IPv4's too."""
    key = inet_key(family, host)
    if key == (6, WILDCARD) and not v6only:
        return frozenset({key, (4, WILDCARD)})
    return frozenset({key})


def listener_name(protocol: int, port: int) -> bytes:
    """How the tree names a TCP port listened on (no AF_UNIX name is like it: a path's
    key is absolute, an abstract one starts with NUL)."""
    return b"inet:%d:%d" % (protocol, port)


def _overlap(a: frozenset[Key], b: frozenset[Key]) -> bool:
    return any(v1 == v2 and WILDCARD in (h1, h2) or (v1, h1) == (v2, h2)
               for v1, h1 in a for v2, h2 in b)


def is_local(key: Key) -> bool:
    """Is key an address of the guest's own (its loopback, or the wildcard)?"""
    version, host = key
    return host == WILDCARD or ipaddress.ip_address(host).is_loopback


def _destination(key: Key) -> Key:
    """Where a connect to `key` goes: the wildcard means this host (loopback), as on Linux."""
    if key[1] == WILDCARD:
        return (key[0], "127.0.0.1" if key[0] == 4 else "::1")
    return key


def _inet_address(value: tuple) -> tuple | None:
    """An inet address another monitor of the tree sent, if it is one."""
    if len(value) not in (2, 4) or not isinstance(value[0], str) or not all(
            isinstance(n, int) and not isinstance(n, bool) for n in value[1:]):
        return None
    try:
        inet_key(AF_INET6 if len(value) == 4 else AF_INET, value[0])
    except ValueError:
        return None
    return value


def _queued_address(value: list | bytes | None) -> Address | None:
    """An address a queued connection carries, as a socket keeps it (an inet one only if it
    is one: another monitor of the tree wrote it)."""
    if isinstance(value, list):
        return _inet_address(tuple(value))
    return value


def _host_poll(fd: int | None) -> int:
    if fd is None:
        return POLLHUP
    poller = select.poll()
    poller.register(fd, POLLIN)
    ready = poller.poll(0)
    return ready[0][1] if ready else 0


def _as_family(family: int, address: tuple) -> tuple:
    """An inet address as a socket of `family` sees it: IPv4 in an AF_INET6 socket is mapped."""
    if family == AF_INET6 and len(address) == 2:
        return (f"::ffff:{address[0]}", address[1], 0, 0)
    if family == AF_INET and len(address) == 4:
        return (inet_key(AF_INET6, address[0])[1], address[1])
    return address


class GuestNet:
    """The guest's own addresses: inet ports per protocol, abstract AF_UNIX names."""

    def __init__(self, sched: Scheduler, ns: Namespace):
        self.sched = sched
        self.ns = ns
        self.ports: dict[tuple[int, int], list[GuestSocket]] = {}  # (protocol, port) -> bound
        self.abstract: dict[bytes, GuestSocket] = {}
        self.paths: dict[bytes, GuestSocket] = {}  # unix_key -> the socket bound to that path
        self.next_port = EPHEMERAL_FIRST

    def _conflicts(self, s: GuestSocket, port: int, binding: frozenset[Key]) -> bool:
        for other in self.ports.get((s.protocol, port), ()):
            if other is s or not _overlap(binding, other.binding):
                continue
            if s.option_on("reuseport") and other.option_on("reuseport"):
                continue
            if s.option_on("reuseaddr") and other.option_on("reuseaddr") and (
                    s.sock_type == SOCK_DGRAM or other.backlog is None):
                continue
            return True
        return False

    def bind_inet(self, s: GuestSocket, host: str, port: int, v6only: bool) -> int:
        """Take host:port for s (port 0: a free ephemeral one); the port it got."""
        binding = _binding(s.family, host, v6only)
        if not all(is_local(key) for key in binding):
            raise SyscallError(errno.EADDRNOTAVAIL)  # the guest has loopback only
        if port == 0:
            port = self._ephemeral(s, binding)
        elif port < PRIVILEGED_PORTS:
            raise SyscallError(errno.EACCES)
        elif self._conflicts(s, port, binding) or (
                not s.option_on("reuseport") and self.listener_elsewhere(s, port) is not None):
            raise SyscallError(errno.EADDRINUSE)
        s.binding = binding
        self.ports.setdefault((s.protocol, port), []).append(s)
        return port

    def _ephemeral(self, s: GuestSocket, binding: frozenset[Key]) -> int:
        span = EPHEMERAL_LAST - EPHEMERAL_FIRST + 1
        for _ in range(span):
            port = self.next_port
            self.next_port = EPHEMERAL_FIRST + (port - EPHEMERAL_FIRST + 1) % span
            if not self._conflicts(s, port, binding) and \
                    self.listener_elsewhere(s, port) is None:
                return port
        raise SyscallError(errno.EADDRINUSE)  # Linux's answer when the range is exhausted

    def check_listen(self, s: GuestSocket) -> None:
        """Two listeners on one address need SO_REUSEPORT, SO_REUSEADDR or not; in a tree,
        the port is this process's from now on."""
        for other in self.ports.get((s.protocol, s.port), ()):
            if other is not s and other.backlog is not None and _overlap(s.binding, other.binding) \
                    and not (s.option_on("reuseport") and other.option_on("reuseport")):
                raise SyscallError(errno.EADDRINUSE)
        if self.listener_elsewhere(s, s.port) is not None:
            raise SyscallError(errno.EADDRINUSE)
        s.tree_name = listener_name(s.protocol, s.port)
        tree = self._tree()
        if tree is not None:
            tree.hand_name(s.tree_name, self.sched.k.identity.pid)  # an ended holder's too

    def listener_elsewhere(self, s: GuestSocket, port: int) -> int | None:
        """The running process of the tree other than this one that listens on `port` for
        stream socket s's protocol, if one does."""
        if s.sock_type != SOCK_STREAM:
            return None
        holder = self._holder_elsewhere(listener_name(s.protocol, port))
        tree = self._tree()
        found = None if holder is None or tree is None else tree.find(holder)
        return holder if found is not None and found.ended == RUNNING else None

    def find_inet(self, protocol: int, key: Key, port: int, listening: bool
                  ) -> GuestSocket | None:
        """The guest socket bound where a connect or datagram to key:port arrives."""
        version, host = _destination(key)
        for s in self.ports.get((protocol, port), ()):
            if listening and s.backlog is None:
                continue
            if any(v == version and h in (host, WILDCARD) for v, h in s.binding):
                return s
        return None

    def bind_unix(self, s: GuestSocket, name: bytes, umask: int) -> bytes:
        """Name s: a path (a socket file in the tmpfs), an abstract name, or (b"") one made up;
        in a process tree, a name no other process of it holds."""
        if not name:
            name = self._autobind_name()
        if name.startswith(b"\0"):
            if name in self.abstract:
                raise SyscallError(errno.EADDRINUSE)
            self._claim(name)
            self.abstract[name] = s
            return name
        r = self.ns.resolve(name.decode("utf-8", "surrogateescape"), follow=False)
        if r.node is not None:
            raise SyscallError(errno.EADDRINUSE)
        if r.parent is None:
            raise SyscallError(errno.ENOENT)
        shared = sharedtmp.holds(r.parent)
        if not isinstance(r.parent, TmpDir) and not shared:
            raise SyscallError(errno.EROFS if r.parent.is_dir else errno.ENOTDIR)
        key = self.unix_key(name)
        self._claim(key)
        if shared:  # its name a host socket node, which every process of the tree sees
            sharedtmp.mknod(self.sched.k, r.parent, r.name, st.S_IFSOCK | 0o777)
        else:
            s.name_node = TmpSocket(self.ns.tmp.new_ino(), 0o777 & ~umask, s)
            r.parent.add(r.name, s.name_node)
        self.paths[key] = s
        return name

    def unix_key(self, name: bytes) -> bytes:
        """How the tree names an AF_UNIX address: an abstract name as it is, a path as the
        absolute path it is from the cwd (its directory may exist in one process's /tmp
        only: each has a copy)."""
        if name.startswith(b"\0"):
            return name
        cwd = self.ns.cwd.encode("utf-8", "surrogateescape")  # a path's bytes, any of them
        return posixpath.normpath(posixpath.join(cwd, name))

    def tree_names(self) -> list[bytes]:
        """The keys of the AF_UNIX names bound and the TCP ports listened on here."""
        listening = {s.tree_name for bound in self.ports.values() for s in bound
                     if s.tree_name is not None and s.backlog is not None}
        return [*self.abstract, *self.paths, *listening]

    def _tree(self) -> ProcessTable | None:
        return self.sched.k.children.table

    def _claim(self, key: bytes) -> None:
        tree = self._tree()
        if tree is not None and not tree.claim_name(key, self.sched.k.identity.pid):
            raise SyscallError(errno.EADDRINUSE)

    def holder_elsewhere(self, name: bytes) -> int | None:
        """The other process of the tree that holds AF_UNIX address `name`, if one does."""
        return self._holder_elsewhere(self.unix_key(name))

    def _holder_elsewhere(self, key: bytes) -> int | None:
        tree = self._tree()
        holder = None if tree is None else tree.name_holder(key)
        return None if holder == self.sched.k.identity.pid else holder

    def keep_for_tree(self, s: GuestSocket) -> bool:
        """Does shared listener s, closed here, stay? It does where its name is this
        process's in the tree (connections to it arrive here): bound, queueing them, until
        no process holds it (its queue's connect end hangs up, seen by the watcher)."""
        tree = self._tree()
        pid = self.sched.k.identity.pid
        if tree is None or not s.is_listener() or tree.name_holder(
                s._name_in_tree(self)) != pid:
            return False
        assert s.accept_queue is not None and s.accept_queue.connect_end is not None
        s.accept_queue.stop_taking()
        s._stop_listening()
        s.backlog = deque()
        k = self.sched.k

        def hung_up(data: bytes, fds: list[int]) -> None:
            for fd in fds:
                socket.close(fd)
            if not data:
                k.sched.host.post(lambda: self.drop(s), k.vm.wake_now)

        k.children.watch().on_data(s.accept_queue.connect_end, hung_up)
        return True

    def drop(self, s: GuestSocket) -> None:
        """A shared listener closed here that no process holds any more: gone for good."""
        if s.closed_here:
            assert s.accept_queue is not None
            end = s.accept_queue.connect_end
            if end is not None:
                self.sched.k.children.watch().forget(end.fileno())
            s.release()

    def forget_closed(self) -> None:
        """In a forked child: the shared listeners its parent closed are not its own (their
        host fds did not come with the fork)."""
        for s in {s for bound in self.ports.values() for s in bound} | {
                *self.paths.values(), *self.abstract.values()}:
            if s.closed_here:
                assert s.accept_queue is not None
                s.accept_queue.forget()
                s.tree_name = None
                self.unbind(s)

    def accept_from_tree(self, message: Connect, conn: SocketFile) -> None:
        """A connection from another process of the tree to the listener it names: queued
        for its accept; closed (its client sees the end) if none listens there."""
        key = message.name
        listener = self._listener_at(key)
        tcp = key.startswith(b"inet:")
        addresses = (_inet_address(message.connected), _inet_address(message.client))
        if listener is None or listener.backlog is None or conn.host.type != listener.sock_type \
                or len(listener.backlog) > listener.backlog_limit \
                or tcp and None in addresses:
            conn.close()
            return
        server = GuestSocket(self, listener.family, listener.sock_type, 0,
                             self.ns.inodes.next(), listener.protocol)
        if tcp:
            server.local, server.peer = (_as_family(listener.family, a) for a in addresses)
        else:
            server.local, server.peer = listener.local, message.peer or None
            server.cred_pid = message.sender
        server.options = dict(listener.options)
        server.conn = conn
        if listener.accept_queue is None:
            listener.backlog.append(server)
            listener.changed()
            return
        try:
            listener.queue_connection(server)
        except SyscallError:
            conn.close()  # shut down, or full: its client sees the end

    def _listener_at(self, key: bytes) -> GuestSocket | None:
        if key.startswith(b"\0"):
            return self.abstract.get(key)
        return self.paths.get(key) or next(
            (s for bound in self.ports.values() for s in bound
             if s.backlog is not None and s.tree_name == key), None)

    def _autobind_name(self) -> bytes:
        for n in range(1 << 20):  # Linux's autobind: five hex digits in the abstract namespace
            name = b"\0%05x" % n
            if name not in self.abstract:
                return name
        raise SyscallError(errno.ENOSPC)

    def find_unix(self, name: bytes) -> GuestSocket:
        """The socket bound to an AF_UNIX name, or the errno Linux gives for it."""
        if name.startswith(b"\0"):
            s = self.abstract.get(name)
            if s is None:
                raise SyscallError(errno.ECONNREFUSED)
            return s
        r = self.ns.resolve(name.decode("utf-8", "surrogateescape"))
        if r.node is None:
            raise SyscallError(errno.ENOENT)
        if sharedtmp.holds(r.node) and st.S_ISSOCK(r.node.mode):
            endpoint = self.paths.get(self.unix_key(name))  # this process's, if bound here
        else:
            endpoint = r.node.endpoint if isinstance(r.node, TmpSocket) else None
        if not isinstance(endpoint, GuestSocket):
            raise SyscallError(errno.ECONNREFUSED)
        return endpoint

    def unbind(self, s: GuestSocket) -> None:
        bound = self.ports.get((s.protocol, s.port))
        if bound is not None and s in bound:
            bound.remove(s)
            if not bound:
                del self.ports[(s.protocol, s.port)]
        released = [s.tree_name] if s.tree_name is not None else []
        s.tree_name = None
        for names in (self.abstract, self.paths):
            for key in [key for key, bound in names.items() if bound is s]:
                del names[key]
                released.append(key)
        tree = self._tree()
        for key in released if tree is not None else ():
            tree.release_name(key, self.sched.k.identity.pid)
        if s.name_node is not None:
            s.name_node.endpoint = None  # the file stays, as on Linux: connect is then refused
            s.name_node = None


# Options kept on a socket in the monitor: (level, name) -> (its short name, default).
SOL_SOCKET, IPPROTO_IP, IPPROTO_TCP, IPPROTO_IPV6 = 1, 0, 6, 41
IPPROTO_UDP, IPPROTO_UDPLITE = 17, 136
SO_TYPE, SO_ERROR, SO_DOMAIN, SO_PROTOCOL, SO_ACCEPTCONN = 3, 4, 39, 38, 30
SO_PEERCRED = 17
SO_RCVBUF, SO_SNDBUF = 8, 7
SO_RCVTIMEO, SO_SNDTIMEO = 20, 21
OPTIONS = {
    (SOL_SOCKET, 2): "reuseaddr", (SOL_SOCKET, 15): "reuseport", (SOL_SOCKET, 9): "keepalive",
    (SOL_SOCKET, 6): "broadcast", (SOL_SOCKET, 10): "oobinline", (SOL_SOCKET, 12): "priority",
    (SOL_SOCKET, 16): "passcred", (SOL_SOCKET, 18): "rcvlowat", (SOL_SOCKET, 19): "sndlowat",
    (SOL_SOCKET, SO_RCVBUF): "rcvbuf", (SOL_SOCKET, SO_SNDBUF): "sndbuf",
    (SOL_SOCKET, 13): "linger",
    (IPPROTO_TCP, 1): "nodelay", (IPPROTO_TCP, 2): "maxseg", (IPPROTO_TCP, 4): "keepidle",
    (IPPROTO_TCP, 5): "keepintvl", (IPPROTO_TCP, 6): "keepcnt", (IPPROTO_TCP, 12): "quickack",
    (IPPROTO_TCP, 18): "user_timeout",
    (IPPROTO_IP, 1): "tos", (IPPROTO_IP, 2): "ttl", (IPPROTO_IPV6, 26): "v6only",
    (IPPROTO_IPV6, 16): "unicast_hops", (IPPROTO_IPV6, 67): "tclass",
    (IPPROTO_IPV6, 51): "recvhoplimit", (IPPROTO_IPV6, 66): "recvtclass",
    (IPPROTO_UDPLITE, 10): "send_cscov", (IPPROTO_UDPLITE, 11): "recv_cscov",
}  # fmt: skip
DEFAULTS = {"rcvbuf": UNIX_CAPACITY, "sndbuf": UNIX_CAPACITY, "ttl": 64, "maxseg": 536,
            "rcvlowat": 1, "sndlowat": 1, "linger": b"\0" * 8}  # fmt: skip
MIN_BUFFER = 2304  # Linux's SOCK_MIN_RCVBUF: smaller SO_RCVBUF/SO_SNDBUF values are raised


TIMEVAL = struct.Struct("<qq")
REPLAYED = ("reuseaddr", "keepalive", "nodelay", "keepidle", "keepintvl", "keepcnt",
            "user_timeout", "tos", "v6only")  # set on the host socket when one is made


def parse_timeout(value: bytes) -> float | None:
    """SO_RCVTIMEO/SO_SNDTIMEO's timeval: seconds, None for none (zero)."""
    if len(value) < TIMEVAL.size:
        raise SyscallError(errno.EINVAL)
    sec, usec = TIMEVAL.unpack_from(value)
    if sec < 0 or not 0 <= usec < 1_000_000:
        raise SyscallError(errno.EDOM)
    return None if sec == usec == 0 else sec + usec / 1e6


def pack_timeout(timeout: float | None) -> bytes:
    sec, frac = divmod(timeout or 0.0, 1.0)
    return TIMEVAL.pack(int(sec), round(frac * 1e6))


def _level_applies(family: int, sock_type: int, level: int) -> bool:
    if level == SOL_SOCKET:
        return True
    if family == AF_UNIX:
        return False
    if level == IPPROTO_TCP:
        return sock_type == SOCK_STREAM
    if level == IPPROTO_UDPLITE:
        return sock_type == SOCK_DGRAM
    return level == IPPROTO_IP or (level == IPPROTO_IPV6 and family == AF_INET6)


class GuestSocket(StreamFile):
    """A socket() of the guest's, in one of its states: fresh or bound, listening, connected
    within the guest (conn: a channel end), proxied to the host (conn: a SocketFile), or a
    datagram socket receiving into its own queue."""

    def __init__(self, net: GuestNet, family: int, sock_type: int, flags: int, ino: int,
                 protocol: int = 0):
        super().__init__(Node(st.S_IFSOCK | 0o777, ino), O_RDWR | flags, "socket:")
        self.net = net
        self.family = family
        self.sock_type = sock_type
        if family != AF_UNIX and not protocol:
            protocol = IPPROTO_TCP if sock_type == SOCK_STREAM else IPPROTO_UDP
        self.protocol = protocol  # ports are per protocol: UDP and UDP-Lite apart, as on Linux
        self.queue = WaitQueue()  # woken on changes of its own state (listen, accept, connect)
        self.changes = 0
        self.local: Address | None = None  # its bound address
        self.peer: Address | None = None
        self.binding: frozenset[Key] = frozenset()
        self.port = 0
        self.name_node: TmpSocket | None = None  # its name in the tmpfs
        self.tree_name: bytes | None = None  # a TCP listener's: listener_name
        self.options: dict[str, int | bytes] = {}
        self.conn: UnixSocketFile | SocketFile | None = None
        self.backlog: deque[GuestSocket] | None = None  # while listening: connections to accept
        self.backlog_limit = 0
        # Once other processes hold this listener: the tree's one queue of its connections
        # (acceptqueue.py); backlog then holds those this process took and has not accepted.
        self.accept_queue: AcceptQueue | None = None
        self.datagrams: deque[tuple[bytes, Address | None, Ancillary | None]] = deque()
        self.queued = 0  # bytes held in datagrams
        self.shut_read = False
        self.timeouts: dict[int, float | None] = {}  # SO_RCVTIMEO, SO_SNDTIMEO
        # SO_PEERCRED's process: an AF_UNIX peer's at connect or socketpair, a listener's
        # own at listen; 0 for none (no credentials, as for any inet socket)
        self.cred_pid = 0

    def changed(self) -> None:
        self.changes += 1
        self.queue.wake(self.net.sched)

    def ioctl(self, k: Kernel, request: int, arg: int) -> int:
        return interface_ioctl(k, request, arg)  # SIOCGIF*: which interfaces there are

    def option_on(self, name: str) -> bool:
        return bool(self.options.get(name))

    def setsockopt(self, level: int, name: int, value: bytes) -> None:
        """An option kept here (a proxied socket's go to its host socket instead)."""
        if not _level_applies(self.family, self.sock_type, level):
            raise SyscallError(errno.EOPNOTSUPP if self.family == AF_UNIX else errno.ENOPROTOOPT)
        if level == SOL_SOCKET and name in (SO_RCVTIMEO, SO_SNDTIMEO):
            self.timeouts[name] = parse_timeout(value)
            return
        short = OPTIONS.get((level, name))
        if short is None:
            raise SyscallError(errno.ENOPROTOOPT)
        if short == "linger":
            if len(value) < 8:
                raise SyscallError(errno.EINVAL)
            self.options[short] = bytes(value[:8])
            return
        if len(value) < 4:
            raise SyscallError(errno.EINVAL)
        number = int.from_bytes(value[:4], "little", signed=True)
        if short in ("rcvbuf", "sndbuf"):  # Linux doubles it, for its bookkeeping
            number = max(min(number, UNIX_CAPACITY) * 2, MIN_BUFFER)
        if short == "v6only" and self.local is not None:
            raise SyscallError(errno.EINVAL)
        self.options[short] = number

    def getsockopt(self, level: int, name: int) -> bytes:
        if level == SOL_SOCKET and name in (SO_RCVTIMEO, SO_SNDTIMEO):
            return pack_timeout(self.timeouts.get(name))
        if level == SOL_SOCKET and name == SO_PEERCRED:
            return self.peer_credentials()
        fixed = {SO_TYPE: self.sock_type, SO_DOMAIN: self.family, SO_PROTOCOL: self.protocol,
                 SO_ERROR: 0, SO_ACCEPTCONN: int(self.backlog is not None)}  # fmt: skip
        if level == SOL_SOCKET and name in fixed:
            return struct.pack("<i", fixed[name])
        short = OPTIONS.get((level, name))
        if short is None or not _level_applies(self.family, self.sock_type, level):
            raise SyscallError(errno.EOPNOTSUPP if self.family == AF_UNIX and level != SOL_SOCKET
                               else errno.ENOPROTOOPT)
        value = self.options.get(short, DEFAULTS.get(short, 0))
        return value if isinstance(value, bytes) else struct.pack("<i", value)

    def peer_credentials(self) -> bytes:
        """struct ucred of SO_PEERCRED: pid, uid and gid, or (0, -1, -1) without a peer.
        Every process of a tree has the guest's ids (setuid goes only to its own)."""
        if not self.cred_pid:
            return struct.pack("<3i", 0, -1, -1)
        ids = self.net.sched.k.identity
        return struct.pack("<3i", self.cred_pid, ids.uid, ids.gid)

    # -- state -------------------------------------------------------------------------

    @property
    def proxied(self) -> bool:
        """Connected through the host under the policy (not a guest connection on the host)."""
        return isinstance(self.conn, SocketFile) and not self.conn.shared

    def hand_to(self, pid: int) -> None:
        """A listener given to a program at its execve (forkserver's server listens on what
        its parent bound, a server program on the socket it was passed): its name is
        process `pid`'s in the tree from now on, so connections from the tree reach it
        there (given_to), this copy's close aside."""
        tree = self.net._tree()
        if tree is not None:
            tree.hand_name(self._name_in_tree(self.net), pid)

    def _name_in_tree(self, net: GuestNet) -> bytes:
        assert self.is_listener()
        if self.tree_name is not None:
            return self.tree_name
        assert isinstance(self.local, bytes)
        return net.unix_key(self.local)

    def given_to(self, net: GuestNet) -> None:
        """This socket is now a program's that was given it at execve (a copy of it, in the
        program's monitor): that process's threads wait on it, in its port space. A
        connected one's connection is a host socket; a listener listens there (hand_to)."""
        self.net, self.queue = net, WaitQueue()
        if isinstance(self.conn, SocketFile):
            self.conn.kernel = net.sched.k
            return
        if self.tree_name is not None:
            net.ports.setdefault((self.protocol, self.port), []).append(self)
            return
        key = self._name_in_tree(net)
        (net.abstract if key.startswith(b"\0") else net.paths)[key] = self

    def is_listener(self) -> bool:
        """A stream listener the tree may name: AF_UNIX, or on a TCP port."""
        return self.backlog is not None and (self.family == AF_UNIX or
                                             self.tree_name is not None)

    def connection(self) -> UnixSocketFile | SocketFile:
        """The connection calls go to, told this socket's O_NONBLOCK (fcntl sets it here)."""
        if self.conn is None:
            raise SyscallError(errno.EPIPE if self.family != AF_UNIX and self.backlog is None
                               and self.sock_type == SOCK_STREAM else errno.ENOTCONN)
        self.conn.flags = (self.conn.flags & ~O_NONBLOCK) | (self.flags & O_NONBLOCK)
        return self.conn

    def _blocking(self, flags: int) -> bool:
        return not (self.flags & O_NONBLOCK or flags & MSG_DONTWAIT)

    def _wait(self, flags: int, *queues: WaitQueue) -> Block:
        if not self._blocking(flags):
            raise SyscallError(errno.EAGAIN)
        return Block(queues or (self.queue,), self.net.sched.deadline_after(None))

    def _timed(self, option: int, call: Callable[[], T]) -> T:
        """call(), a wait in it ending with EAGAIN once the socket's SO_RCVTIMEO or
        SO_SNDTIMEO (`option`) has passed on the guest's clock (a host socket's connection
        keeps its own: net.py)."""
        timeout = self.timeouts.get(option)
        if timeout is None or isinstance(self.conn, SocketFile):
            return call()
        sched = self.net.sched
        try:
            return call()
        except Block as b:
            if sched.timed_out():
                raise SyscallError(errno.EAGAIN) from None
            b.deadline = b.deadline or sched.deadline_after(timeout)
            raise

    # -- bind, listen, accept --------------------------------------------------------------

    def bind(self, address: Address, umask: int) -> None:
        if self.local is not None or self.conn is not None:
            raise SyscallError(errno.EINVAL)
        if isinstance(address, bytes):
            self.local = self.net.bind_unix(self, address, umask)
            return
        self.port = self.net.bind_inet(self, address[0], address[1], self.option_on("v6only"))
        self.local = (address[0], self.port, *address[2:])

    def _autobind(self) -> None:
        if self.local is None and self.family != AF_UNIX:
            self.bind(("0.0.0.0", 0) if self.family == AF_INET else ("::", 0, 0, 0), 0)

    def _bind_toward(self, host: str) -> str:
        """A client's address: an ephemeral port, on the loopback address it connects to
        (bound to the wildcard, it shows that one too); that address."""
        dest = self._loopback_toward(inet_key(self.family, host))
        if self.local is None:
            self.bind((dest, 0) if self.family == AF_INET else (dest, 0, 0, 0), 0)
        elif inet_key(self.family, self.local[0])[1] == WILDCARD:
            self.local = (dest, *self.local[1:])
        return dest

    def _loopback_toward(self, key: Key) -> str:
        """Where a packet to key arrives, as this socket writes it; ENETUNREACH from an
        address of the other IP version, as on Linux."""
        version, dest = _destination(key)
        if self.family == AF_INET6 and version == 4:
            dest = "::ffff:" + dest
        if self.local is not None:
            bound = inet_key(self.family, self.local[0])
            if bound[1] != WILDCARD and bound[0] != version:
                raise SyscallError(errno.ENETUNREACH)
        return dest

    def listen(self, backlog: int) -> None:
        if self.sock_type == SOCK_DGRAM:
            raise SyscallError(errno.EOPNOTSUPP)
        if self.conn is not None or (self.family == AF_UNIX and self.local is None):
            raise SyscallError(errno.EINVAL)
        self._autobind()
        if self.family != AF_UNIX:
            self.net.check_listen(self)
        self.backlog_limit = min(max(backlog, 0), SOMAXCONN)
        if self.family == AF_UNIX:
            self.cred_pid = self.net.sched.k.identity.pid
        if self.backlog is None:
            self.backlog = deque()
        self.changed()

    def accept(self, flags: int) -> GuestSocket:
        if self.backlog is None:
            raise SyscallError(errno.EINVAL)
        if not self.backlog and self.accept_queue is not None:
            self._take_queued()
            if not self.backlog:
                raise self._wait_queued()
        if not self.backlog:
            raise self._wait(0)
        s = self.backlog.popleft()
        s.flags |= flags & O_NONBLOCK
        self.changed()  # a connect waiting for room may go on
        return s

    def share(self) -> None:
        """Other processes hold this listener from now on (a fork's copy, a program given
        it): its connections go to an accept queue they all take from (acceptqueue.py),
        those waiting in its backlog first (host connections by now: children.py)."""
        if self.accept_queue is not None:
            return
        self.accept_queue = AcceptQueue()
        assert self.backlog is not None
        waiting, self.backlog = self.backlog, deque()
        for s in waiting:
            try:
                self.queue_connection(s)
            except SyscallError:
                self.backlog.append(s)  # only this process will accept it
        self.changed()

    def queue_connection(self, server: GuestSocket) -> None:
        """Put the server end of a host connection in the accept queue (its copy here is
        closed): EAGAIN if the queue is full, ECONNREFUSED if no one takes any more."""
        assert self.accept_queue is not None and isinstance(server.conn, SocketFile)
        try:
            self.accept_queue.put(server.conn.host, server.local, server.peer, server.cred_pid)
        except SyscallError as e:
            if e.errno == errno.ECONNREFUSED and self.closed_here:
                self.net.drop(self)  # no process holds it any more
            raise
        server.conn.close()
        server.conn = None
        self.changed()

    def _take_queued(self) -> None:
        """The oldest connection of the tree's accept queue into this backlog, if one is
        queued (EINVAL if the listener was shut down)."""
        assert self.accept_queue is not None and self.backlog is not None
        taken = self.accept_queue.take()
        if taken is None:
            return
        conn, queued = taken
        s = GuestSocket(self.net, self.family, self.sock_type, 0, self.net.ns.inodes.next(),
                        self.protocol)
        s.local, s.peer = (_queued_address(a) for a in (queued.local, queued.peer))
        s.cred_pid = queued.cred_pid
        s.options = dict(self.options)
        s.conn = SocketFile(self.net.sched.k, AF_UNIX, False, shared=conn)
        self.backlog.append(s)

    def _wait_queued(self) -> Block:
        """Wait for the accept queue (off the vCPU: connections from the tree reach this
        process's queue on the vCPU's thread too), or EAGAIN."""
        fd = self.host_fd()
        if not self._blocking(0) or fd is None:
            raise SyscallError(errno.EAGAIN)
        sched = self.net.sched
        return sched.watch_host({fd: POLLIN}, (self.queue,), sched.deadline_after(None))

    @property
    def closed_here(self) -> bool:
        """A shared listener this process closed, kept for the connections the tree sends
        it until no process holds it (GuestNet.keep_for_tree)."""
        return self.accept_queue is not None and self.accept_queue.accept_end is None

    # -- connect ---------------------------------------------------------------------------

    def connect_guest(self, listener: GuestSocket, address: Address) -> None:
        """Connect to a guest listener: both ends made now, the server's queued for accept."""
        if listener.sock_type != self.sock_type:
            raise SyscallError(errno.EPROTOTYPE)
        assert listener.backlog is not None
        if listener.accept_queue is not None:
            self._connect_shared(listener, address)
            return
        if len(listener.backlog) > listener.backlog_limit:
            raise self._wait(0, listener.queue)
        if self.family != AF_UNIX:
            address = (self._bind_toward(address[0]), listener.port, *address[2:])
        datagrams = self.sock_type == SOCK_SEQPACKET  # messages kept apart, as socketpair does
        tcp = self.family != AF_UNIX
        up = Channel(self.net.sched, UNIX_CAPACITY, datagrams, tcp)
        down = Channel(self.net.sched, UNIX_CAPACITY, datagrams, tcp)
        inodes = self.net.ns.inodes
        server = GuestSocket(self.net, listener.family, self.sock_type, 0, inodes.next(),
                             listener.protocol)
        if self.family == AF_UNIX:
            server.local, server.peer = listener.local, self.local
            server.cred_pid = self.cred_pid = self.net.sched.k.identity.pid
        else:
            server.local = _as_family(listener.family, address)
            server.peer = _as_family(listener.family, self.local)
        server.options = dict(listener.options)
        server.conn = UnixSocketFile(self.sock_type, 0, up, down, inodes.next())
        self.conn = UnixSocketFile(self.sock_type, 0, down, up, inodes.next())
        self.peer = listener.local if self.family == AF_UNIX else address
        listener.backlog.append(server)
        listener.changed()
        self.changed()
        if self.family != AF_UNIX and not self._blocking(0):
            raise SyscallError(errno.EINPROGRESS)  # made already: writable, SO_ERROR 0

    def _connect_shared(self, listener: GuestSocket, address: Address) -> None:
        """connect_guest to a listener other processes hold: the connection is a host
        socketpair, its server end queued where any of them may accept it."""
        assert listener.accept_queue is not None and listener.accept_queue.connect_end
        if self.family != AF_UNIX:
            address = (self._bind_toward(address[0]), listener.port, *address[2:])
        mine, theirs = socket.socketpair(socket.AF_UNIX, self.sock_type)
        server = GuestSocket(self.net, listener.family, self.sock_type, 0,
                             self.net.ns.inodes.next(), listener.protocol)
        k = self.net.sched.k
        server.conn = SocketFile(k, AF_UNIX, False, shared=theirs)
        if self.family == AF_UNIX:
            server.local, server.peer = listener.local, self.local
            server.cred_pid = self.cred_pid = k.identity.pid
        else:
            server.local = _as_family(listener.family, address)
            server.peer = _as_family(listener.family, self.local)
        try:
            listener.queue_connection(server)
        except SyscallError as e:
            mine.close()
            server.close()
            if e.errno == errno.EAGAIN and self._blocking(0):  # full: wait for an accept
                end = listener.accept_queue.connect_end if listener.accept_queue else None
                if end is not None:
                    raise k.sched.watch_host({end.fileno(): POLLOUT}, (listener.queue,),
                                             None) from None
            raise
        self.conn = SocketFile(k, AF_UNIX, bool(self.flags & O_NONBLOCK), shared=mine)
        self.peer = listener.local if self.family == AF_UNIX else address
        self.changed()
        if self.family != AF_UNIX and not self._blocking(0):
            raise SyscallError(errno.EINPROGRESS)

    def connect_host(self, k: Kernel, address: tuple) -> None:
        """Proxy this stream socket to a host socket (the policy has allowed address)."""
        try:
            proxy = SocketFile(k, self.family, nonblocking=bool(self.flags & O_NONBLOCK))
        except OSError as e:
            raise SyscallError(e.errno or errno.ENOBUFS) from None
        self.conn = proxy
        self.changed()
        proxy.recv_timeout = self.timeouts.get(SO_RCVTIMEO)
        proxy.send_timeout = self.timeouts.get(SO_SNDTIMEO)
        for (level, name), short in OPTIONS.items():
            if short in REPLAYED and short in self.options:
                try:
                    proxy.set_option(level, name, int(self.options[short]))
                except OSError:
                    pass  # refused by the host: as a Linux option that has no effect
        proxy.connect(address)

    def connected_in_tree(self, conn: SocketFile, peer: Address, holder: int) -> None:
        """connect() to the listener process `holder` has at `peer`: `conn` is its end of
        the connection (made already: a non-blocking TCP connect is EINPROGRESS, then
        writable with SO_ERROR 0, as connect_guest's)."""
        self.conn, self.peer = conn, peer
        self.cred_pid = holder if self.family == AF_UNIX else 0
        self.changed()
        if self.family != AF_UNIX and not self._blocking(0):
            raise SyscallError(errno.EINPROGRESS)

    def tree_address(self, address: tuple) -> tuple[tuple, tuple]:
        """A TCP connect to another process's listener at `address`: (where it connects,
        as this socket's family writes it; this socket's own address, bound now)."""
        connected = (self._bind_toward(address[0]), address[1], *address[2:])
        assert isinstance(self.local, tuple)
        return connected, self.local

    def set_peer(self, address: Address | None) -> None:
        """connect() of a datagram socket: its default destination (None: dissolve it)."""
        if address is not None:
            self._autobind()
        self.peer = address

    # -- data --------------------------------------------------------------------------------

    def send_datagram(self, data: bytes, address: Address | None, flags: int,
                      ancillary: Ancillary | None = None) -> int:
        """A datagram to a guest socket; one to a loopback port nothing holds is dropped."""
        target_address = address if address is not None else self.peer
        if target_address is None:
            raise SyscallError(errno.EDESTADDRREQ if self.family != AF_UNIX else errno.ENOTCONN)
        if isinstance(target_address, bytes):
            target = self.net.find_unix(target_address)
            if target.sock_type != self.sock_type:
                raise SyscallError(errno.EPROTOTYPE)
            if len(data) > UNIX_CAPACITY:
                raise SyscallError(errno.EMSGSIZE)
            source: Address | None = self.local
        else:
            if len(data) > MAX_UDP_PAYLOAD:
                raise SyscallError(errno.EMSGSIZE)
            key = inet_key(self.family, target_address[0])
            if not is_local(key):
                raise SyscallError(errno.EACCES)  # datagrams never leave the VM
            self._autobind()
            source = self._source_toward(key)
            found = self.net.find_inet(self.protocol, key, target_address[1], listening=False)
            if found is None:
                return len(data)  # no one listens: UDP drops it
            target = found
            source = _as_family(target.family, source)
        if target.queued + len(data) > target.buffer_size():
            if not isinstance(target_address, bytes):
                return len(data)  # a full UDP receive buffer drops it, as Linux does
            raise self._wait(flags, target.queue)
        if self.family == AF_INET6:  # what RFC 3542's receiving options report
            ancillary = ancillary or Ancillary()
            if ancillary.hoplimit is None:
                hops = int(self.options.get("unicast_hops", -1))
                ancillary.hoplimit = DEFAULT_HOPS if hops == -1 else hops
            if ancillary.tclass is None:
                ancillary.tclass = int(self.options.get("tclass", 0))
        if ancillary is not None:
            ancillary.hold()
        target.datagrams.append((data, source, ancillary))
        target.queued += len(data)
        target.changed()
        return len(data)

    def buffer_size(self) -> int:
        return int(self.options.get("rcvbuf", UNIX_CAPACITY))

    def _source_toward(self, key: Key) -> tuple:
        """A datagram's source address: where it is bound, the wildcard as the loopback."""
        dest = self._loopback_toward(key)
        assert isinstance(self.local, tuple)  # bound by _autobind
        host = self.local[0]
        if inet_key(self.family, host)[1] == WILDCARD:
            host = dest
        return (host, self.port, *self.local[2:])

    def receive_datagram(self, room: int, flags: int
                         ) -> tuple[bytes, Address | None, Ancillary | None, int]:
        """The next datagram (up to room bytes), its source, ancillary data and length."""
        if not self.datagrams:
            if self.shut_read:
                return b"", None, None, 0
            raise self._wait(flags)
        data, source, ancillary = self.datagrams[0]
        if not flags & MSG_PEEK:
            self.datagrams.popleft()
            self.queued -= len(data)
            self.changed()
        return data[:room], source, ancillary, len(data)

    def recv_message(self, room: int, flags: int
                     ) -> tuple[bytes, Address | None, Ancillary | None, int]:
        """recvmsg's view: bytes, source (datagrams), ancillary data and the whole length."""
        return self._timed(SO_RCVTIMEO, lambda: self._recv_message(room, flags))

    def _recv_message(self, room: int, flags: int
                      ) -> tuple[bytes, Address | None, Ancillary | None, int]:
        if self.conn is None and self.sock_type == SOCK_DGRAM:
            return self.receive_datagram(room, flags)
        if isinstance(self.conn, UnixSocketFile):
            data, ancillary, whole = self.connection().recv_message(room, flags)
            return data, None, ancillary, whole
        buf = memoryview(bytearray(room))
        n = self._recv_into(buf, flags)
        return bytes(buf[:n]), None, None, n

    def recv_into(self, dest: memoryview, flags: int) -> int:
        return self._timed(SO_RCVTIMEO, lambda: self._recv_into(dest, flags))

    def _recv_into(self, dest: memoryview, flags: int) -> int:
        if self.conn is None and self.sock_type == SOCK_DGRAM:
            data, _, ancillary, _ = self.receive_datagram(len(dest), flags)
            if ancillary is not None and not flags & MSG_PEEK:
                ancillary.drop(self.net.sched.k.fds)
            dest[: len(data)] = data
            return len(data)
        if self.conn is None:
            raise SyscallError(errno.EINVAL if self.backlog is not None and self.family != AF_UNIX
                               else errno.ENOTCONN)
        return self.connection().recv_into(dest, flags)

    def recv_vectored(self, buffers: list[memoryview], flags: int) -> int:
        return self._timed(SO_RCVTIMEO, lambda: self._recv_vectored(buffers, flags))

    def recv_with_fds(self, buffers: list[memoryview], flags: int, max_fds: int
                      ) -> tuple[int, list[int]]:
        """recvmsg on a connection that is a host socket: the bytes, and the host fds passed
        with them."""
        conn = self.connection()
        assert isinstance(conn, SocketFile)
        return self._timed(SO_RCVTIMEO, lambda: conn.recv_with_fds(buffers, flags, max_fds))

    def _recv_vectored(self, buffers: list[memoryview], flags: int) -> int:
        if self.conn is None:
            joined = memoryview(bytearray(sum(len(b) for b in buffers)))
            n = self._recv_into(joined, flags)
            at = 0
            for b in buffers:
                take = min(len(b), n - at)
                b[:take] = joined[at : at + take]
                at += take
            return n
        return self.connection().recv_vectored(buffers, flags)

    def send(self, data: list[memoryview], flags: int, ancillary: Ancillary | None = None
             ) -> int:
        return self._timed(SO_SNDTIMEO, lambda: self._send(data, flags, ancillary))

    def _send(self, data: list[memoryview], flags: int, ancillary: Ancillary | None) -> int:
        if self.conn is None and self.sock_type == SOCK_DGRAM:
            return self.send_datagram(b"".join(data), None, flags, ancillary)
        conn = self.connection()
        if isinstance(conn, SocketFile):  # the files passed go as host fds, if any
            return conn.send(data, flags, ancillary.host_fds if ancillary is not None else ())
        return conn.send(data, flags, ancillary)

    def read(self, length: int) -> bytes | memoryview:
        if self.conn is None:
            buf = memoryview(bytearray(min(length, 1 << 20)))
            return buf[: self.recv_into(buf, 0)]
        return self._timed(SO_RCVTIMEO, lambda: self.connection().read(length))

    def write(self, data: memoryview) -> int:
        return self.send([data], 0)

    def shutdown(self, how: int) -> None:
        if how not in (0, 1, 2):
            raise SyscallError(errno.EINVAL)
        if isinstance(self.conn, SocketFile):
            try:
                self.conn.host.shutdown(how)
            except OSError as e:
                raise SyscallError(e.errno or errno.EINVAL) from None
        elif self.conn is not None:
            self.conn.shutdown(how)
        elif self.backlog is not None and how in (0, 2):
            if self.accept_queue is not None:
                self.accept_queue.shut()  # for every process that holds it
            self._stop_listening()  # Linux disconnects a listener shut down for reading
        elif self.sock_type == SOCK_DGRAM and how in (0, 2):
            self.shut_read = True
        elif self.family != AF_UNIX and self.sock_type == SOCK_STREAM:
            raise SyscallError(errno.ENOTCONN)
        self.changed()

    # -- readiness ---------------------------------------------------------------------------

    def poll(self) -> int:
        if self.conn is not None:
            return self.conn.poll()
        if self.backlog is not None and self.accept_queue is not None:
            return self.ready_from_host(_host_poll(self.host_fd()))
        if self.backlog is not None:
            return READABLE if self.backlog else 0
        if self.sock_type == SOCK_DGRAM:
            return WRITABLE | (READABLE if self.datagrams or self.shut_read else 0)
        return WRITABLE | POLLHUP  # as Linux for a stream socket never connected

    def ready_from_host(self, revents: int) -> int:
        """A listener's readiness from its accept queue's (the host says HUP once it was
        shut down, by any process: then as a stream socket not connected)."""
        if self.conn is not None or self.backlog is None or self.accept_queue is None:
            return revents
        if self.backlog:
            return READABLE
        if revents & POLLHUP or self.accept_queue.accept_end is None:
            return WRITABLE | POLLHUP
        return READABLE if revents & POLLIN else 0

    def wait_queues(self) -> tuple[WaitQueue, ...]:
        if self.accept_queue is not None and self.conn is None:
            return (self.queue,)  # and the host: connections from the tree arrive here too
        if isinstance(self.conn, SocketFile):
            return ()  # the host says when it is ready (host_fd)
        inner = self.conn.wait_queues() if self.conn is not None else ()
        return (self.queue, *inner)

    @property
    def generation(self) -> int:  # type: ignore[override]
        return self.changes + (self.conn.generation if self.conn is not None else 0)

    def host_fd(self) -> int | None:
        if self.accept_queue is not None and self.conn is None:
            end = self.accept_queue.accept_end
            return None if end is None else end.fileno()
        return self.conn.host_fd() if self.conn is not None else None

    def host_fds(self) -> tuple[int, ...]:
        if self.accept_queue is not None and self.conn is None:
            return self.accept_queue.host_fds()
        return super().host_fds()

    def _stop_listening(self) -> None:
        pending, self.backlog = self.backlog or deque(), None
        for s in pending:
            s.close()  # never accepted: its client sees the connection end

    @property
    def aborted(self) -> bool:
        """Its TCP peer closed with SO_LINGER 0 (an RST): no longer connected."""
        return isinstance(self.conn, UnixSocketFile) and any(
            c is not None and c.aborted for c in (self.conn.rx, self.conn.tx))

    def close(self) -> None:
        if self.accept_queue is not None and self.net.keep_for_tree(self):
            return
        self.release()

    def release(self) -> None:
        """Close it for good: unbound, its connection and queues closed."""
        if self.accept_queue is not None:
            self.accept_queue.close()
        self._stop_listening()
        self.net.unbind(self)
        onoff, seconds = struct.unpack("<ii", self.options.get("linger", DEFAULTS["linger"]))
        if isinstance(self.conn, UnixSocketFile) and self.family != AF_UNIX and onoff \
                and not seconds:
            for channel in (self.conn.rx, self.conn.tx):
                if channel is not None:
                    channel.aborted = True  # SO_LINGER 0: the peer sees a reset
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        for _, _, ancillary in self.datagrams:
            if ancillary is not None:
                ancillary.drop(self.net.sched.k.fds)
        self.datagrams.clear()
        self.changed()
