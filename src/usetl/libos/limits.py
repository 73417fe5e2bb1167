"""Resource limits (getrlimit, setrlimit, prlimit) of a process, and of others of its tree.

A process keeps the limits it was given (`Kernel.limits`, kept across
execve); those never set are Linux's defaults for an unprivileged process
here. prlimit of another process of the invocation's tree asks that
process's monitor, which holds them: a LimitsAsk message along the control
sockets (proctree.py), answered by a LimitsAnswer with the limits it had,
while the calling thread waits, as Linux's prlimit reads and sets them in
one step. Linux's rules apply there: the caller's uid and gid must be the
target's (every process of a tree has the guest's, so they are), and a hard
limit is never raised (the guest has no CAP_SYS_RESOURCE).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import SyscallError
from .files import MAX_FDS
from .proctree import RUNNING, LimitsAnswer, LimitsAsk
from .sched import Block, WaitQueue

if TYPE_CHECKING:
    from .kernel import Kernel

RLIMIT_FSIZE = 1
RLIMIT_STACK = 3
RLIMIT_NOFILE = 7
RLIM_NLIMITS = 16
RLIM_INFINITY = (1 << 64) - 1
THREAD_STACK = 2 << 20

Limit = tuple[int, int]  # (soft, hard)
Answer = Callable[[int, int], int]  # the target's soft and hard limits before: the result
Route = Callable[..., None]  # children.route: a message to its process


def current(k: Kernel, resource: int) -> Limit:
    """The process's (soft, hard) limits of `resource`; EINVAL for no such resource."""
    if not 0 <= resource < RLIM_NLIMITS:
        raise SyscallError(errno.EINVAL)
    if resource in k.limits:
        return k.limits[resource]
    if resource == RLIMIT_NOFILE:
        return MAX_FDS, MAX_FDS
    if resource == RLIMIT_STACK:
        # glibc sizes each thread's stack by the soft limit. Guest memory is
        # identity-mapped, so a stack costs its whole size in guest RAM: 2 MiB
        # lets a 256 MiB USF hold about 100 threads (8 MiB: 8). The main
        # thread's stack is the loader's 8 MiB, the hard limit.
        return THREAD_STACK, 8 << 20
    return RLIM_INFINITY, RLIM_INFINITY


def soft_limit(k: Kernel, resource: int) -> int:
    return current(k, resource)[0]


def check_new(new: Limit) -> None:
    """What prlimit refuses before it looks at the target: a soft limit above the hard."""
    if new[0] > new[1]:
        raise SyscallError(errno.EINVAL)


def change(k: Kernel, resource: int, new: Limit | None) -> Limit:
    """Set the process's limits of `resource` to `new` (None: leave them); those before.
    A hard limit may only go down (EPERM)."""
    old = current(k, resource)
    if new is not None:
        check_new(new)
        if new[1] > old[1]:
            raise SyscallError(errno.EPERM)
        k.limits[resource] = new
        if resource == RLIMIT_NOFILE:
            k.fds.limit = new[0]  # new fds at or past it are EMFILE, as on Linux
    return old


def of_process(k: Kernel, pid: int, resource: int, new: Limit | None,
               answer: Answer, route: Route) -> None:
    """prlimit of process `pid` of the tree, not this one: ESRCH unless it runs (the
    monitor that held an ended one's limits has gone); else the calling thread waits for
    that process's monitor, whose limits before go to `answer` (its result is prlimit's)."""
    if not 0 <= resource < RLIM_NLIMITS:
        raise SyscallError(errno.EINVAL)
    if new is not None:
        check_new(new)
    table = k.children.table
    found = None if table is None else table.find(pid)
    if found is None or found.ended != RUNNING:
        raise SyscallError(errno.ESRCH)
    done = WaitQueue()

    def woken(error: int, soft: int, hard: int) -> None:
        result = -error if error else answer(soft, hard)
        done.wake(k.sched, result=result)

    request = k.children.request(woken)
    route(k, LimitsAsk(pid, k.identity.pid, k.identity.uid, k.identity.gid, resource,
                       request, new))
    raise Block((done,), retry=False, interruptible=False)


def serve(k: Kernel, message: LimitsAsk, route: Route) -> None:
    """Another process's prlimit of this one: its limits, changed as asked, and the answer
    back to the asker with those before (or the errno)."""
    soft = hard = error = 0
    try:
        if (message.uid, message.gid) != (k.identity.uid, k.identity.gid):
            raise SyscallError(errno.EPERM)
        soft, hard = change(k, message.resource, message.new)
    except SyscallError as e:
        error = e.errno
    route(k, LimitsAnswer(message.sender, message.request, soft, hard, error))


def answered(k: Kernel, message: LimitsAnswer) -> None:
    """The reply to a prlimit this process asked another for."""
    woken = k.children.answers.pop(message.request, None)
    if woken is not None:
        woken(message.error, message.soft, message.hard)
