"""Templates and clones as the caller sees them (the controller side).

    tmpl = Template.start()                    # CPython started once, paused
    fn = tmpl.load_function(source=..., handler="main")   # imported once
    clone = fn.fork()                          # a new VM, copy-on-write
    result = clone.invoke({"x": 1})
    clone.rollback()                           # back to fn's exact state
    fn.save("snap"); Template.load("snap")     # survives a restart

Each template and each clone is its own process (see worker.py); these
objects hold the socket to it. Every process that runs tenant code is jailed
(usetl.jail) before its first guest instruction; jail=False turns that off.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, TypeVar

import usetl
from usetl import abi, hostmm
from usetl.etl.accounting import IoAccount
from usetl.etl.broker import Broker, BrokerError
from usetl.etl.egress import EgressPolicy
from usetl.image import default_image
from usetl.image.archive import ImageArchive
from usetl.invocation import InvocationResult, IoUsage
from usetl.jail import JailError, JailSpec, handshake
from usetl.jail.cgroup import Cgroups, Limits
from usetl.jail.environ import spawn_environment
from usetl.jail.ids import shared_range
from usetl.libos.children import ProcessSlots
from usetl.libos.handoff import HandOff, HandOffError
from usetl.usf import UsfConfig
from usetl.vm.memory import OWN_FILE

from .protocol import (
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
    LoadSnapshot,
    MonitorRan,
    ProtocolError,
    ReportWorkingSet,
    Rollback,
    RolledBack,
    RunInMonitor,
    SnapshotExport,
    StartLoader,
    StartTemplate,
    TemplateReady,
    WarmUp,
    WorkingSet,
)

M = TypeVar("M")

# Each jailed process's cgroup allows twice its guest memory (RAM and ETL regions: a
# page the guest touches where the template's memory file has a hole costs a page of
# that file and the process's private copy) plus this much for the monitor's own heap
# beyond what it shares with its template, and this many tasks (the process, the
# timeout timer's thread, and forks in flight in a template).
MONITOR_ALLOWANCE = 96 << 20
PIDS_PER_PROCESS = 32
# Cgroups a template holds for its next shells: one for the shell it makes next, and one
# sent with a Fork that its shell then serves (the cgroup that Fork brought is for a later one).
SHELL_CGROUPS = 2


class _Jails:
    """The controller's side of the jail: uids to hand out and cgroups to make."""

    def __init__(self) -> None:
        self.uids = shared_range()
        self._cgroups: Cgroups | None = None
        self._prepared = 0  # cgroups prepared so far (their names)

    @property
    def cgroups(self) -> Cgroups:
        if self._cgroups is None:
            self._cgroups = Cgroups()
        return self._cgroups

    def spec(self) -> JailSpec:
        uid = self.uids.take()
        return JailSpec(uid=uid, gid=uid)

    def prepare(self, guest_bytes: int) -> tuple[str, list[str], list[int]] | None:
        """A cgroup for a process yet to be made (a template's next shell), its name, its
        directories and its cgroup.procs files (Cgroups.prepare); None without cgroups."""
        if os.geteuid() != 0:
            return None
        self._prepared += 1
        name = f"s{os.getpid()}-{self._prepared}"
        try:
            paths, fds = self.cgroups.prepare(name, _limits(guest_bytes))
        except OSError as e:
            raise HyperForkError(f"cannot make a cgroup: {e}") from None
        return name, paths, fds

    def overlap_moves(self) -> threading.Thread | None:
        """Cgroups.overlap_moves, ahead of the moves of a process about to be made."""
        return self.cgroups.overlap_moves() if os.geteuid() == 0 else None

    def place(self, pid: int, guest_bytes: int) -> None:
        if os.geteuid() != 0:
            return  # no cgroups to make; the jail itself said so when it degraded
        try:
            self.cgroups.place(f"p{pid}", pid, _limits(guest_bytes))
        except ProcessLookupError:
            pass  # it has exited already; its first reply (or its absence) says why
        except OSError as e:
            raise HyperForkError(f"cannot put process {pid} in its cgroup: {e}") from None


def _limits(guest_bytes: int) -> Limits:
    return Limits(2 * guest_bytes + MONITOR_ALLOWANCE, PIDS_PER_PROCESS)


JAILS = _Jails()
# The egress broker of templates that are given none: started on the first jailed fork,
# stopped a while after no template or clone uses it (broker.IDLE_STOP_S), or with this process.
BROKER = Broker()


class Template:
    """A frozen, started USF that clones are forked from."""

    def __init__(self, chan: Channel, info: TemplateReady,
                 process: subprocess.Popen | None = None,
                 jailer: bool = False, jailed: bool = False,
                 egress: EgressPolicy | None = None, broker: Broker | None = None):
        self.chan = chan
        self.info = info
        self.pid = info.pid
        self.process = process
        # What a jailed child is attached to the broker with (from the process the controller
        # started, never from a jailed one).
        self.egress = egress or EgressPolicy((), False, 30.0)
        self.broker = broker or BROKER
        # A jailer is a template process the controller started (uid 0, in its own PID
        # namespace, running only the image's code): it jails each child it forks.
        self.jailer = jailer
        self.jailed = jailer or jailed  # its children are jailed (and so in cgroups)
        if self.jailed:
            self.broker.hold()
        self.closed = False
        # REAP's record-and-prefetch: the first clone reports the RAM pages its first request
        # wrote (Clone._record), sent to this template with the next Fork; clones forked from
        # then on copy them in one batch before their guest runs.
        self.recording = False
        self.learnt: list[tuple[int, int]] | None = None
        # Cgroups made for this template's next shells (worker.Shell), which move themselves
        # in when made: name -> directories. At most SHELL_CGROUPS at a time.
        self.shell_cgroups: dict[str, list[str]] = {}

    # -- making templates -----------------------------------------------------------

    @classmethod
    def start(
        cls,
        image: ImageArchive | str | os.PathLike | None = None,
        mem_mib: int = 256,
        config: UsfConfig | None = None,
        jail: bool = True,
        broker: Broker | None = None,
    ) -> Template:
        """Start CPython in a new USF and freeze it in the agent's wait: a base template.

        With jail=False no process it forks is jailed (to measure what the jail costs); a
        jailed one's network requests are carried out by `broker` (default: BROKER).
        """
        config = config or UsfConfig(mem_mib=mem_mib)
        if isinstance(image, ImageArchive):
            path = str(image.path)
        else:
            path = str(image if image is not None else default_image())
        return cls._spawn(StartTemplate(path, config), jail, broker)

    @classmethod
    def load(cls, directory: str | os.PathLike, jail: bool = True,
             broker: Broker | None = None) -> Template:
        """A template from a snapshot written by save(); its memory is mapped, not read.

        The snapshot loader (LOADER) forks the template process, or hands the load to the
        one it forked ahead (its spare, already in a cgroup of its own); it checks each
        file's checksum the first time it loads that file, and again whenever it has
        changed. The template process jails itself, as the function template saved was
        jailed, and its clones inherit its jail.
        """
        path = str(Path(directory).resolve())
        request = LoadSnapshot(path, JAILS.spec() if jail else None)
        shell = _first_shell_cgroup(path, request) if jail else None
        spare = LOADER.spare_cgroup(request, shell[3] if shell else None)
        # After its cgroups are made (a move in progress holds up making one), ahead of the
        # moves on this path: the template process's (unless the loader's spare is in its
        # cgroup already) and its first shell's.
        moves = JAILS.overlap_moves() if jail else None
        try:
            return cls._loaded(request, shell, spare, jail, broker)
        finally:
            if moves is not None:
                moves.join()

    @classmethod
    def _loaded(cls, request: LoadSnapshot, shell: tuple[str, list[str], list[int], int] | None,
                spare_cgroup: tuple[str, list[str], list[int], int] | None, jail: bool,
                broker: Broker | None) -> Template:
        """load() once the request is made, with the first shell's cgroup and the loader's
        next spare's if any."""
        try:
            chan, forked, spare = LOADER.load(request, shell[2] if shell else [], spare_cgroup)
        except HyperForkError:
            if shell is not None:
                JAILS.cgroups.discard(shell[1])
            raise
        finally:
            if shell is not None:
                _close_fds(shell[2])
        pid = forked.pid
        template = None
        try:
            if jail and (spare is None or not JAILS.cgroups.adopt(pid, spare)):
                JAILS.place(pid, forked.guest_bytes)  # while it jails itself
            if shell is not None and shell[3] != forked.guest_bytes:
                raise HyperForkError("the snapshot changed while it was loaded; load it again")
            reply = _first_reply(chan, TemplateReady)
            reply.pid = pid
            template = cls(chan, reply, jailed=jail, egress=reply.egress, broker=broker)
        except HyperForkError:
            chan.close()
            _kill(pid)
            raise
        finally:
            if shell is not None and template is None:
                JAILS.cgroups.discard(shell[1])
        if shell is not None:
            template.shell_cgroups[shell[0]] = shell[1]
        return template

    @staticmethod
    def prepare_load() -> None:
        """Start the snapshot loader ahead of a first load() (which would wait for it)."""
        LOADER.start()

    @classmethod
    def _spawn(cls, first: StartTemplate, jail: bool, broker: Broker | None) -> Template:
        chan, process = _start_worker()
        try:
            reply = chan.request(first, TemplateReady)
            if jail:
                JAILS.place(process.pid, reply.guest_bytes)
        except HyperForkError:
            chan.close()
            process.kill()
            process.wait()
            raise
        return cls(chan, reply, process, jailer=jail, egress=reply.egress, broker=broker)

    def load_function(
        self,
        request: dict,
        mounts: dict[str, str] | None = None,
        timeout: float | None = 120.0,
        warmup: WarmUp | None = None,
    ) -> Template:
        """A function template: a clone that ran `request` (the agent's load) and froze again.

        `mounts` maps names to host directories shown read-only at /name (code, modules).
        With `warmup`, it also called the handler once on that event first, and froze after.
        """
        chan, pid, instance = self._fork_channel(
            Fork(LoadFunction(request, mounts or {}, timeout, warmup)))
        if instance is not None:
            self.broker.forget(instance)  # its load's I/O is not an invocation's
        info = _first_reply(chan, TemplateReady)
        info.pid = pid
        return Template(chan, info, jailed=self.jailed, egress=self.egress, broker=self.broker)

    def fork(self, warm: bool = True) -> Clone:
        """A new clone with its own identity, ready for one invocation at a time.

        `warm` runs a no-op request and a rollback in it first, so that its
        first real request does not pay for first-touch page faults.
        """
        t0 = time.perf_counter()
        learnt, self.learnt = self.learnt, None
        chan, pid, instance = self._fork_channel(Fork(warm=warm, working_set=learnt))
        info = _first_reply(chan, CloneReady)
        info.pid = pid
        billing = (self.broker, instance) if instance is not None else None
        recorder = None if self.recording else self
        self.recording = True
        return Clone(chan, info, (time.perf_counter() - t0) * 1e3, billing, recorder)

    def _fork_channel(self, fork: Fork) -> tuple[Channel, int, str | None]:
        """A new child's channel, its pid (as the kernel told it, in our PID namespace) and,
        for a jailed child, its id at the egress broker, which it gets a connection to.

        A jailer's child jails itself meanwhile; the cgroup is made while it goes on.
        """
        self._check()
        mine, theirs = Channel.pair()
        handshake.expect(mine.sock)
        if self.jailer:
            fork.jail = JAILS.spec()
        passed = [theirs]
        instance = None
        if self.jailed:
            try:
                egress, instance = self.broker.attach(self.egress)
            except BrokerError as e:
                mine.close()
                theirs.close()
                raise HyperForkError(f"no egress for the new process: {e.reason}") from None
            passed.append(egress)
        cgroup_fds: list[int] = []
        try:
            cgroup_fds = self._shell_cgroup(fork)
            forked = self.chan.request(fork, Forked,
                                       fds=(*(p.fileno() for p in passed), *cgroup_fds))
        finally:
            for sock in passed:
                sock.close()
            _close_fds(cgroup_fds)
        try:
            pid = handshake.receive(mine.sock)
            if self.jailed:
                self._place(pid, forked.cgroup)
        except (OSError, JailError, HyperForkError) as e:
            mine.close()
            raise HyperForkError(f"the new process did not start: {e}") from None
        return mine, pid, instance

    def _shell_cgroup(self, fork: Fork) -> list[int]:
        """For a jailed template's clone: a cgroup for one of its next shells, if it holds
        fewer than SHELL_CGROUPS; the fds of its cgroup.procs files, sent with the Fork."""
        if not self.jailed or self.jailer or fork.load is not None \
                or len(self.shell_cgroups) >= SHELL_CGROUPS:
            return []
        prepared = JAILS.prepare(self.info.guest_bytes)
        if prepared is None:
            return []
        fork.cgroup, paths, fds = prepared
        fork.cgroup_files = len(fds)
        self.shell_cgroups[fork.cgroup] = paths
        return fds

    def _place(self, pid: int, cgroup: str | None) -> None:
        """The new process in its cgroup: the prepared one it moved itself into (a shell),
        else a new one."""
        paths = self.shell_cgroups.pop(cgroup, None) if cgroup is not None else None
        if paths is None or not JAILS.cgroups.adopt(pid, paths):
            JAILS.place(pid, self.info.guest_bytes)

    # -- the rest -------------------------------------------------------------------

    def memory_bytes(self) -> int:
        self._check()
        return self.chan.request(Info(), TemplateReady).memory_bytes

    def memory_digests(self) -> dict[str, str]:
        """sha256 of each guest memory (RAM, regions) as frozen."""
        self._check()
        return self.chan.request(InspectTemplate(), Digests).sha256

    def save(self, directory: str | os.PathLike) -> None:
        """Write a snapshot: the template process sends its memory files, written here, and
        its working set (what a clone's first request wrote), which the clones of the
        template it restores prefetch; a template none of whose clones has recorded one
        records it first, in a clone it warms."""
        from .snapshot import write

        self._check()
        if not self.recording:
            self._record_working_set()
        learnt, self.learnt = self.learnt, None  # the template process keeps it from now
        self.chan.send(ExportSnapshot(working_set=learnt))
        exported, fds = self.chan.recv()
        try:
            if isinstance(exported, Failed):
                raise HyperForkError(f"{exported.error.type}: {exported.error.message}",
                                     exported.error)
            if not isinstance(exported, SnapshotExport):
                raise ProtocolError(f"expected SnapshotExport, got {type(exported).__name__}")
            try:
                write(exported, fds, directory)
            except OSError as e:
                raise HyperForkError(f"cannot save the template in {directory}: {e}") from None
        finally:
            for fd in fds:
                os.close(fd)

    def _record_working_set(self) -> None:
        """What a warmed clone (the agent's request path run once) wrote: self.learnt. The
        next clone still records what its first request writes, which replaces it here."""
        with self.fork(warm=True) as recorder:
            recorder.recorder = None  # reported here, not after a first request
            try:
                self.learnt = recorder.chan.request(ReportWorkingSet(), WorkingSet).ranges
            finally:
                self.recording = False

    def _check(self) -> None:
        if self.closed:
            raise HyperForkError("this template is closed")

    def close(self) -> None:
        """End the template process; clones already made keep running."""
        if self.closed:
            return
        self.closed = True
        try:
            self.chan.request(Close(), Done)
        except HyperForkError:
            _kill(self.pid)
        self.chan.close()
        if self.process is not None:
            self.process.wait()
        for paths in self.shell_cgroups.values():
            JAILS.cgroups.discard(paths)  # removed once its shell, if any, has ended
        self.shell_cgroups.clear()
        if self.jailed:
            self.broker.release()

    def __enter__(self) -> Template:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _first_shell_cgroup(directory: str,
                        request: LoadSnapshot) -> tuple[str, list[str], list[int], int] | None:
    """A cgroup for a restored template's first shell (made at once, it moves itself in, off
    the first Fork's path): its name, directories and cgroup.procs files, and the guest memory
    it was made for, as the snapshot's state file says; put in `request`. None without
    cgroups, or if the state file cannot be read (the loader then says why)."""
    from .snapshot import SnapshotError, guest_bytes

    if os.geteuid() != 0:
        return None  # no cgroups to make (JAILS.prepare)
    try:
        size = guest_bytes(directory)
    except (SnapshotError, OSError, KeyError, TypeError, ValueError):
        return None
    cgroup = _prepared_cgroup(size)
    if cgroup is not None:
        request.shell_cgroup, request.shell_cgroup_files = cgroup[0], len(cgroup[2])
    return cgroup


def _prepared_cgroup(guest_bytes: int) -> tuple[str, list[str], list[int], int] | None:
    """A cgroup a process moves itself into (JAILS.prepare): its name, directories and
    cgroup.procs files, and the guest memory its limits are for; None without cgroups."""
    prepared = JAILS.prepare(guest_bytes)
    return None if prepared is None else (*prepared, guest_bytes)


def _start_worker() -> tuple[Channel, subprocess.Popen]:
    """A new worker process (usetl.hyperfork.worker) waiting for its first message."""
    mine, theirs = Channel.pair()
    src = os.path.dirname(os.path.dirname(os.path.abspath(usetl.__file__)))
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    env = spawn_environment({"PYTHONPATH": path})
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", "usetl.hyperfork.worker", str(theirs.fileno())],
        pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL,
    )
    theirs.close()
    return mine, process


class _Loader:
    """The controller's snapshot loader process (worker.LoaderProcess): started on the first
    load, and again if it has gone; one load at a time. Each jailed load brings a cgroup
    for the loader's next spare template process, made for the guest memory of the snapshot
    loaded (the spare moves itself in); the one before is the load's template's if the
    loader's spare in it became that template process, else it is discarded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chan: Channel | None = None
        self._process: subprocess.Popen | None = None
        # The cgroup sent for the loader's spare: name, directories, the guest memory its
        # limits are for.
        self._spare: tuple[str, list[str], int] | None = None

    def load(self, request: LoadSnapshot, cgroup_fds: list[int],
             sent: tuple[str, list[str], list[int], int] | None,
             ) -> tuple[Channel, Forked, list[str] | None]:
        """The new template process's channel, and its pid (as the kernel told it) and guest
        memory size; it sends TemplateReady next. `cgroup_fds`: the shell's that `request`
        counts; `sent`: the next spare's cgroup (spare_cgroup), whose files this closes. The
        third: the directories of the prepared cgroup it is in, if it is the loader's spare
        (to check, Cgroups.adopt)."""
        mine, theirs = Channel.pair()
        handshake.expect(mine.sock)
        try:
            with self._lock:
                try:
                    chan = self._started()
                except HyperForkError:
                    if sent is not None:
                        _close_fds(sent[2])
                        JAILS.cgroups.discard(sent[1])
                    raise
                held = None
                if request.jail is not None:  # this load takes the spare (LoaderProcess)
                    held, self._spare = self._spare, sent and (sent[0], sent[1], sent[3])
                try:
                    forked = chan.request(request, Forked, fds=(
                        theirs.fileno(), *cgroup_fds, *(sent[2] if sent else ())))
                except ChannelClosed:
                    self._stop()
                    raise
                except HyperForkError:
                    self._discard(held)
                    raise
                finally:
                    if sent is not None:
                        _close_fds(sent[2])
            spare = self._spare_of(held, forked)
            forked.pid = handshake.receive(mine.sock)
        except (OSError, JailError, HyperForkError) as e:
            mine.close()
            if isinstance(e, HyperForkError):
                raise
            raise HyperForkError(f"the template process did not start: {e}") from None
        finally:
            theirs.close()
        return mine, forked, spare

    @staticmethod
    def spare_cgroup(request: LoadSnapshot,
                     guest_bytes: int | None) -> tuple[str, list[str], list[int], int] | None:
        """A cgroup for the loader's next spare, put in `request` (a jailed one's, with
        cgroups): its name, directories, cgroup.procs files and the guest memory it is for
        (as the snapshot's state file says; None: no cgroups, or it cannot be read)."""
        if request.jail is None or guest_bytes is None:
            return None
        cgroup = _prepared_cgroup(guest_bytes)
        if cgroup is not None:
            request.spare_cgroup, request.spare_cgroup_files = cgroup[0], len(cgroup[2])
        return cgroup

    def _spare_of(self, held: tuple[str, list[str], int] | None,
                  forked: Forked) -> list[str] | None:
        """The held spare cgroup's directories if the load's template is the spare in it,
        made for its guest memory; else it is discarded and None."""
        if held is not None and forked.cgroup == held[0] and forked.guest_bytes == held[2]:
            return held[1]
        self._discard(held)
        return None

    @staticmethod
    def _discard(held: tuple[str, list[str], int] | None) -> None:
        if held is not None:
            JAILS.cgroups.discard(held[1])

    def _started(self) -> Channel:
        if self._chan is None:
            chan, process = _start_worker()
            try:
                chan.request(StartLoader(), Done)
            except HyperForkError:
                chan.close()
                process.kill()
                process.wait()
                raise
            self._chan, self._process = chan, process
        return self._chan

    def start(self) -> None:
        """Start the loader process now if it is not running (0.7 s), not on the first load."""
        with self._lock:
            self._started()

    def stop(self) -> None:
        """End the loader process; the next load starts another (templates it made stay)."""
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        if self._chan is not None and self._process is not None:
            self._chan.close()
            self._process.kill()
            self._process.wait()
        self._chan = self._process = None
        self._discard(self._spare)
        self._spare = None


LOADER = _Loader()


def _first_reply(chan: Channel, kind: type[M]) -> M:
    try:
        return chan.reply(kind)
    except HyperForkError:
        chan.close()
        raise


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Clone:
    """One clone VM (a process): invoke, roll back, close."""

    def __init__(self, chan: Channel, info: CloneReady, fork_ms: float,
                 billing: tuple[Broker, str] | None = None, recorder: Template | None = None):
        self.chan = chan
        # The template this clone reports its working set to after its first request.
        self.recorder = recorder
        # A jailed clone's I/O is what the egress broker carried out for it (its monitor's
        # own figures are not believed); None: an unjailed one, which measures its own.
        self.billing = billing
        if billing is not None:
            billing[0].hold()
        self.pid = info.pid
        self.instance = info.instance
        self.timings = info.timings
        self.warm_ms = info.warm_ms
        self.fork_ms = fork_ms
        self.closed = False

    def request(self, request: dict, timeout: float | None = None) -> InvocationResult:
        """One agent request; a guest fault or timeout ends the clone's guest (result.error)."""
        if self.closed:
            raise HyperForkError("this clone is closed")
        return self._billed(self.chan.request(Invoke(request, timeout), Invoked))

    def invoke(self, event: Any, context: dict | None = None, timeout: float | None = None,
               slots: ProcessSlots | None = None, rollback: bool = False) -> InvocationResult:
        """handler(event, context) of the function the template loaded; its children take
        the function's `slots` where given. With `rollback`, the rollback is sent with the
        call (the clone starts it as soon as it has replied): rolled_back() reads how it
        went."""
        if self.closed:
            raise HyperForkError("this clone is closed")
        if rollback and self.recorder is not None:  # its report comes before the rollback
            return self._invoke_then_roll_back(event, context, timeout, slots)
        call = Call(event, context or {}, timeout, slots=slots is not None)
        self.chan.send(call, fds=slots.fds if slots else (),
                       then=Rollback() if rollback else None)
        return self._billed(self.chan.reply(Invoked))

    async def invoke_async(self, event: Any, context: dict | None = None,
                           timeout: float | None = None, slots: ProcessSlots | None = None,
                           rollback: bool = False) -> InvocationResult:
        """invoke() awaited on an event loop (the API's): no thread waits for the reply.
        With `rollback`, the rollback is sent with the call: the clone starts it as soon as
        it has replied, and rolled_back_async() reads how it went. Billing that asks the
        egress broker, and a recorder's report after its first request, are round trips
        of their own: they run on a thread."""
        if self.closed:
            raise HyperForkError("this clone is closed")
        if rollback and self.recorder is not None:  # its report comes before the rollback
            return await asyncio.to_thread(self._invoke_then_roll_back, event, context,
                                           timeout, slots)
        call = Call(event, context or {}, timeout, slots=slots is not None)
        self.chan.send(call, fds=slots.fds if slots else (),
                       then=Rollback() if rollback else None)
        invoked = await self.chan.reply_async(Invoked)
        if self.recorder is not None or (
                self.billing is not None and self.billing[0].account_moved(self.billing[1])):
            return await asyncio.to_thread(self._billed, invoked)
        return self._billed(invoked)

    def _invoke_then_roll_back(self, event: Any, context: dict | None,
                               timeout: float | None,
                               slots: ProcessSlots | None) -> InvocationResult:
        result = self.invoke(event, context, timeout, slots)
        self.chan.send(Rollback())
        return result

    def rolled_back(self) -> RolledBack:
        """The rollback that invoke(rollback=True) sent."""
        return self.chan.reply(RolledBack)

    async def rolled_back_async(self) -> RolledBack:
        """The rollback that invoke_async(rollback=True) sent, awaited."""
        return await self.chan.reply_async(RolledBack)

    def _billed(self, invoked: Invoked) -> InvocationResult:
        """A jailed clone's I/O as the broker counted it (ETL requests, connects), plus what
        the broker cannot see, as the monitor counted it: the bytes and host time of
        connected sockets, and copied_bytes (copies within the clone's own regions)."""
        result = invoked.result
        if self.billing is not None:
            broker, instance = self.billing
            try:
                account = broker.take_account(instance)
            except BrokerError as e:
                raise HyperForkError(f"the clone's I/O cannot be billed: {e.reason}") from None
            sockets = invoked.sockets or IoUsage()
            account.add(IoAccount(bytes_in=max(sockets.bytes_in, 0),
                                  bytes_out=max(sockets.bytes_out, 0),
                                  host_cpu_s=max(sockets.host_cpu_s, 0.0),
                                  wall_s=max(sockets.wall_s, 0.0)))
            account.copied_bytes = result.io.copied_bytes
            result.io = IoUsage(**account.as_dict())
        self._record(result)
        return result

    def _record(self, result: InvocationResult) -> None:
        """After a recorder's first request: what it wrote, for its template's next Fork."""
        template, self.recorder = self.recorder, None
        if template is None:
            return
        try:
            if result.error is None:
                template.learnt = self.chan.request(ReportWorkingSet(), WorkingSet).ranges
                return
        except HyperForkError:  # the clone went away: the result it gave stands
            pass
        template.recording = False  # another clone records instead

    def call_stage(self, event: Any, context: dict, timeout: float | None,
                   files: HandOff | None, keep_files: bool,
                   slots: ProcessSlots | None = None) -> tuple[InvocationResult,
                                                               HandOff | None]:
        """invoke() as a pipeline stage: `files` (the previous stage's) are shown in its host
        region; with `keep_files`, the files its guest wrote come back, sealed."""
        if self.closed:
            raise HyperForkError("this clone is closed")
        call = Call(event, context, timeout, files.files if files else None, keep_files,
                    slots=slots is not None)
        fds = ((files.fd,) if files else ()) + (slots.fds if slots else ())
        self.chan.send(call, fds=fds)
        invoked, fds = self.chan.reply_with_fds(Invoked)
        try:
            result = self._billed(invoked)
        except HyperForkError:
            _close_fds(fds)
            raise
        if invoked.files is None or len(fds) != 1:
            _close_fds(fds)
            if keep_files and result.error is None:
                raise ProtocolError("the clone kept no files")
            return result, None
        try:
            return result, HandOff.sealed(fds[0], invoked.files)
        except HandOffError as e:
            raise HyperForkError(str(e)) from None

    def run_code(self, code: str, timeout: float | None = None) -> InvocationResult:
        return self.request({"kind": abi.EXEC, "code": code}, timeout=timeout)

    def rollback(self) -> RolledBack:
        """Reset to the template's exact state; says how many pages it restored, how fast.

        The guest does not run: it is byte-identical to the template until
        the next request, which gives it a fresh identity (reseeded RNGs,
        after-clone hooks) before the request itself.
        """
        if self.closed:
            raise HyperForkError("this clone is closed")
        return self.chan.request(Rollback(), RolledBack)

    def memory_bytes(self) -> int:
        """What the clone's process holds beyond what it shares with its template: its
        anonymous memory (copy-on-write copies of guest RAM, the monitor's heap) and its ETL
        regions' files of its own; raises OSError once the process is gone."""
        return hostmm.anonymous_bytes(self.pid) + hostmm.memfd_bytes(self.pid, OWN_FILE)

    def run_in_monitor(self, code: str) -> Any:
        """Tests of the jail only (USETL_TEST_HOOKS=1 when the template started): run `code`
        in the clone's monitor process; its variable `result` comes back."""
        if self.closed:
            raise HyperForkError("this clone is closed")
        return self.chan.request(RunInMonitor(code), MonitorRan).result

    def inspect(self, needle: bytes | None = None) -> Inspected:
        """Digests of each guest memory, and the guest addresses where `needle` occurs."""
        if self.closed:
            raise HyperForkError("this clone is closed")
        return self.chan.request(InspectClone(needle), Inspected)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.recorder is not None:  # closed before its first request
            self.recorder.recording = False
        _kill(self.pid)  # a clone has nothing to tidy up on the way out: no Close to ask
        self.chan.close()
        if self.billing is not None:
            broker, instance = self.billing
            broker.forget(instance)
            broker.release()

    def kill(self) -> None:
        """End the clone's process abruptly (as a crash would)."""
        _kill(self.pid)

    def __enter__(self) -> Clone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
