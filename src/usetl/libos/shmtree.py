"""/dev/shm as one namespace for an invocation's process tree, as it is one machine's.

Each process has its own copy of /dev/shm (taken at its fork or exec), so
without more a name a child makes (shm_open, SharedMemory(create=True)) is
not there for its parent. Once the tree has children, a file made in
/dev/shm has its bytes in a host memfd from the start (sharedpages.py) and
its name in the tree's table of names (proctree.py), held by the process
that made it. A process of the tree that opens a name it does not have asks
the holder (a ShmOpen message along the control sockets), which answers
with the memfd (ShmFile); the file is then in the asker's /dev/shm too,
over the same pages, so stores through a mapping in either show in the
other at once, and the open runs again. O_CREAT|O_EXCL of a name another
process holds is EEXIST; unlinking it removes it there too (ShmUnlink), before the unlink returns.
Not as on Linux: a listing of /dev/shm shows only the names a process has
opened or made, and a size one process set is seen by another that already
had the file only through its mappings.
"""

from __future__ import annotations

import errno
import os
import stat as st
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import SyscallError
from .fs import TmpDir, TmpFile
from .proctree import RUNNING, PassedFd, ShmFile, ShmOpen, ShmUnlink, ShmUnlinked
from .sched import Block, WaitQueue
from .sharedpages import SharedPages

if TYPE_CHECKING:
    from .kernel import Kernel
    from .proctree import PassedFd

Route = Callable[..., None]  # children.route: a message (and its host fd) to its process
UNLINK_WAIT_S = 5.0  # for the holder of a name this process unlinked to remove it too


def in_tree(k: Kernel, parent: object) -> bool:
    """Is `parent` the /dev/shm of a process that has a tree?"""
    return k.children.table is not None and parent is k.ns.dev.entries.get("shm")


def _key(name: str) -> bytes:
    return f"/dev/shm/{name}".encode("utf-8", "surrogateescape")


def fetch(k: Kernel, name: str, route: Route) -> None:
    """A name this process lacks: if another running process of the tree holds it, ask it
    and wait (the open runs again once the file is here); else return."""
    holder = _running_holder(k, name)
    if holder is None:
        return
    done = WaitQueue()

    def answer(error: int, size: int, mode: int, fd: int) -> None:
        if not error:
            _install(k, name, size, mode, fd)
        done.wake(k.sched)

    route(k, ShmOpen(holder, k.identity.pid, name, k.children.request(answer)))
    raise Block((done,), retry=True, interruptible=False)


def _running_holder(k: Kernel, name: str) -> int | None:
    """The other running process of the tree that holds `name`, if one does."""
    table = k.children.table
    assert table is not None
    holder = table.name_holder(_key(name))
    if holder is None or holder == k.identity.pid:
        return None
    found = table.find(holder)
    return holder if found is not None and found.ended == RUNNING else None


def named(k: Kernel, name: str, node: object) -> None:
    """A name this process gives a file in /dev/shm (open with O_CREAT, link, rename: glibc's
    sem_open links a file it made under a temporary name): the tree's (EEXIST if another
    process holds it), the file's bytes in shared pages from now on."""
    table = k.children.table
    assert table is not None
    if not table.claim_name(_key(name), k.identity.pid):
        raise SyscallError(errno.EEXIST)
    if isinstance(node, TmpFile):
        k.mm.give_pages(node)


def unlinked(k: Kernel, name: str, route: Route) -> Block | None:
    """This process removed `name` from its /dev/shm: so does the tree. Where another
    running process holds it, the wait (for the caller to raise once its own work is
    done) until the holder has removed it too: on Linux the name is gone for every
    process when unlink returns."""
    table = k.children.table
    assert table is not None
    if table.name_holder(_key(name)) == k.identity.pid:
        table.release_name(_key(name), k.identity.pid)
        return None
    holder = _running_holder(k, name)
    if holder is None:
        return None
    done = WaitQueue()
    request = k.children.request(lambda: done.wake(k.sched, result=0))
    route(k, ShmUnlink(holder, name, k.identity.pid, request))
    # Bounded: a holder that ends before it reads the message never answers.
    return Block((done,), k.clock.after(UNLINK_WAIT_S), retry=False, timeout_result=0,
                 interruptible=False)


def serve(k: Kernel, message: ShmOpen, route: Route) -> None:
    """Another process's open of a name this process holds: the file's memfd, or ENOENT
    (and the name let go: the asker then sees it missing)."""
    node = _local(k, message.name)
    if node is None:
        if k.children.table is not None:
            k.children.table.release_name(_key(message.name), k.identity.pid)
        route(k, ShmFile(message.sender, message.request, error=errno.ENOENT))
        return
    pages = k.mm.give_pages(node)
    route(k, ShmFile(message.sender, message.request, size=node.size,
                     mode=st.S_IMODE(node.mode)), PassedFd(os.dup(pages.fd)))


def answered(k: Kernel, message: ShmFile, passed: PassedFd | None) -> None:
    answer = k.children.answers.pop(message.request, None)
    fd = passed.detach() if passed is not None else -1
    if answer is None:
        if fd >= 0:
            os.close(fd)
        return
    answer(message.error, message.size, message.mode, fd)


def unlink(k: Kernel, message: ShmUnlink, route: Route) -> None:
    """Another process unlinked a name this process holds: gone here too, then said."""
    shm = k.ns.dev.entries.get("shm")
    node = _local(k, message.name)
    if node is not None and isinstance(shm, TmpDir):
        k.ns.tmp.drop_link(shm.entries.pop(message.name))
    if k.children.table is not None:
        k.children.table.release_name(_key(message.name), k.identity.pid)
    route(k, ShmUnlinked(message.sender, message.request))


def unlink_answered(k: Kernel, message: ShmUnlinked) -> None:
    """The holder removed a name this process unlinked: its unlink returns."""
    answer = k.children.answers.pop(message.request, None)
    if answer is not None:
        answer()


def _local(k: Kernel, name: str) -> TmpFile | None:
    shm = k.ns.dev.entries.get("shm")
    node = shm.entries.get(name) if isinstance(shm, TmpDir) else None
    return node if isinstance(node, TmpFile) else None


def _install(k: Kernel, name: str, size: int, mode: int, fd: int) -> None:
    """The holder's file, here too: its bytes now, over its pages."""
    shm = k.ns.dev.entries.get("shm")
    if not isinstance(shm, TmpDir) or name in shm.entries:
        os.close(fd)
        return
    node = TmpFile(k.ns.tmp.new_ino(), mode)
    node.data = bytearray(os.pread(fd, size, 0))
    node.pages = SharedPages.adopt(fd)
    k.mm.paged.append(node)
    shm.add(name, node)
