"""Named pipes (mkfifo) in the tmpfs, between the threads and processes of a tree.

A FIFO's node names the process that made it, its holder; every process
that has the node (each has a copy of /tmp) asks the holder to open it,
with a FifoOpen message along the control sockets (proctree.py) or, in the
holder itself, directly. The holder pairs the opens as Linux's blocking
open does: a reader waits until a writer opens, a writer until a reader
does; then it makes a host pipe and gives each of them an end (a FifoEnd
message carrying it), keeping none, so that a reader sees the end of the
file once every writer has closed. O_NONBLOCK: a reader opens at once (the
write end then waits in the holder for the next writer, so it reads EAGAIN
rather than an end until one comes), a writer with no reader waiting is
ENXIO. Opens after a pairing start a new pipe (Linux would add them to the
one open). O_RDWR, which never blocks on Linux, is EINVAL here; so is ENXIO
an open of a FIFO whose holder has gone.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import SyscallError
from .files import O_ACCMODE, O_CLOEXEC, O_NONBLOCK, O_RDONLY, O_WRONLY
from .hostpipe import HostStreamFile
from .proctree import LINGERING, RUNNING, FifoEnd, FifoOpen, PassedFd
from .sched import Block, WaitQueue

if TYPE_CHECKING:
    from .fs import TmpFifo
    from .kernel import Kernel

Answer = Callable[[int, int], None]  # (an errno or 0, a pipe end's host fd or -1)
Route = Callable[..., None]  # children.route: a message (and its host fd) to its process


@dataclass
class Waiting:
    """The opens of one FIFO its holder has not paired yet."""

    readers: list[Answer] = field(default_factory=list)
    writers: list[Answer] = field(default_factory=list)
    write_end: int = -1  # kept for the next writer, after a non-blocking reader's open


def open_fifo(k: Kernel, node: TmpFifo, path: str, flags: int, route: Route) -> int:
    """open() of a FIFO: the new fd, or the calling thread waits for its holder's answer."""
    if flags & O_ACCMODE not in (O_RDONLY, O_WRONLY):
        raise SyscallError(errno.EINVAL)
    reads = flags & O_ACCMODE == O_RDONLY
    nonblocking = bool(flags & O_NONBLOCK)
    done = WaitQueue()
    answered: list[int] = []

    def answer(error: int, fd: int) -> None:
        result = -error if error else _install(k, fd, reads, flags)
        answered.append(result)
        done.wake(k.sched, result=result)

    if node.holder == k.identity.pid:
        pair(k, path, reads, nonblocking, answer)
    else:
        _check_holder(k, node.holder)
        request = k.children.request(answer)
        route(k, FifoOpen(node.holder, path, k.identity.pid, reads, nonblocking, request))
    if answered:
        if answered[0] < 0:
            raise SyscallError(-answered[0])
        return answered[0]
    raise Block((done,), retry=False, interruptible=False)


def _check_holder(k: Kernel, holder: int) -> None:
    """ENXIO for a FIFO whose holder has gone (no one would answer the open); one that
    ended with orphans still answers (its monitor lingers)."""
    table = k.children.table
    found = None if table is None else table.find(holder)
    if found is None or found.ended not in (RUNNING, LINGERING):
        raise SyscallError(errno.ENXIO)


def _install(k: Kernel, fd: int, reads: bool, flags: int) -> int:
    f = HostStreamFile.for_pipe_end(k, fd, reads, bool(flags & O_NONBLOCK))
    try:
        return k.fds.install(f, cloexec=bool(flags & O_CLOEXEC))
    except SyscallError as e:
        f.close()
        return -e.errno


def pair(k: Kernel, path: str, reads: bool, nonblocking: bool, answer: Answer) -> None:
    """In the FIFO's holder: answer this open now if the other end is open or waiting (or
    it need not wait), else when the other end opens."""
    waiting = k.children.fifo_waiting.setdefault(path, Waiting())
    mine, other = (waiting.readers, waiting.writers) if reads else \
        (waiting.writers, waiting.readers)
    if not reads and waiting.write_end >= 0:
        fd, waiting.write_end = waiting.write_end, -1
        answer(0, fd)
    elif other:
        mine.append(answer)
        r, w = os.pipe()
        for each in waiting.readers:
            each(0, os.dup(r))
        for each in waiting.writers:
            each(0, os.dup(w))
        os.close(r)
        os.close(w)
        waiting.readers, waiting.writers = [], []
    elif nonblocking and reads:
        r, waiting.write_end = os.pipe()
        answer(0, r)
    elif nonblocking:
        answer(errno.ENXIO, -1)
    else:
        mine.append(answer)


def serve(k: Kernel, message: FifoOpen, route: Route) -> None:
    """A FifoOpen from another process of the tree, for a FIFO this process holds."""

    def answer(error: int, fd: int) -> None:
        route(k, FifoEnd(message.sender, message.request, error),
              None if error else PassedFd(fd))

    pair(k, message.path, message.reads, message.nonblocking, answer)


def answered(k: Kernel, message: FifoEnd, passed: PassedFd | None) -> None:
    """The holder's answer to an open this process asked for."""
    answer = k.children.answers.pop(message.request, None)
    if answer is None:
        if passed is not None:
            passed.close()
        return
    answer(message.error, passed.detach() if passed is not None else -1)
