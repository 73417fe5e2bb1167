"""poll, select and epoll over every kind of file.

Readiness comes from each file (OpenFile.poll): in-monitor files (pipes,
socketpairs, eventfds) answer from their state, proxied sockets from the
host, regular files are always ready. A wait with nothing ready blocks the
thread on the files' wait queues and, for proxied sockets, on the host
(Scheduler.watch_host); a guest with one thread waits on the host in place.
Every wakeup re-runs the syscall, which looks again (level-triggered at
heart; epoll's edge triggering compares each file's change count).
"""

from __future__ import annotations

import errno
import select
import stat as st
import struct
import time
from typing import TYPE_CHECKING

from .. import children
from ..errors import SyscallError
from ..files import O_CLOEXEC, O_RDWR, OpenFile
from ..fs import Node
from ..net import POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, POLLPRI, wait_ready
from ..sched import Block, WaitQueue
from .args import s32

if TYPE_CHECKING:
    from ..clock import Deadline
    from ..kernel import Kernel

POLLFD = struct.Struct("<iHH")  # fd, events, revents
TIMEVAL = struct.Struct("<qq")
EPOLL_EVENT = struct.Struct("<IQ")  # packed on x86-64: events, data
MAX_POLL_FDS = 1024
EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD = 1, 2, 3
EPOLLEXCLUSIVE, EPOLLWAKEUP, EPOLLONESHOT, EPOLLET = 1 << 28, 1 << 29, 1 << 30, 1 << 31
EPOLL_FLAGS = EPOLLEXCLUSIVE | EPOLLWAKEUP | EPOLLONESHOT | EPOLLET
MAX_EPOLL_EVENTS = (1 << 31) // EPOLL_EVENT.size
ALWAYS_REPORTED = POLLERR | POLLHUP
POLL_EVENT_MASK = 0xFFFF  # what a host poll takes; epoll's flags sit above it
NOT_SHARED = ("usetl: an epoll set made before fork is not shared with the forked child "
              "(EINVAL): make the child its own\n")


def _host_ready(files: list[OpenFile]) -> dict[int, int]:
    """One host poll (no wait) over the proxied sockets among files."""
    fds = {fd for f in files if (fd := f.host_fd()) is not None}
    if not fds:
        return {}
    poller = select.poll()
    for fd in fds:
        poller.register(fd, POLLIN | POLLOUT | POLLPRI)
    return dict(poller.poll(0))


def readiness(files: list[OpenFile]) -> list[int]:
    host = _host_ready(files)
    out = []
    for f in files:
        fd = f.host_fd()
        out.append(f.ready_from_host(host.get(fd, 0)) if fd is not None else f.poll())
    return out


def wait(k: Kernel, files: list[OpenFile], events: list[int], deadline: Deadline | None,
         also: tuple[WaitQueue, ...] = ()) -> None:
    """Nothing is ready: wait for a change, one of `also`, or the deadline (raises Block, or
    returns after waiting on the host in place when the guest has one thread); a file that
    becomes ready by time (a timerfd) has the wait look again then."""
    sched = k.sched
    queues = (*also, *(q for f in files for q in f.wait_queues()))
    due = [d for f in files if (d := f.ready_at()) is not None]
    recheck = min(due, key=k.clock.left, default=None)
    host: dict[int, int] = {}
    for f, ev in zip(files, events, strict=True):
        fd = f.host_fd()
        if fd is not None:
            host[fd] = (host.get(fd, 0) | ev | ALWAYS_REPORTED) & POLL_EVENT_MASK
    # A lone thread waits on the host in place, unless a file of the monitor's own is
    # watched too (a listener a connection from the tree reaches, a pipe): its change must
    # end the wait as well.
    if host and sched.alone and all(f.host_fd() is not None and not f.wait_queues()
                                    for f in files):
        lefts = [k.clock.left(d) for d in (deadline, recheck) if d is not None]
        wait_ready(host, min(lefts, default=None), k.wait_interrupted)
        return
    if host:
        raise sched.watch_host(host, queues, deadline, recheck)
    raise Block(queues, deadline, recheck=recheck)


def _expired(k: Kernel, deadline: Deadline | None) -> bool:
    return k.sched.timed_out() or (deadline is not None and k.clock.reached(deadline))


# -- poll -----------------------------------------------------------------------------


def _poll(k: Kernel, fds: int, nfds: int, timeout: float | None) -> int:
    if nfds > MAX_POLL_FDS:
        raise SyscallError(errno.EINVAL)
    raw = k.mem.read(fds, POLLFD.size * nfds) if nfds else b""  # no fds: a sleep, NULL too
    wanted = [(fd, events) for fd, events, _ in POLLFD.iter_unpack(raw)]
    deadline = k.sched.deadline_after(timeout)
    while True:
        revents = [0] * len(wanted)
        files, slots = [], []
        for i, (fd, _) in enumerate(wanted):
            if fd < 0:
                continue
            f = k.fds.files.get(fd)
            if f is None:
                revents[i] = POLLNVAL
            else:
                files.append(f)
                slots.append(i)
        for i, ready in zip(slots, readiness(files), strict=True):
            revents[i] = ready & (wanted[i][1] | ALWAYS_REPORTED)
        n = sum(1 for r in revents if r)
        if n or timeout == 0 or _expired(k, deadline):
            out = bytearray(raw)
            for i, (fd, events) in enumerate(wanted):
                POLLFD.pack_into(out, i * POLLFD.size, fd, events, revents[i])
            k.mem.write(fds, out)
            return n
        wait(k, files, [wanted[i][1] for i in slots], deadline)


def _timespec(k: Kernel, addr: int) -> float | None:
    if not addr:
        return None
    sec, nsec = TIMEVAL.unpack(k.mem.read(addr, 16))
    if sec < 0 or not 0 <= nsec < 1_000_000_000:
        raise SyscallError(errno.EINVAL)
    return sec + nsec / 1e9


def sys_poll(k: Kernel, fds: int, nfds: int, timeout_ms: int, *_: int) -> int:
    ms = s32(timeout_ms)
    return _poll(k, fds, nfds, None if ms < 0 else ms / 1000)


def sys_ppoll(k: Kernel, fds: int, nfds: int, timeout: int, *_: int) -> int:
    return _poll(k, fds, nfds, _timespec(k, timeout))  # the signal mask: see the table


# -- select -----------------------------------------------------------------------------


def _select(k: Kernel, nfds: int, sets: tuple[int, int, int], timeout: float | None) -> int:
    nfds = s32(nfds)
    if not 0 <= nfds <= MAX_POLL_FDS:
        raise SyscallError(errno.EINVAL)
    size = (nfds + 63) // 64 * 8
    bits = [int.from_bytes(k.mem.read(a, size), "little") if a else 0 for a in sets]
    masks = (POLLIN, POLLOUT, POLLPRI)
    wanted: list[tuple[int, int]] = []
    for fd in range(nfds):
        events = sum(m for m, b in zip(masks, bits, strict=True) if b >> fd & 1)
        if events:
            if fd not in k.fds.files:
                raise SyscallError(errno.EBADF)
            wanted.append((fd, events))
    files = [k.fds.files[fd] for fd, _ in wanted]
    deadline = k.sched.deadline_after(timeout)
    while True:
        out = [0, 0, 0]
        for (fd, events), r in zip(wanted, readiness(files), strict=True):
            if events & POLLIN and r & (POLLIN | POLLHUP | POLLERR):
                out[0] |= 1 << fd
            if events & POLLOUT and r & (POLLOUT | POLLERR):
                out[1] |= 1 << fd
            if events & POLLPRI and r & POLLPRI:
                out[2] |= 1 << fd
        if any(out) or timeout == 0 or _expired(k, deadline):
            for addr, value in zip(sets, out, strict=True):
                if addr:
                    k.mem.write(addr, value.to_bytes(size, "little"))
            return sum(bin(v).count("1") for v in out)
        wait(k, files, [e for _, e in wanted], deadline)


MAX_TIMEVAL_US = ((1 << 63) - 1) * 1_000_000 + 999_999  # the largest time a timeval holds


def sys_select(k: Kernel, nfds: int, r: int, w: int, x: int, timeout: int, *_: int) -> int:
    limit = None
    if timeout:
        sec, usec = TIMEVAL.unpack(k.mem.read(timeout, 16))
        if sec < 0 or usec < 0:
            raise SyscallError(errno.EINVAL)
        limit = sec * 1_000_000 + usec  # whole microseconds: a float would round past 2^63 s
    start = time.monotonic()
    n = _select(k, nfds, (r, w, x), None if limit is None else limit / 1e6)
    if timeout and limit is not None:  # Linux leaves the time not slept in *timeout
        left = max(limit - int((time.monotonic() - start) * 1e6), 0)
        k.mem.write(timeout, TIMEVAL.pack(*divmod(min(left, MAX_TIMEVAL_US), 1_000_000)))
    return n


def sys_pselect6(k: Kernel, nfds: int, r: int, w: int, x: int, timeout: int, *_: int) -> int:
    return _select(k, nfds, (r, w, x), _timespec(k, timeout))  # the signal mask: see the table


# -- epoll ----------------------------------------------------------------------------------


class EpollEntry:
    def __init__(self, f: OpenFile, events: int, data: int):
        self.file = f
        self.events = events
        self.data = data
        self.seen = -1  # the file's change count when last reported (edge triggering)
        self.last = 0  # the events last reported, for files that count no changes


class EpollFile(OpenFile):
    """An epoll instance: its interest list, keyed by fd as the guest registered it."""

    def __init__(self, ino: int) -> None:
        super().__init__(Node(0o600, ino), O_RDWR, "anon_inode:[eventpoll]")
        self.entries: dict[int, EpollEntry] = {}
        # Its epoll_wait callers, woken when another thread adds or changes an entry (Linux
        # wakes them if that file is ready: grpc's poller thread waits while others add
        # sockets).
        self.changed = WaitQueue()

    def live(self, k: Kernel) -> list[tuple[int, EpollEntry]]:
        """Entries whose fd still names the file registered (a closed fd drops out)."""
        for fd, e in list(self.entries.items()):
            if k.fds.files.get(fd) is not e.file:
                del self.entries[fd]
        return list(self.entries.items())

    def collect(self, k: Kernel, room: int) -> list[tuple[int, int]]:
        """(events, data) ready now, up to room; consumes edges and one-shots.

        Edge triggered: a file the monitor holds reports again after each
        change of its state; a proxied socket after it went from not ready
        to ready (the host's own edges are not seen).
        """
        entries = [e for _, e in self.live(k) if e.events & ~EPOLL_FLAGS]
        out: list[tuple[int, int]] = []
        for e, r in zip(entries, readiness([e.file for e in entries]), strict=True):
            if len(out) == room:
                break
            got = r & (e.events | ALWAYS_REPORTED) & ~EPOLL_FLAGS
            if e.events & EPOLLET:
                if e.file.host_fd() is None:
                    fresh = got and e.file.generation != e.seen
                else:
                    fresh, e.last = got & ~e.last, got
                if not fresh:
                    continue
                e.seen = e.file.generation
            elif not got:
                continue
            if e.events & EPOLLONESHOT:
                e.events &= EPOLL_FLAGS
            out.append((got, e.data))
        return out

    def waited_on(self, k: Kernel) -> list[EpollEntry]:
        """Entries a wait watches: not an edge-triggered socket that is still ready."""
        return [e for _, e in self.live(k) if e.events & ~EPOLL_FLAGS
                and not (e.events & EPOLLET and e.file.host_fd() is not None and e.last)]

    def retarget(self, replaced: dict[int, OpenFile]) -> None:
        for e in self.entries.values():
            new = replaced.get(id(e.file))
            if new is not None:  # the same open file to the guest: its entry stays
                e.file, e.seen, e.last = new, -1, 0

    def poll(self) -> int:
        return 0  # an epoll fd inside another epoll or poll is not supported


class ForkedEpollFile(OpenFile):
    """An epoll set a forked child inherited. Its interest list lives in the parent's
    monitor, so it is not shared: using it is EINVAL (told on stderr once); closing it
    is fine, and a set the child makes itself works."""

    def __init__(self, inherited: EpollFile) -> None:
        super().__init__(inherited.node, O_RDWR, inherited.path)
        self.told = False

    def poll(self) -> int:
        return 0


def sys_epoll_create(k: Kernel, size: int, *_: int) -> int:
    if s32(size) <= 0:
        raise SyscallError(errno.EINVAL)
    return k.fds.install(EpollFile(k.ns.inodes.next()))


def sys_epoll_create1(k: Kernel, flags: int, *_: int) -> int:
    if flags & ~O_CLOEXEC:
        raise SyscallError(errno.EINVAL)
    return k.fds.install(EpollFile(k.ns.inodes.next()), cloexec=bool(flags & O_CLOEXEC))


def _epoll(k: Kernel, epfd: int) -> EpollFile:
    f = k.fds.get(s32(epfd))
    if isinstance(f, ForkedEpollFile) and not f.told:
        f.told = True
        children.tell(k.fds, NOT_SHARED)
    if not isinstance(f, EpollFile):
        raise SyscallError(errno.EINVAL)
    return f


def sys_epoll_ctl(k: Kernel, epfd: int, op: int, fd: int, event: int, *_: int) -> int:
    ep = _epoll(k, epfd)
    fd, op = s32(fd), s32(op)
    target = k.fds.get(fd)
    if target is ep:
        raise SyscallError(errno.EINVAL)
    if st.S_ISREG(target.node.mode) or st.S_ISDIR(target.node.mode):
        raise SyscallError(errno.EPERM)  # always ready: Linux refuses them too
    ep.live(k)
    if op == EPOLL_CTL_DEL:
        if ep.entries.pop(fd, None) is None:
            raise SyscallError(errno.ENOENT)
        return 0
    events, data = EPOLL_EVENT.unpack(k.mem.read(event, EPOLL_EVENT.size))
    if op == EPOLL_CTL_ADD:
        if fd in ep.entries:
            raise SyscallError(errno.EEXIST)
        ep.entries[fd] = EpollEntry(target, events, data)
    elif op == EPOLL_CTL_MOD:
        entry = ep.entries.get(fd)
        if entry is None:
            raise SyscallError(errno.ENOENT)
        entry.events, entry.data, entry.seen, entry.last = events, data, -1, 0
    else:
        raise SyscallError(errno.EINVAL)
    ep.changed.wake(k.sched)
    return 0


def _epoll_wait(k: Kernel, epfd: int, events: int, maxevents: int,
                timeout: float | None) -> int:
    ep = _epoll(k, epfd)
    maxevents = s32(maxevents)
    if not 0 < maxevents <= MAX_EPOLL_EVENTS:
        raise SyscallError(errno.EINVAL)
    k.mem.slice(events, maxevents * EPOLL_EVENT.size, write=True)  # EFAULT before waiting
    deadline = k.sched.deadline_after(timeout)
    while True:
        ready = ep.collect(k, maxevents)
        if ready or timeout == 0 or _expired(k, deadline):
            k.mem.write(events, b"".join(EPOLL_EVENT.pack(ev, data) for ev, data in ready))
            return len(ready)
        entries = ep.waited_on(k)
        wait(k, [e.file for e in entries], [e.events & ~EPOLL_FLAGS for e in entries], deadline,
             (ep.changed,))


def sys_epoll_wait(k: Kernel, epfd: int, events: int, maxevents: int, timeout_ms: int,
                   *_: int) -> int:
    ms = s32(timeout_ms)
    return _epoll_wait(k, epfd, events, maxevents, None if ms < 0 else ms / 1000)


def sys_epoll_pwait(k: Kernel, epfd: int, events: int, maxevents: int, timeout_ms: int,
                    sigmask: int, *_: int) -> int:
    return sys_epoll_wait(k, epfd, events, maxevents, timeout_ms)  # the signal mask: see table


def sys_epoll_pwait2(k: Kernel, epfd: int, events: int, maxevents: int, timeout: int,
                     sigmask: int, *_: int) -> int:
    """epoll_pwait with a timespec timeout (NULL: none)."""
    return _epoll_wait(k, epfd, events, maxevents, _timespec(k, timeout))
