"""TCP client sockets proxied to real host sockets: the compatibility path.

A guest socket is an OpenFile whose host socket is always non-blocking.
A call the guest makes in blocking mode waits on the host in slices of
WAIT_SLICE seconds and checks between them whether the VM's deadline has
passed (the deadline thread cannot interrupt a host wait: Python retries it
after the signal), so a guest blocked on a silent server still ends on time.
Connections go only where the SocketPolicy allows (the monitor passes the
function's UrlPolicy; this layer needs only the two methods below). The connect
itself is the egress's (usetl.etl.egress): in a jailed clone the broker checks the
policy, begins the connection and passes the socket back, and from then on the guest's
calls use that socket directly. Until then a socket of the monitor's own holds the
options the guest sets; they are set again on the connected one.
"""

from __future__ import annotations

import array
import errno
import logging
import select
import socket
import stat as st
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Protocol

from usetl.abi import etl as wire
from usetl.etl import egress
from usetl.etl.egress import ConnectFailed
from usetl.etl.errors import EtlError

from .errors import SyscallError
from .files import O_NONBLOCK, O_RDWR, StreamFile
from .fs import Node
from .sched import Block

if TYPE_CHECKING:
    from .clock import Deadline
    from .kernel import Kernel

WAIT_SLICE = 0.1  # seconds a blocked call waits on the host before checking the deadline
MSG_PEEK, MSG_DONTWAIT, MSG_WAITALL, MSG_NOSIGNAL, MSG_MORE = 0x2, 0x40, 0x100, 0x4000, 0x8000

POLLIN, POLLPRI, POLLOUT, POLLERR, POLLHUP, POLLNVAL = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20
POLLRDNORM, POLLWRNORM = 0x40, 0x100

# Why a connect the egress refused fails, as the guest sees it.
CONNECT_ERRNO = {wire.DENIED: errno.EACCES, wire.INVALID: errno.EINVAL,
                 wire.DNS: errno.EACCES}
log = logging.getLogger(__name__)

Interrupted = Callable[[], bool]  # must the wait end: the deadline passed, or a signal is due?


class SocketPolicy(Protocol):
    """Where the guest may connect (usetl.etl.UrlPolicy is one)."""

    def check_socket(self, host: str, port: int) -> list[str]:
        """The addresses host:port may use; raises a UsetlError if it is denied."""
        ...

    def allowed_hosts(self) -> dict[str, list[str]]:
        """Host names the guest may resolve, with their addresses (for /etc/hosts)."""
        ...


def hosts_file(hosts: dict[str, list[str]], hostname: str) -> bytes:
    """/etc/hosts: loopback, the guest's own name (on 127.0.1.1, as Debian names a host
    with no network address) and the hosts the policy allows."""
    lines = ["127.0.0.1 localhost", "::1 localhost", f"127.0.1.1 {hostname}"]
    lines += [f"{ip} {name}" for name, ips in hosts.items() for ip in ips if name != "localhost"]
    return ("\n".join(lines) + "\n").encode()


def wait_ready(
    fds: dict[int, int], timeout: float | None, interrupted: Interrupted
) -> dict[int, int]:
    """Poll host fds (fd -> events) until one is ready or timeout (None: forever).

    Returns fd -> revents for the ready ones (empty on timeout); raises
    EINTR once the deadline has passed.
    """
    poller = select.poll()
    for fd, events in fds.items():
        poller.register(fd, events)
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        if interrupted():
            raise SyscallError(errno.EINTR)
        left = WAIT_SLICE if end is None else min(WAIT_SLICE, end - time.monotonic())
        ready = poller.poll(max(left, 0) * 1000)
        if ready or (end is not None and time.monotonic() >= end):
            return dict(ready)


class SocketFile(StreamFile):
    """A TCP client socket: the guest's view of one host socket. Also, `shared`, a guest
    connection (a socketpair's end, a connection to a guest listener) once a child process
    shares it: then the host socket is one end of a host socketpair, and no proxy.

    A socket does not survive into a clone (host sockets belong to one
    process): a clone sees it as reset.
    """

    def __init__(self, kernel: Kernel, family: int, nonblocking: bool,
                 shared: socket.socket | None = None):
        node = Node(st.S_IFSOCK | 0o777, kernel.ns.inodes.next())
        super().__init__(node, O_RDWR | (O_NONBLOCK if nonblocking else 0), "socket:")
        self.kernel = kernel
        self.family = family
        self.sock: socket.socket | None = shared or socket.socket(family, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.recv_timeout: float | None = None  # SO_RCVTIMEO, kept here: the host never blocks
        self.send_timeout: float | None = None  # SO_SNDTIMEO
        self.options: dict[tuple[int, int], int | bytes] = {}  # set again once connected
        self.shared = shared is not None
        self.connected = self.shared  # connect() succeeded: the egress's socket is in self.sock

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["sock"] = None
        return state

    @property
    def host(self) -> socket.socket:
        if self.sock is None:
            raise SyscallError(errno.ECONNRESET)
        return self.sock

    def set_option(self, level: int, name: int, value: int | bytes) -> None:
        self.host.setsockopt(level, name, value)
        self.options[(level, name)] = value

    def _adopt(self, sock: socket.socket) -> None:
        """Use the egress's connecting socket from now on, with the options set so far."""
        for (level, name), value in self.options.items():
            try:
                sock.setsockopt(level, name, value)
            except OSError as e:
                log.debug("option %d/%d not set again after connect: %s", level, name, e)
        self.host.close()
        self.sock = sock

    def interrupted(self) -> bool:
        return self.kernel.wait_interrupted()

    def host_fd(self) -> int | None:
        return None if self.sock is None else self.sock.fileno()

    def poll(self) -> int:
        if self.sock is None:
            return POLLERR | POLLHUP
        poller = select.poll()
        poller.register(self.sock.fileno(), POLLIN | POLLOUT | POLLPRI)
        ready = poller.poll(0)
        return ready[0][1] if ready else 0

    def _wait_host(self, events: int, deadline: Deadline | None) -> None:
        """Wait for the host socket: in place if the guest has one thread, else off the vCPU."""
        k = self.kernel
        if k.sched.alone:
            left = None if deadline is None else k.clock.left(deadline)
            wait_ready({self.host.fileno(): events}, left, self.interrupted)
            return
        raise k.sched.watch_host({self.host.fileno(): events}, (), deadline)

    def _blocks(self, flags: int = 0) -> bool:
        return not (self.flags & O_NONBLOCK or flags & MSG_DONTWAIT)

    def _retry(self, op: Callable[[], int], events: int, timeout: float | None, flags: int) -> int:
        """op() on the host, waiting for `events` while it would block (in blocking mode)
        until `timeout` (SO_RCVTIMEO, SO_SNDTIMEO) has passed on the guest's clock."""
        k = self.kernel
        deadline = k.sched.deadline_after(timeout)
        while True:
            try:
                return op()
            except BlockingIOError:
                if not self._blocks(flags):
                    raise SyscallError(errno.EAGAIN) from None
            except OSError as e:
                raise SyscallError(e.errno or errno.EIO) from None
            if k.sched.timed_out() or (deadline is not None and k.clock.reached(deadline)):
                raise SyscallError(errno.EAGAIN)
            self._wait_host(events, deadline)

    # -- the calls --------------------------------------------------------------

    def _bill(self, cpu0: float, wall0: float, received: int = 0, sent: int = 0,
              connects: int = 0) -> None:
        account = self.kernel.net_account
        account.requests += connects
        account.bytes_in += received
        account.bytes_out += sent
        account.host_cpu_s += time.thread_time() - cpu0
        account.wall_s += time.perf_counter() - wall0

    def connect(self, address: tuple) -> None:
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        try:
            self._connect(address)
        finally:
            self._bill(cpu0, wall0, connects=1)

    def _connect(self, address: tuple) -> None:
        """The egress connects and waits for the handshake (bounded by SO_SNDTIMEO and the
        invocation's deadline), so the connection is made when this returns: a non-blocking
        guest's connect succeeds, as Linux's does when it can be made at once (EINPROGRESS
        would cost it a poll and a getsockopt, two exits, to learn what is already so)."""
        if self.connected:
            raise SyscallError(errno.EISCONN)
        try:
            sock = egress.connect(self.kernel.net, self.family, address, self.send_timeout,
                                  self.kernel.deadline)
        except ConnectFailed as e:
            raise SyscallError(e.errno) from None
        except EtlError as e:
            log.info("connect to %s:%d refused: %s", address[0], address[1], e)
            raise SyscallError(CONNECT_ERRNO.get(e.kind, errno.ENETUNREACH)) from None
        self._adopt(sock)
        self.connected = True

    def recv_into(self, dest: memoryview, flags: int) -> int:
        """Receive into guest memory: one host recv, as the guest's one call.

        A blocking call waits for the first byte and returns what the host
        socket holds then (up to len(dest)), as Linux does; MSG_WAITALL waits
        for len(dest) bytes or the end of the stream.
        """
        if not len(dest):
            return 0
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        n = self._recv_into(dest, flags)
        self._bill(cpu0, wall0, received=0 if flags & MSG_PEEK else n)
        return n

    def _recv_into(self, dest: memoryview, flags: int) -> int:
        sock = self.host
        peek = flags & MSG_PEEK
        n = self._retry(lambda: sock.recv_into(dest, 0, peek), POLLIN, self.recv_timeout, flags)
        if flags & MSG_WAITALL and not peek and self._blocks(flags):
            while 0 < n < len(dest):
                try:
                    got = self._retry(partial(sock.recv_into, dest[n:]), POLLIN, None, flags)
                except (SyscallError, Block):
                    break  # these bytes arrived: the error (or the wait) comes on the next call
                if got == 0:
                    break
                n += got
        return n

    def recv_vectored(self, buffers: list[memoryview], flags: int) -> int:
        """recvmsg: one host recvmsg into several guest buffers (MSG_WAITALL not honoured)."""
        return self.recv_with_fds(buffers, flags, 0)[0]

    def recv_with_fds(self, buffers: list[memoryview], flags: int, max_fds: int
                      ) -> tuple[int, list[int]]:
        """recv_vectored, and the host fds up to `max_fds` passed with the bytes (a shared
        AF_UNIX connection's SCM_RIGHTS)."""
        buffers = [b for b in buffers if len(b)]
        if not buffers:
            return 0, []
        sock = self.host
        peek = flags & MSG_PEEK
        room = socket.CMSG_SPACE(max_fds * 4) if max_fds else 0
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        got: list[int] = []

        def receive() -> int:
            n, ancdata, _, _ = sock.recvmsg_into(buffers, room, peek)
            for level, kind, data in ancdata:
                if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
                    got.extend(array.array("i", data[: len(data) // 4 * 4]))
            return n

        n = self._retry(receive, POLLIN, self.recv_timeout, flags)
        self._bill(cpu0, wall0, received=0 if peek else n)
        return n, got

    def send(self, data: Iterable[memoryview], flags: int, host_fds: Sequence[int] = ()) -> int:
        """Send from guest memory; a blocking call sends everything, as Linux does. `host_fds`
        go with the first bytes (SCM_RIGHTS, on a shared AF_UNIX connection)."""
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        sent = 0
        try:
            sent = self._send(data, flags, host_fds)
        finally:
            self._bill(cpu0, wall0, sent=sent)
        return sent

    def _send(self, data: Iterable[memoryview], flags: int, host_fds: Sequence[int]) -> int:
        sock = self.host
        buffers = [b for b in data if len(b)]
        total = sum(len(b) for b in buffers)
        host_flags = (flags & MSG_MORE) | MSG_NOSIGNAL
        sent = 0
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", host_fds))] \
            if host_fds else []
        while buffers:
            try:
                n = self._retry(partial(sock.sendmsg, buffers, rights, host_flags), POLLOUT,
                                self.send_timeout, flags)
                rights = []  # they went with the first bytes
            except (SyscallError, Block):
                if sent:
                    return sent  # what went out before the error, timeout or wait
                raise
            sent += n
            if sent == total or not self._blocks(flags):
                return sent
            while n:
                if n >= len(buffers[0]):
                    n -= len(buffers.pop(0))
                else:
                    buffers[0] = buffers[0][n:]
                    n = 0
        return sent

    # -- as a file --------------------------------------------------------------

    def read(self, length: int) -> memoryview:
        buf = memoryview(bytearray(min(length, 1 << 20)))
        return buf[: self.recv_into(buf, 0)]

    def write(self, data: memoryview) -> int:
        return self.send([data], 0)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
