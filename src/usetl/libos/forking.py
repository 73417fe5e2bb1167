"""fork: the child is a copy of the running VM at that instant, in a monitor process of its own.

The monitor forks its own process. The copy releases the parent's VM,
makes a new one over the same guest memory and loads the vCPU state saved
at the fork, with fork returning 0; the monitor state (fd table, memory
map, filesystems) is the copy the host fork made. In a clone, guest memory
is a private mapping of its template's file, so the host fork made it
copy-on-write already (HyperFork's clone, taken of a running VM); a USF
whose memory is a shared file copies it into a file of its own first,
while its parent waits. Only the forking thread goes on in the child, as on
Linux. Pipes and socketpairs become host ones before the fork, and the
parent's captured stdout and stderr are fed by drained host pipes, as for
a child program (children.py); so do eventfds (host eventfds, whose
counter both share) and timerfds (host timerfds, timerfd.py). An epoll set
is not shared: the parent's goes on, the child's copy is EINVAL to use
(told on stderr) and may only be closed. The
child's writes to /tmp reach the parent when it exits (tmpsync.py).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
from typing import TYPE_CHECKING

from usetl.vm import Vm

from . import sharedtmp
from .children import (
    NOT_STARTED,
    Child,
    ConsoleDrain,
    channel_end,
    charge_to,
    close_all_but,
    die_with_parent,
    enter_table,
    eventfd_to_host,
    hear_parent,
    host_fork,
    listener_to_host,
    report_and_exit,
    run_to_exit,
    timerfd_to_host,
    to_host,
)
from .errors import SyscallError
from .files import OpenFile, OutputFile
from .guestnet import GuestSocket
from .hostpipe import HostStreamFile
from .ipc import EventFile
from .proctree import Ready, recv_message, send_message
from .syscalls.sys_poll import EpollFile, ForkedEpollFile
from .timerfd import TimerFile
from .tmpsync import encode_changes, given_files, snapshot

if TYPE_CHECKING:
    from usetl.vm.vcpu_state import VcpuState

    from .kernel import Kernel

log = logging.getLogger(__name__)

CLONE_PARENT_SETTID, CLONE_CHILD_CLEARTID, CLONE_CHILD_SETTID = 0x100000, 0x200000, 0x1000000
CLONE_SETTLS = 0x80000
CSIGNAL = 0xFF
FORK_FLAGS = CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID | CLONE_CHILD_SETTID | CSIGNAL
READY_WAIT = 60.0  # seconds a forked monitor may take to copy memory and make its VM


def fork(k: Kernel, flags: int, parent_tid: int, child_tid: int) -> int:
    """fork, or clone without CLONE_VM (glibc's fork): the child's pid."""
    if flags & ~FORK_FLAGS:
        raise SyscallError(errno.EINVAL)
    tokens = k.children.process_tokens()
    memory_slot = tokens.take(k, "fork")
    try:
        return _fork(k, flags, parent_tid, child_tid, memory_slot)
    except BaseException:
        tokens.give(memory_slot)
        raise


def _fork(k: Kernel, flags: int, parent_tid: int, child_tid: int, memory_slot: int) -> int:
    table = k.children.process_table(k)
    pid = k.sched.new_id()
    enter_table(k, table, "fork", pid)
    try:
        return _fork_as(k, pid, flags, parent_tid, child_tid, memory_slot)
    except BaseException:
        table.forget(pid)
        raise


def _fork_as(k: Kernel, pid: int, flags: int, parent_tid: int, child_tid: int,
             memory_slot: int) -> int:
    drains = _share_files(k)
    if flags & CLONE_PARENT_SETTID:
        k.mem.put_u32(parent_tid, pid)
    k.vm.settle()
    state = k.vm.save_state()
    state.regs.rax = 0  # fork returns 0 in the child
    tokens = k.children.process_tokens()
    control, theirs = socket.socketpair()
    memory = k.vm.memory().values()
    keep = {theirs.fileno(), *k.children.host_fds(), *(m.fd for m in memory),
            *k.mm.page_fds(), *sharedtmp.host_fds(k),
            *(d.write_fd for d in drains.values()),
            *(fd for f in k.fds.files.values() for fd in f.host_fds())}
    try:
        host_pid = host_fork(k, "fork", (control, theirs))
    except SyscallError:
        for drain in drains.values():
            os.close(drain.write_fd)
        raise
    if host_pid == 0:
        control.close()
        _run_child(k, pid, state, flags, child_tid, drains, theirs, keep, memory_slot)
    theirs.close()
    for drain in drains.values():
        os.close(drain.write_fd)
    if not isinstance(recv_message(control, READY_WAIT), Ready):
        os.kill(host_pid, signal.SIGKILL)
        os.waitpid(host_pid, 0)
        control.close()
        raise SyscallError(errno.EAGAIN)
    k.children.start(k, Child(pid, host_pid, control, list(drains.values()), tokens,
                              k.ns.tmp, k.children.watch(), memory_slot, dict(k.fds.files),
                              k.identity.pid))
    return pid


def _share_files(k: Kernel) -> dict[int, ConsoleDrain]:
    """Turn the process's listeners' queues, pipes, socketpairs, eventfds and timerfds into
    host ones (its epoll sets watching those), and make a drain for each capture of output
    it holds (by the capture's id): both processes keep what they share."""
    made: dict[int, OpenFile] = {}
    drains: dict[int, ConsoleDrain] = {}
    for f in list(k.fds.files.values()):
        if isinstance(f, GuestSocket) and f.is_listener():
            listener_to_host(k, f, (k.fds,))  # its waiting connections first
    for f in list(k.fds.files.values()):
        if channel_end(f) is not None and id(f) not in made:
            to_host(k, f, (k.fds,), made)
        elif isinstance(f, EventFile) and id(f) not in made:
            eventfd_to_host(k, f, (k.fds,), made)
        elif isinstance(f, TimerFile) and id(f) not in made:
            timerfd_to_host(k, f, (k.fds,), made)
        elif isinstance(f, OutputFile) and id(f) not in drains:
            drains[id(f)] = k.children.watch().drain(f)
    return drains


def _run_child(k: Kernel, pid: int, state: VcpuState, flags: int, child_tid: int,
               drains: dict[int, ConsoleDrain], control: socket.socket, keep: set[int],
               memory_slot: int) -> None:
    """In the forked monitor process: this VM's copy runs as the child, to its exit; what
    it maps beyond what it shares with its parent is charged to `memory_slot`."""
    status, changes, ran = NOT_STARTED, b"", None
    try:
        die_with_parent()
        before, given = snapshot(k.ns.tmp), given_files(k.fds.files)
        _become_child(k, pid, state, drains, keep)
        ran = k
        assert k.children.tokens is not None and k.children.tokens.memory is not None
        charge_to(k, k.children.tokens.memory, memory_slot, True)
        hear_parent(k, control)
        if flags & CLONE_CHILD_SETTID:
            k.mem.put_u32(child_tid, pid)
        if flags & CLONE_CHILD_CLEARTID:
            k.sched.current.clear_child_tid = child_tid
        send_message(control, Ready())
        status = run_to_exit(k, "the forked child")
        changes = encode_changes(k.ns.tmp, before, given)
    except BaseException as e:  # never back into the parent's code: this process only exits
        log.error("forked child %d could not run: %s", pid, e)
    report_and_exit(control, status, changes, ran)


def _become_child(k: Kernel, pid: int, state: VcpuState, drains: dict[int, ConsoleDrain],
                  keep: set[int]) -> None:
    """The monitor state and a VM of the child's own: its memory, its one thread, its fds."""
    old = k.vm
    memory = old.memory()
    for mem in memory.values():
        if not mem.private:
            mem.copy_to_new_file()  # the parent waits meanwhile: the bytes are the fork's
    k.mm.reshare()
    old.release()
    k.children = k.children.inherited()
    k.guest_net.forget_closed()
    close_all_but(keep | {m.fd for m in memory.values()})
    vm = Vm(old.ram.size >> 20, old.specs, memory=memory)
    vm.restore_state(state)
    k.vm = vm
    k.become_process(pid, k.identity.pid)
    k.signals.timers.clear()  # as Linux: a child has no timers of its parent's
    pipes = {key: HostStreamFile.for_pipe_end(k, d.write_fd, reads=False, nonblocking=False)
             for key, d in drains.items()}
    for fd, f in list(k.fds.files.items()):
        if id(f) in pipes:
            k.fds.files[fd] = pipes[id(f)]
        elif isinstance(f, HostStreamFile):
            f.kernel = k
        elif isinstance(f, EpollFile):
            k.fds.files[fd] = ForkedEpollFile(f)

