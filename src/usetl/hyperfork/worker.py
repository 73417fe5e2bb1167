"""The processes behind templates and clones (this module's code runs in them).

A template process holds a frozen USF (frozen.py). For each clone it forks
a child that maps the memory copy-on-write, creates a new VM with the
captured state and serves invocations on its own socket. A function
template is such a child that loaded a function and then became a template
process itself. A loader process forks template processes from snapshots on
disk. Messages are protocol.py's.

    python -m usetl.hyperfork.worker FD    # FD: the controller's socket
"""

from __future__ import annotations

import ctypes
import errno
import gc
import logging
import os
import resource
import select
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, NoReturn

import usetl
from usetl import abi, hostmm, jail
from usetl.abi import etl as etl_wire
from usetl.etl import egress
from usetl.etl.egress import EgressPolicy
from usetl.image.archive import ImageArchive
from usetl.invocation import SANDBOX_ERROR, ErrorInfo, InvocationResult, IoUsage
from usetl.jail import JailError, JailSpec, handshake, namespaces
from usetl.jail.namespaces import PreparedRoot
from usetl.libos.archivefs import ArchiveMount
from usetl.libos.children import ProcessSlots, host_holders, let_go
from usetl.libos.etl_device import Spare
from usetl.libos.handoff import HandedFiles, HandOff, new_memory_file
from usetl.libos.hostfs import HostDirFS
from usetl.usf import UsfError, start_usf
from usetl.usf.builder import shared_clock
from usetl.vm import Vm
from usetl.vm.memory import PAGE_SIZE

from . import heapfill, snapshot
from .frozen import Frozen, memory_digests
from .protocol import (
    CLONE_REQUESTS,
    LOADER_REQUESTS,
    MAX_FDS,
    TEMPLATE_FIRST,
    TEMPLATE_REQUESTS,
    Call,
    Channel,
    ChannelClosed,
    CloneReady,
    Close,
    Digests,
    Done,
    ExportSnapshot,
    Failed,
    Fork,
    Forked,
    HyperForkError,
    Info,
    InspectClone,
    Inspected,
    InspectTemplate,
    Invoke,
    Invoked,
    LoadFunction,
    LoadInSpare,
    LoadSnapshot,
    MonitorRan,
    ProtocolError,
    ReportWorkingSet,
    Rollback,
    RolledBack,
    RunInMonitor,
    StartLoader,
    StartTemplate,
    TemplateReady,
    WorkingSet,
    failure,
)

log = logging.getLogger(__name__)

# Tests set this to make clones take RunInMonitor requests: Python code run in the clone's
# monitor process, as if its guest had taken it over. Read before the jail empties the
# environment; never set by the platform.
TEST_HOOKS = os.environ.get("USETL_TEST_HOOKS") == "1"

PR_SET_NO_NEW_PRIVS = 38
REGIONS = (etl_wire.HOST_REGION, etl_wire.GUEST_REGION)

# A template makes its next clone's process ahead (a shell: TemplateProcess._make_shell) once
# no request has come for this long: a new clone's fork, copy-on-write view and VM (with
# its memslots) are then off the next Fork's path. Not at once: made while the clone just
# forked runs its first request, the shell would take the cores from that request.
SHELL_IDLE_S = 0.02

# Compiles and runs code, as most requests do: the agent's whole request path.
WARM_REQUEST = {"kind": abi.EXEC, "code": "pass"}
# How long a shell's warm-up (CloneProcess.warm_ahead) may run the template's guest, and
# what it runs: a read of a byte of each page (guest RAM is identity-mapped).
WARM_AHEAD_TIMEOUT_S = 10.0
WARM_AHEAD_PAGES = 64  # pages a run of the warm-up touches: about 4 ms of first touches
TOUCH_CODE = """import ctypes
for start, end in {spans!r}:
    for page in range(start, end, {page}):
        ctypes.c_char.from_address(page).value
"""


def ready(frozen: Frozen, load: InvocationResult | None = None,
          warmup: InvocationResult | None = None) -> TemplateReady:
    config = frozen.usf.config
    return TemplateReady(pid=os.getpid(), startup_ms=frozen.usf.startup.ms,
                         memory_bytes=frozen.memory_bytes(), state_bytes=len(frozen.state),
                         guest_bytes=frozen.guest_bytes(),
                         load=load, warmup=warmup,
                         egress=EgressPolicy(tuple(config.allow), config.allow_private,
                                             config.etl_timeout))


class CloneProcess:
    """One clone: a new VM over a private view of the template's memory."""

    def __init__(self, frozen: Frozen):
        t0 = time.perf_counter()
        self.frozen = frozen
        usf = frozen.usf
        for name, mem in frozen.memory.items():
            if name in REGIONS:
                mem.use_own_file()  # the egress broker writes into it: no one else may map it
            else:
                mem.make_private()
        if frozen.huge_holes:
            frozen.memory["ram"].map_anonymous(frozen.huge_holes)
        self.timings = {"map_ms": (time.perf_counter() - t0) * 1e3}
        self.prefetch()
        t1 = time.perf_counter()
        self.vm = Vm(usf.config.mem_mib, frozen.specs, memory=frozen.memory)
        t2 = time.perf_counter()
        self.vm.restore_state(frozen.vcpu)
        usf.attach(self.vm)
        self.usf = usf
        self.instance = uuid.uuid4().hex
        # A memory file for the next pipeline stage's guest region, made off the request's
        # path after a stage that handed files on (handoff.py: huge pages take time to make).
        self.spare_handoff: int | None = None
        self.unused_handoff: Spare | None = None  # lent, not handed on: the next spare
        self.warmed = False  # by warm_ahead, in a shell
        t3 = time.perf_counter()
        self.timings.update(vm_ms=(t2 - t1) * 1e3, restore_ms=(t3 - t2) * 1e3)

    def prefetch(self) -> None:
        """Copy the template's working set (Frozen.learn_working_set) into this process's
        RAM in one batch, before the guest runs."""
        t0 = time.perf_counter()
        working_set = self.frozen.working_set
        if working_set:
            self.frozen.memory["ram"].prefetch_for_writing(working_set)
        self.timings.update(prefetch_ms=(time.perf_counter() - t0) * 1e3,
                            prefetched_pages=sum(n for _, n in working_set) / PAGE_SIZE)

    def ready(self) -> CloneReady:
        """Serving from now on: the next request gives the guest this clone's own identity."""
        self.usf.renew_identity(self.instance)
        return CloneReady(pid=os.getpid(), instance=self.instance, timings=self.timings)

    def warm(self) -> float:
        """Run a no-op request and roll back, ahead of demand; returns milliseconds taken.

        A fresh clone's first request pays for first touches of many pages
        (copy-on-write on the host, shadow page faults in KVM); a clone that
        has run once and been rolled back keeps those pages mapped.
        """
        t0 = time.perf_counter()
        result = self.usf.invoke(WARM_REQUEST)
        if not result.ok:
            raise HyperForkError(f"the clone's warm-up request failed: {result.error.message}",
                                 result.error)
        self.rollback(Rollback())
        return (time.perf_counter() - t0) * 1e3

    def warm_ahead(self, claimed: Callable[[], bool]) -> None:
        """In a shell, before any Fork claims it: the agent's request path once, reading a
        byte of each page of the template's working set (what a recorded first request
        wrote, where ring 3 may read it), then a rollback, so that the first touches of a
        new VM (KVM maps each page the guest touches: ~590 for a first call, 8 ms here)
        leave the first request's path. With no identity: the guest runs as its template
        did before the freeze (no after-clone hook, no seed), nothing it did survives the
        rollback, and the clone's own identity comes with its first request, as always.

        In runs of WARM_AHEAD_PAGES pages, and no further once `claimed()`: a Fork that
        claims the shell mid-way waits for one run, not for all of them (back to back,
        forks came while their shells warmed up and each waited tens of ms)."""
        t0 = time.perf_counter()
        ram = self.frozen.memory["ram"]
        # No working set learnt yet: one run over no pages, the request path alone.
        runs = _page_runs([(ram.gpa + off, ram.gpa + off + n)
                           for off, n in self.frozen.ring3_readable(self.frozen.working_set)],
                          WARM_AHEAD_PAGES) or [[]]
        touched = ran = 0
        for spans in runs:
            if claimed():
                break
            request = {"kind": abi.EXEC, "code": TOUCH_CODE.format(spans=spans, page=PAGE_SIZE)}
            result = self.usf.invoke(request, timeout=WARM_AHEAD_TIMEOUT_S)
            ran += 1
            if not result.ok:
                raise HyperForkError(
                    f"the shell's warm-up request failed: {result.error.message}", result.error)
            touched += sum(end - start for start, end in spans) // PAGE_SIZE
        else:
            self.warmed = True
        if ran:
            self.rollback(Rollback())
        self.timings.update(warmed_ahead_ms=(time.perf_counter() - t0) * 1e3,
                            warmed_ahead_pages=float(touched))

    def rollback(self, msg: Rollback) -> RolledBack:
        """Back to the template's exact state: dirtied pages, vCPU, monitor.

        The guest does not run: the next request carries a fresh identity.
        """
        if not self.usf.alive:
            raise HyperForkError("the clone's guest died; it cannot be rolled back")
        t0 = time.perf_counter()
        exits0 = self.vm.exits
        pages = 0
        for mem in self.vm.memory().values():
            ranges = mem.written_ranges()
            mem.revert(ranges)
            pages += sum(length for _, length in ranges) // PAGE_SIZE
        copy_ms = (time.perf_counter() - t0) * 1e3
        self.vm.reset_to(self.frozen.vcpu)
        held = host_holders(self.usf.kernel)
        self.frozen.in_place.reset()  # self.usf's objects, as the template froze them
        let_go(self.usf.kernel, held)
        self.usf.attach(self.vm)
        self.usf.renew_identity(self.instance)
        restore_ms = (time.perf_counter() - t0) * 1e3
        return RolledBack(pages=pages, copy_ms=copy_ms, restore_ms=restore_ms,
                          ms=(time.perf_counter() - t0) * 1e3, exits=self.vm.exits - exits0)

    def invoke(self, msg: Invoke) -> Invoked:
        return self._invoked(self.usf.invoke(msg.request, timeout=msg.timeout))

    def _invoked(self, result: InvocationResult, files: HandedFiles | None = None) -> Invoked:
        """The reply to an invocation, with the socket path's I/O apart for billing."""
        sockets = IoUsage(**self.usf.kernel.net_account.as_dict())
        return Invoked(result, files, sockets)

    def call(self, msg: Call, fds: list[int]) -> tuple[Invoked, tuple[int, ...]]:
        """The handler once; with a previous stage's files handed in, and its own kept;
        with the function's process slots, which its children take while it runs."""
        tokens = self.usf.kernel.children.process_tokens()
        if msg.slots:
            if len(fds) < 2:
                raise ProtocolError("process slots come with two fds")
            write_fd, read_fd = fds.pop(), fds.pop()
            tokens.slots = ProcessSlots(read_fd, write_fd)
        handoff = None
        if msg.files is not None:
            if len(fds) != 1:
                raise ProtocolError("handed files come with one memory file")
            handoff = HandOff(fds.pop(), msg.files)
        try:
            if msg.keep_files:
                spare, self.spare_handoff = self.spare_handoff, None
                self.usf.etl.lend_guest_region(spare)
            try:
                result = self.usf.call(msg.event, msg.context, msg.timeout, handoff)
            finally:
                kept = None
                if msg.keep_files:
                    kept, self.unused_handoff = self.usf.etl.take_guest_files(handoff)
        finally:
            if handoff is not None:
                handoff.close()
            if tokens.slots is not None:
                tokens.slots.close()
                tokens.slots = None
        if kept is None:
            return self._invoked(result), ()
        result.io.copied_bytes += kept.copied_bytes  # files it handed on beside its own
        return self._invoked(result, kept.files), (kept.fd,)

    def inspect(self, msg: InspectClone) -> Inspected:
        """Digests of guest memory and where the needle occurs in it (for checking isolation)."""
        memory = self.vm.memory()
        found: list[int] = []
        for mem in memory.values() if msg.needle else ():
            found += (mem.gpa + at for at in _occurrences(mem.view, msg.needle))
        return Inspected(sha256=memory_digests(memory), found=found)

    def working_set(self, msg: ReportWorkingSet) -> WorkingSet:
        """The RAM pages this clone owns copies of: what its requests so far wrote."""
        return WorkingSet(self.vm.ram.written_ranges())

    def run_in_monitor(self, msg: RunInMonitor) -> MonitorRan:
        """exec the code here; its variable `result` is the answer (tests of the jail only)."""
        if not TEST_HOOKS:
            raise HyperForkError("RunInMonitor is for tests (USETL_TEST_HOOKS=1) only")
        scope: dict = {}
        exec(msg.code, scope)
        return MonitorRan(scope.get("result"))

    def serve(self, chan: Channel) -> None:
        handlers = {Invoke: self.invoke, Rollback: self.rollback, InspectClone: self.inspect,
                    ReportWorkingSet: self.working_set, RunInMonitor: self.run_in_monitor}
        chan.expect(CLONE_REQUESTS)
        while True:
            msg, fds = chan.recv()
            out_fds: tuple[int, ...] = ()
            try:
                if isinstance(msg, Call):
                    reply, out_fds = self.call(msg, fds)
                else:
                    reply = handlers[type(msg)](msg)
            except Exception as e:
                log.exception("clone request %s failed", type(msg).__name__)
                reply = failure(e)
            finally:
                _close_all(fds)
            chan.send(reply, fds=out_fds)
            _close_all(list(out_fds))
            if self.spare_handoff is None and (out_fds or self.unused_handoff is not None):
                self._make_spare_handoff()

    def _make_spare_handoff(self) -> None:
        """After the reply: the lent memory file back unused, zeroed, or a new one."""
        unused, self.unused_handoff = self.unused_handoff, None
        try:
            if unused is not None:
                if unused.shown:
                    hostmm.zero_file(unused.fd, self.usf.etl.guest.size)
                self.spare_handoff, unused = unused.fd, None
            else:
                self.spare_handoff = new_memory_file(self.usf.etl.guest.size)
        except OSError as e:  # the next stage makes its own, on its request's path
            log.warning("no spare hand-off memory file: %s", e)
        finally:
            if unused is not None:
                os.close(unused.fd)


class TemplateProcess:
    """Forks clones. A jailer template (started or loaded by the controller, running only
    the image's own code) jails each child before its first guest instruction; a jailed
    one (a function template, itself such a child) passes its jail on by fork."""

    def __init__(self, frozen: Frozen, chan: Channel, jailed: bool = False,
                 restored: bool = False,
                 shell_cgroups: list[tuple[str, list[int]]] | None = None):
        self.frozen = frozen
        self.chan = chan
        self.jailed = jailed
        # Once a Fork asked for a clone that needs no jail of its own (a jailed template's
        # clones inherit its jail, an unjailed one's have none), the template keeps one
        # clone's process made ahead for the next such Fork. A template restored from a
        # snapshot (whose clones never need one) makes its first at once: it is restored to
        # be forked, and no clone's first request runs yet to take the cores from.
        self.makes_shells = restored
        self.shell_now = restored
        self.shell: Shell | None = None
        # Cgroups sent with Forks (or a LoadSnapshot) for the next shells (name, cgroup.procs
        # fds), oldest first.
        self.shell_cgroups: list[tuple[str, list[int]]] = shell_cgroups or []

    def serve(self) -> None:
        if self.frozen.usf.config.merge_pages and not hostmm.merge_identical_pages():
            log.warning("merge_pages: the kernel refused PR_SET_MEMORY_MERGE (%s); pages "
                        "stay unmerged", os.strerror(ctypes.get_errno()))
        # Every child goes in a new PID namespace (a jailed template's already is in one).
        _serve(self.chan, TEMPLATE_REQUESTS, self._handle, pid_namespace=not self.jailed,
               idle=self._make_shell_if_idle)

    def _handle(self, msg: object, fds: list[int]) -> None:
        if isinstance(msg, Fork) and len(fds) - msg.cgroup_files in (1, 2):
            self._fork(fds, msg)
            return
        _close_all(fds)
        if isinstance(msg, ExportSnapshot):
            self._export(msg)
            return
        self.chan.send(self._answer(msg))

    def _make_shell_if_idle(self) -> None:
        if self.makes_shells and self.shell is None and (self.shell_now or self._idle()):
            self.shell_now = False
            self.shell = self._make_shell()

    def _answer(self, msg: object) -> object:
        if isinstance(msg, Info):
            return ready(self.frozen)
        if isinstance(msg, InspectTemplate):
            return Digests(self.frozen.digests())
        return Failed(ErrorInfo("ProtocolError", f"{type(msg).__name__} needs one socket"))

    def _export(self, msg: ExportSnapshot) -> None:
        if msg.working_set is not None:
            self.frozen.learn_working_set(msg.working_set)
        try:
            exported, memory_fds = snapshot.export(self.frozen, own_jail_paths(self.frozen))
        except Exception as e:
            log.exception("exporting the template failed")
            self.chan.send(Failed(ErrorInfo(type(e).__name__, f"cannot save the template: {e}")))
            return
        self.chan.send(exported, fds=tuple(memory_fds))

    def _fork(self, fds: list[int], msg: Fork) -> None:
        if msg.cgroup_files:
            fds, cgroup_fds = fds[:-msg.cgroup_files], fds[-msg.cgroup_files:]
            if msg.cgroup is None:
                _close_all(cgroup_fds)
            else:
                self.shell_cgroups.append((msg.cgroup, cgroup_fds))
        if msg.working_set is not None:
            self.frozen.learn_working_set(msg.working_set)
        if msg.load is None and (msg.jail is None or self.jailed):
            self.makes_shells = True  # its next clones may come from shells
            if self.shell is not None and self._claim(fds, msg):
                return
        pid = os.fork()
        if pid:
            _close_all(fds)
            self.chan.send(Forked(pid))
            self.frozen.trim()
            return
        chan = Channel.from_fd(fds[0], CLONE_REQUESTS)

        def become_child() -> None:
            self._leave_template()
            handshake.announce(chan.sock)
            if msg.jail is not None and not self.jailed:
                keep = {*fds, *(m.fd for m in self.frozen.memory.values())}
                jail.confine(msg.jail.with_paths(*_jail_paths(self.frozen, msg.load)), keep)
            hostmm.adopt_pagemap(jail.open_own_proc_file("pagemap"))  # what rollback reads
            clone = CloneProcess(self.frozen)
            if msg.load is None:
                serve_clone(clone, chan, fds, msg)
            else:
                _install_egress(fds)
                become_function_template(clone, msg.load, chan,
                                         self.jailed or msg.jail is not None)

        _run_child(chan, become_child)

    def _leave_template(self) -> None:
        """In a forked child: let go of what only the template process uses."""
        self.chan.sock.close()
        if self.shell is not None:
            self.shell.claims.close()
        for _, fds in self.shell_cgroups:  # no clone may move processes into a cgroup
            _close_all(fds)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    def _idle(self) -> bool:
        """No request came within SHELL_IDLE_S."""
        return not self.chan.read_ahead() and \
            not select.select([self.chan.sock], [], [], SHELL_IDLE_S)[0]

    def _make_shell(self) -> Shell:
        """Fork the next clone's process ahead: its copy-on-write view and VM made, it waits
        for the Fork it will serve (no guest instruction runs before that)."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cgroup, cgroup_fds = self.shell_cgroups.pop(0) if self.shell_cgroups else (None, [])
        pid = os.fork()
        if pid:
            theirs.close()
            _close_all(cgroup_fds)
            return Shell(pid, Channel(mine), cgroup)
        mine.close()
        self._leave_template()
        claims = Channel(theirs, Fork)
        clone: CloneProcess | None = None
        error: BaseException | None = None
        try:
            # Before the pages it makes its own are charged; a shell without a cgroup of its
            # own (none was sent) stays in its template's until claimed.
            own_cgroup = _enter_cgroup(cgroup_fds)
            hostmm.adopt_pagemap(jail.open_own_proc_file("pagemap"))
            clone = CloneProcess(self.frozen)
            clone.timings["made_ahead"] = 1.0
            # While no Fork waits for it: the template's RAM mapped too (on a Fork's path it
            # bought nothing; ahead it saves ~100 of the first request's ~370 host faults),
            # and the request path warmed (on a Fork's path it costs what it saves).
            if not _waiting(claims):
                self.frozen.memory["ram"].prefetch_for_reading(self.frozen.data["ram"])
            if (own_cgroup or not self.jailed) and not _waiting(claims):
                clone.warm_ahead(lambda: _waiting(claims))  # copies charged to its cgroup
        except Exception as e:  # told on the channel of the Fork that claims this shell
            error = e
        try:
            msg, fds = claims.recv()
        except HyperForkError:  # the template has gone, or dropped this shell
            os._exit(0)
        chan = Channel.from_fd(fds[0], CLONE_REQUESTS)

        def serve() -> None:
            handshake.announce(chan.sock)
            if clone is None:
                raise error or HyperForkError("the shell was not made")
            if msg.working_set is not None:  # learnt since this shell was made
                self.frozen.learn_working_set(msg.working_set)
                clone.prefetch()
            serve_clone(clone, chan, fds, msg)

        _run_child(chan, serve)

    def _claim(self, fds: list[int], msg: Fork) -> bool:
        """Hand this Fork's sockets to the shell; False if it has gone (then fork anew)."""
        shell, self.shell = self.shell, None
        assert shell is not None
        try:
            shell.claims.send(msg, fds=tuple(fds))
        except ChannelClosed:
            return False
        finally:
            shell.claims.close()
        _close_all(fds)
        self.chan.send(Forked(shell.pid, cgroup=shell.cgroup))
        self.frozen.trim()
        return True


class Shell:
    """A clone's process forked ahead by its template (TemplateProcess._make_shell); the
    template sends it the Fork it serves, with that Fork's sockets, on `claims`. `cgroup`:
    the cgroup (a Fork's) it moved itself into, if it had one."""

    def __init__(self, pid: int, claims: Channel, cgroup: str | None):
        self.pid = pid
        self.claims = claims
        self.cgroup = cgroup


def _page_runs(spans: list[tuple[int, int]], pages: int) -> list[list[tuple[int, int]]]:
    """Page-aligned (start, end) `spans` cut into runs of at most `pages` pages each."""
    runs: list[list[tuple[int, int]]] = [[]]
    room = pages
    for start, end in spans:
        while start < end:
            if room == 0:
                runs.append([])
                room = pages
            stop = min(end, start + room * PAGE_SIZE)
            runs[-1].append((start, stop))
            room -= (stop - start) // PAGE_SIZE
            start = stop
    return [run for run in runs if run]


def _waiting(chan: Channel) -> bool:
    """Whether a message has come on `chan` (and waits to be read)."""
    return chan.read_ahead() or bool(select.select([chan.sock], [], [], 0)[0])


def _enter_cgroup(procs_fds: list[int]) -> bool:
    """Move this process into the cgroup whose cgroup.procs files these are (opened by the
    controller; the controller checks the move before it counts on it); whether it did."""
    if not procs_fds:
        return False
    try:
        for fd in procs_fds:
            os.write(fd, b"0")  # 0: the writing process
    except OSError as e:
        if e.errno != errno.ENODEV:  # ENODEV: removed, its template closing: nothing amiss
            log.warning("could not enter a prepared cgroup (the controller places it): %s", e)
        return False
    finally:
        _close_all(procs_fds)
    return True


def serve_clone(clone: CloneProcess, chan: Channel, fds: list[int], msg: Fork) -> None:
    """A new clone's life once it has announced itself: ready, warmed if asked, serving."""
    _install_egress(fds)
    info = clone.ready()
    if msg.warm and not clone.warmed:  # a shell's warm-up did the same
        info.warm_ms = clone.warm()
    chan.send(info)
    clone.serve(chan)


def _install_egress(fds: list[int]) -> None:
    if len(fds) == 2:
        egress.install(socket.socket(fileno=fds[1]))


def _run_child(chan: Channel, body: Callable[[], None]) -> NoReturn:
    """Run a forked child's body, then end the process; a failure is told on `chan`."""
    status = 0
    try:
        body()
    except (ChannelClosed, ProtocolError):
        status = 1
    except BaseException as e:
        log.exception("clone failed")
        try:
            chan.send(failure(e, SANDBOX_ERROR))
        except ChannelClosed:
            pass
        status = 1
    finally:
        os._exit(status)


class SpareTemplate:
    """A template process the loader forked ahead of a load (LoaderProcess._make_spare),
    waiting for its order on `orders`; `thawed`: the keys of the snapshots it inherited
    thawed (Checked.thawed then); `cgroup`: the cgroup it moved itself into."""

    def __init__(self, pid: int, orders: Channel, thawed: list[tuple], cgroup: str):
        self.pid = pid
        self.orders = orders
        self.thawed = thawed
        self.cgroup = cgroup

    def kill(self) -> None:
        self.orders.close()
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class LoaderProcess:
    """Makes template processes from snapshots on disk, as Firecracker loads a snapshot into
    a VMM process started ahead: this process is started once, with Python and usetl
    imported; per snapshot it checks the files (snapshot.Checked: each unchanged file's
    checksum once, the state file's every time), thaws the snapshot (its monitor state
    unpickled and its memory files mapped, kept while its files stay the same) and forks
    the template process, which inherits it. A restore then costs a fork, not an
    interpreter's start, an image's index, a hash of every memory file and an unpickling.

    Once it has answered a jailed load, it forks the next template process ahead (a spare),
    as a template makes its next clone's process ahead: it moves itself into a cgroup the
    controller sent with that load, off any load's path (a move waits for an RCU grace
    period), and waits. The next jailed load, checked as any, is handed to it if it
    inherited that snapshot thawed; else it is ended and the load forks anew. Either way
    each jailed load takes the spare and the cgroup sent before it, and brings the next."""

    def __init__(self, chan: Channel):
        self.chan = chan
        self.checked = snapshot.Checked()
        # Jail roots made once per snapshot's paths: a restored template enters a copy of
        # one (jail.PreparedRoots) instead of bind-mounting each path itself.
        self.roots = jail.PreparedRoots()
        self.spare: SpareTemplate | None = None
        self.spare_cgroup: tuple[str, list[int]] | None = None  # name, cgroup.procs fds

    def serve(self) -> None:
        # What every template process inherits, made here once: the TSC calibration its
        # monitor state refers to (a wait of 5 ms or more per restore otherwise), and frozen
        # (by _serve), so that its own collection before it forks clones
        # (TemplateProcess.serve) walks only the snapshot's objects. Template processes go
        # in a PID namespace of their own, as a jailer template's children do.
        shared_clock()
        _serve(self.chan, LOADER_REQUESTS, self._load, pid_namespace=True,
               idle=self._make_spare)

    def _load(self, msg: LoadSnapshot, fds: list[int]) -> None:
        if len(fds) != 1 + msg.shell_cgroup_files + msg.spare_cgroup_files:
            _close_all(fds)
            self.chan.send(Failed(ErrorInfo("ProtocolError", "LoadSnapshot needs one socket "
                                            "and the cgroup files it counts")))
            return
        spare = None
        if msg.jail is not None:
            spare = self._take_spare(msg, fds)
        try:
            opened = snapshot.open_checked(msg.directory, self.checked)
            header, key = opened.header, opened.key
            frozen = self.checked.thaw(opened)
        except Exception as e:
            if spare is not None:
                spare.kill()
            _close_all(fds)
            self.chan.send(failure(e))
            return
        spec = None if msg.jail is None else msg.jail.with_paths(
            *_system_jail_paths(), *header["jail_paths"])
        try:
            root = self._root(spec)
        except (JailError, OSError) as e:
            if spare is not None:
                spare.kill()
            _close_all(fds)
            self.chan.send(failure(e))
            return
        if spare is not None:
            if key in spare.thawed and self._hand_to(spare, msg, spec, root, key, fds, frozen):
                return
            spare.kill()
        self._fork(frozen, fds, msg, spec, root)

    def _take_spare(self, msg: LoadSnapshot, fds: list[int]) -> SpareTemplate | None:
        """A jailed load's part in the spare's cycle: the spare (if made) is this load's to
        use or end; the cgroup this load brought (its files: the last of `fds`, taken off)
        replaces the one for a spare not made yet."""
        spare, self.spare = self.spare, None
        if self.spare_cgroup is not None:
            _close_all(self.spare_cgroup[1])
            self.spare_cgroup = None
        if msg.spare_cgroup_files:
            spare_fds = fds[-msg.spare_cgroup_files:]
            del fds[-msg.spare_cgroup_files:]
            if msg.spare_cgroup is None:
                _close_all(spare_fds)
            else:
                self.spare_cgroup = (msg.spare_cgroup, spare_fds)
        return spare

    def _hand_to(self, spare: SpareTemplate, msg: LoadSnapshot, spec: JailSpec | None,
                 root: jail.JailRoot | None, key: tuple, fds: list[int],
                 frozen: Frozen) -> bool:
        """Send the load to the spare; False if it has gone, or the fds would be too many
        for one message (then fork anew)."""
        order = LoadInSpare(LoadSnapshot(msg.directory, spec, msg.shell_cgroup,
                                         msg.shell_cgroup_files), spare.thawed.index(key))
        sent = list(fds)
        if root is not None:
            order.root, order.owned = True, list(root.root.owned)
            order.devices = list(root.root.devices)
            order.trees = [path for _, path in root.trees]
            sent += [root.root.fd, *(tree for tree, _ in root.trees)]
        if len(sent) > MAX_FDS:
            return False
        try:
            spare.orders.send(order, fds=tuple(sent))
        except ChannelClosed:
            return False
        _close_all(fds)
        if root is not None:
            root.close()
        spare.orders.close()
        self.chan.send(Forked(spare.pid, frozen.guest_bytes(),
                              cgroup=spare.cgroup))
        return True

    def _make_spare(self) -> None:
        """Once a load is answered and no other waits: its fork runs while the template
        process just made jails itself (the controller waits for that), not later, beside
        that template's first clone."""
        if self.spare is None and self.spare_cgroup is not None and not _waiting(self.chan):
            self.spare = self._fork_spare()

    def _fork_spare(self) -> SpareTemplate:
        """Fork the next template process ahead: in its cgroup, it waits for its order."""
        assert self.spare_cgroup is not None
        (cgroup, cgroup_fds), self.spare_cgroup = self.spare_cgroup, None
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        thawed = list(self.checked.thawed)
        pid = os.fork()
        if pid:
            theirs.close()
            _close_all(cgroup_fds)
            return SpareTemplate(pid, Channel(mine), thawed, cgroup)
        mine.close()
        try:
            self._leave_loader()
            _enter_cgroup(cgroup_fds)  # the controller checks it before it counts on it
            orders = Channel(theirs, LoadInSpare)
            order, fds = orders.recv()
            orders.close()
        except BaseException:  # the loader has gone, or ended this spare
            os._exit(0)
        msg = order.load
        frozen = self.checked.thawed[thawed[order.thawed]]
        root = None
        if order.root:  # the last fds: the root's mount namespace, then its trees
            split = len(fds) - len(order.trees) - 1
            prepared = PreparedRoot(fds[split], tuple(order.owned),
                                    tuple((path, rdev) for path, rdev in order.devices))
            root = jail.JailRoot(prepared, list(zip(fds[split + 1:], order.trees, strict=True)))
            del fds[split:]
        self._become_template(frozen, fds, msg, msg.jail, lambda: root)

    def _root(self, spec: JailSpec | None) -> jail.JailRoot | None:
        """The prepared root a restored template with this jail enters, if jailed as root."""
        if spec is None or os.geteuid() != 0:
            return None
        return jail.jail_root(self.roots.get(spec.read_only, spec.devices), spec.uid, spec.gid)

    def _fork(self, frozen: Frozen, fds: list[int], msg: LoadSnapshot,
              spec: JailSpec | None, root: jail.JailRoot | None) -> None:
        pid = os.fork()
        if pid:
            _close_all(fds)
            if root is not None:
                root.close()
            self.chan.send(Forked(pid, frozen.guest_bytes()))
            return
        self._become_template(frozen, fds, msg, spec, lambda: root)

    def _leave_loader(self) -> None:
        """In a forked child: let go of what only the loader uses."""
        self.chan.sock.close()
        if self.spare is not None:
            self.spare.orders.close()
        if self.spare_cgroup is not None:  # no template process may move processes
            _close_all(self.spare_cgroup[1])
            self.spare_cgroup = None
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    def _become_template(self, frozen: Frozen, fds: list[int], msg: LoadSnapshot,
                         spec: JailSpec | None,
                         root_of: Callable[[], jail.JailRoot | None]) -> NoReturn:
        """In the loader's child: the template process of `frozen`, jailed by `spec` into
        the root `root_of` gives, serving on fds[0] (the rest: its first shell's cgroup)."""
        chan = Channel.from_fd(fds[0], TEMPLATE_REQUESTS)
        shell_cgroups = [(msg.shell_cgroup, fds[1:])] if msg.shell_cgroup is not None else []
        status = 0
        try:
            self._leave_loader()  # a spare did so already: this changes nothing then
            handshake.announce(chan.sock)
            if spec is not None:
                keep = {chan.fileno(), *(m.fd for m in frozen.memory.values()),
                        *(f for _, cgroup in shell_cgroups for f in cgroup)}
                jail.confine(spec, keep, root_of())
            chan.send(ready(frozen))
            TemplateProcess(frozen, chan, jailed=spec is not None, restored=True,
                            shell_cgroups=shell_cgroups).serve()
        except (ChannelClosed, ProtocolError):
            status = 1
        except BaseException as e:
            log.exception("the template process did not start")
            try:
                chan.send(failure(e))
            except ChannelClosed:
                pass
            status = 1
        finally:
            os._exit(status)


def _serve(chan: Channel, requests: Any, handle: Callable[[Any, list[int]], None],
           pid_namespace: bool, idle: Callable[[], None] | None = None) -> None:
    """A template or loader process's loop: each request and its fds to `handle`, until
    Close or the controller's end; `idle` before each wait for the next. Its children are
    reaped as they exit; with `pid_namespace` (and as root) they go in a new PID
    namespace."""
    if pid_namespace and os.geteuid() == 0:
        # This process may start no thread from here on (the kernel refuses), and needs none.
        namespaces.start_pid_namespace()
    signal.signal(signal.SIGCHLD, _reap_children)
    gc.collect()
    # Then what every fork inherits: no child's collection writes to those pages, and its
    # allocations go to fresh pools (heapfill), not into the template's free blocks.
    heapfill.fill_free_blocks()
    gc.freeze()
    chan.expect(requests)
    while True:
        if idle is not None:
            idle()
        try:
            msg, fds = chan.recv()
        except ChannelClosed:
            return
        if isinstance(msg, Close):
            _close_all(fds)
            chan.send(Done())
            return
        handle(msg, fds)


INSPECT_CHUNK = 16 << 20


def _occurrences(view: memoryview, needle: bytes) -> list[int]:
    """Offsets of needle in view, searched a chunk at a time (a copy of all of guest memory
    would not fit in the jail's memory limit)."""
    found = []
    overlap = len(needle) - 1
    for start in range(0, len(view), INSPECT_CHUNK):
        chunk = bytes(view[start : start + INSPECT_CHUNK + overlap])
        at = chunk.find(needle)
        while 0 <= at < INSPECT_CHUNK:
            found.append(start + at)
            at = chunk.find(needle, at + 1)
    return found


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _reap_children(*_: object) -> None:
    """Reap exited clones, and say why one that did not exit by itself ended."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            why = (" (a syscall outside the jail's seccomp allow-list)"
                   if sig == signal.SIGSYS else "")
            if sig != signal.SIGKILL:  # the controller's own way to end a clone
                log.warning("clone process %d was killed by %s%s", pid,
                            signal.Signals(sig).name, why)


def _jail_paths(frozen: Frozen, load: LoadFunction | None) -> list[str]:
    """What a child's jail shows: the interpreter, usetl, the image, the mounted directories."""
    paths = [*_system_jail_paths(), *own_jail_paths(frozen)]
    if load is not None:
        paths += [os.path.realpath(d) for d in load.mounts.values()]
    return paths


def _system_jail_paths() -> list[str]:
    """What every jail shows: the host's libraries, the interpreter and usetl."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(usetl.__file__)))
    return [*jail.SYSTEM_PATHS, *jail.python_paths(), package]


def own_jail_paths(frozen: Frozen) -> list[str]:
    """What a template's jail shows of its own: its image and the directories and archives
    mounted in its guest (a snapshot records them, for the jail of the template it restores)."""
    paths = [str(frozen.usf.image.path)]
    for fs in frozen.usf.kernel.ns.mounts.values():
        if isinstance(fs, HostDirFS):
            paths.append(fs.root)
        elif isinstance(fs, ArchiveMount):
            paths.append(str(fs.archive.path))
    return paths


def become_function_template(clone: CloneProcess, load: LoadFunction, chan: Channel,
                             jailed: bool) -> None:
    """Run the load request in this clone, then freeze it as a template of its own."""
    usf = clone.usf
    try:
        for name, host_path in load.mounts.items():
            usf.mount(name, host_path)
    except UsfError as e:
        chan.send(Failed(ErrorInfo(SANDBOX_ERROR, str(e))))
        return
    t0 = time.perf_counter()
    result = usf.invoke(load.request, timeout=load.timeout)
    if not result.ok:
        chan.send(Failed(result.error))
        return
    warmup = None
    if load.warmup is not None:
        warmup = usf.call(load.warmup.event, load.warmup.context, load.timeout)
        if not warmup.ok:
            e = warmup.error
            chan.send(Failed(ErrorInfo(e.type, f"the warm-up invocation failed: {e.message}",
                                       e.traceback, e.kind)))
            return
    hooks = usf.invoke({"kind": abi.FREEZE})
    if not hooks.ok:
        e = hooks.error
        chan.send(Failed(ErrorInfo(e.type, f"a before-freeze hook failed: {e.message}",
                                   e.traceback, e.kind)))
        return
    usf.startup.ms = (time.perf_counter() - t0) * 1e3
    for mem in usf.vm.memory().values():
        mem.copy_to_new_file()
    frozen = Frozen.capture(usf)
    chan.send(ready(frozen, result, warmup))
    TemplateProcess(frozen, chan, jailed).serve()


def start_template(msg: StartTemplate) -> Frozen:
    return Frozen.capture(start_usf(ImageArchive.open(msg.image), msg.config))


def confine() -> None:
    """What a template process and its clones may not do, inherited by every fork.

    No new privileges through exec (they never exec), and no core dumps: a
    crashed monitor must not write guest memory to disk.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        log.warning("PR_SET_NO_NEW_PRIVS refused: %s", os.strerror(ctypes.get_errno()))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main(argv: list[str]) -> None:
    logging.basicConfig(level=os.environ.get("USETL_LOG", "WARNING"), stream=sys.stderr)
    confine()
    chan = Channel.from_fd(int(argv[1]), TEMPLATE_FIRST)
    try:
        msg, _ = chan.recv()
        if isinstance(msg, StartLoader):
            chan.send(Done())
            LoaderProcess(chan).serve()
            return
        frozen = start_template(msg)
    except (ChannelClosed, ProtocolError):
        return
    except Exception as e:
        log.debug("the template did not start", exc_info=True)
        chan.send(failure(e))
        return
    chan.send(ready(frozen))
    TemplateProcess(frozen, chan).serve()


if __name__ == "__main__":
    main(sys.argv)
