"""A cgroup per jailed process, with a memory and a pids limit.

Made by the controller (which is outside every jail and is root) for a process it has
just been told about, before that process goes on: no jailed process may write to a
cgroup, so none can raise its own limits. cgroup v2 where it has the memory and pids
controllers, else the v1 hierarchies of each; created under the controller's own
cgroups, so that usetl nests inside whatever runs it, in a directory of the controller
process's own (several run at once: a server, its tests, a cluster's workers), so that one
starting removes only what exited controllers left.
"""

from __future__ import annotations

import errno
import os
import select
import threading
from dataclasses import dataclass

from .spec import degrade

CGROUP_ROOT = "/sys/fs/cgroup"
PARENT = "usetl"  # each controller's cgroups under PARENT/<its pid>


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    pids: int


def _own_cgroups() -> dict[str, str]:
    """controller ("" for v2) -> this process's cgroup path in it."""
    found: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                found[name] = path
    return found


def _v2_root() -> str | None:
    for candidate in (CGROUP_ROOT, CGROUP_ROOT + "/unified"):
        try:
            with open(candidate + "/cgroup.controllers") as f:
                available = f.read().split()
        except OSError:
            continue
        if {"memory", "pids"} <= set(available):
            return candidate
    return None


class Cgroups:
    """Where this host's cgroups for jailed processes go (found once per controller)."""

    def __init__(self) -> None:
        own = _own_cgroups()
        self.dirs: dict[str, str] = {}  # limit kind -> parent directory
        root = _v2_root()
        if root is not None:
            self.version = 2
            parent = os.path.join(root + own.get("", "/"), PARENT, str(os.getpid()))
            self.dirs = {"memory": parent, "pids": parent}
        else:
            self.version = 1
            for name in ("memory", "pids"):
                if name in own and os.path.isdir(f"{CGROUP_ROOT}/{name}"):
                    self.dirs[name] = (f"{CGROUP_ROOT}/{name}{own[name]}/{PARENT}/"
                                       f"{os.getpid()}").replace("//", "/")
        for kind in ("memory", "pids"):
            if kind not in self.dirs:
                degrade(f"the {kind} cgroup controller", "not mounted")
        # This process's own cgroup.procs in one of those hierarchies (overlap_moves).
        self._own_procs = next((os.path.join(os.path.dirname(os.path.dirname(parent)),
                                             "cgroup.procs") for parent in self.dirs.values()),
                               None)
        self._ready: set[str] = set()
        # Cgroups made, with a pidfd of their process: removed once it has exited.
        self._made: list[tuple[int, list[str]]] = []
        # Cgroups prepared for a process that moves itself in (prepare), not yet adopted; and
        # those given up (discard): removed once nothing is in them.
        self._prepared: list[list[str]] = []
        self._dropped: list[list[str]] = []
        self._lock = threading.Lock()  # forks of different templates place concurrently

    def overlap_moves(self) -> threading.Thread | None:
        """Start moving this process into the cgroup it is in (which changes nothing) in a
        thread, and return it, to join; None without cgroups. Every move waits for an RCU
        grace period (the kernel's cgroup threadgroup lock: 6-30 ms on this cgroup v1 host)
        unless one has just passed, so moves made while this one waits, or just after it,
        wait only for what is left of its grace period: call it ahead of moves on a latency
        path. Its failure costs only that time (the moves that follow say what is wrong)."""
        if self._own_procs is None:
            return None
        thread = threading.Thread(target=_move_self, args=(self._own_procs,),
                                  name="cgroup-grace-period", daemon=True)
        thread.start()
        return thread

    def _parent(self, kind: str) -> str:
        parent = self.dirs[kind]
        if parent not in self._ready:
            os.makedirs(parent, exist_ok=True)
            _remove_left(os.path.dirname(parent))
            if self.version == 2:  # each level down to the clones' passes both controllers on
                for level in (os.path.dirname(os.path.dirname(parent)),
                              os.path.dirname(parent), parent):
                    _write(level + "/cgroup.subtree_control", "+memory +pids")
            self._ready.add(parent)
        return parent

    def place(self, name: str, pid: int, limits: Limits) -> list[str]:
        """A cgroup `name` with `limits`, holding `pid`; returns its directories."""
        with self._lock:
            self._remove_exited()
            return self._place(name, pid, limits)

    def prepare(self, name: str, limits: Limits) -> tuple[list[str], list[int]]:
        """A cgroup `name` with `limits` and no process yet, and its cgroup.procs files opened
        for writing: a process given them moves itself in (it writes 0), with this process's
        rights (the kernel checks those the file was opened with), before it is known here.
        A clone made ahead does this, so that its move leaves the path of the Fork that
        claims it (a move waits for an RCU grace period per hierarchy: ~6 ms here)."""
        with self._lock:
            self._remove_exited()
            made = self._make(name, limits)
            fds = []
            try:
                for path in made:
                    fds.append(os.open(f"{path}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
            except OSError:
                for fd in fds:
                    os.close(fd)
                remove(made)
                raise
            self._prepared.append(made)
            return made, fds

    def adopt(self, pid: int, paths: list[str]) -> bool:
        """Take prepared cgroup `paths` as `pid`'s if that process has moved itself into
        them (its word is not taken: each cgroup's member list is read); else discard them."""
        with self._lock:
            self._prepared.remove(paths)
            try:
                moved = all(str(pid) in _read(f"{path}/cgroup.procs").split() for path in paths)
                if moved:
                    self._made.append((os.pidfd_open(pid), paths))
                    return True
            except (ProcessLookupError, FileNotFoundError):  # gone, or removed meanwhile
                pass  # (by another controller's start under the same parent, for one)
            self._dropped.append(paths)
            return False

    def discard(self, paths: list[str]) -> None:
        """Give up prepared cgroup `paths`: removed once no process is in them."""
        with self._lock:
            self._prepared.remove(paths)
            self._dropped.append(paths)
            self._remove_exited()

    def _place(self, name: str, pid: int, limits: Limits) -> list[str]:
        made = self._make(name, limits)
        try:
            for path in made:
                _write(f"{path}/cgroup.procs", str(pid))
            self._made.append((os.pidfd_open(pid), made))
        except ProcessLookupError:
            remove(made)  # it has exited already
            raise
        return made

    def _make(self, name: str, limits: Limits) -> list[str]:
        made = []
        files = {
            "memory": ("memory.max", limits.memory_bytes) if self.version == 2
            else ("memory.limit_in_bytes", limits.memory_bytes),
            "pids": ("pids.max", limits.pids),
        }
        for kind, (limit_file, value) in files.items():
            if kind not in self.dirs:
                continue
            path = os.path.join(self._parent(kind), name)
            if path not in made:
                os.makedirs(path, exist_ok=True)
                made.append(path)
            _write(f"{path}/{limit_file}", str(value))
        return made

    def _remove_exited(self) -> None:
        self._dropped = [paths for paths in self._dropped if not remove(paths)]
        if not self._made:
            return
        poller = select.poll()
        for fd, _ in self._made:
            poller.register(fd, select.POLLIN)
        exited = {fd for fd, _ in poller.poll(0)}
        for fd, paths in [m for m in self._made if m[0] in exited]:
            # An exited process leaves its cgroup at once in v2, soon after in v1.
            if remove(paths):
                os.close(fd)
                self._made.remove((fd, paths))


def _remove_left(top: str) -> None:
    """Remove the empty cgroups exited controllers left under `top` (each in a directory
    named after its pid), and those of the layout before (directly under `top`)."""
    for name in os.listdir(top):
        path = os.path.join(top, name)
        if not os.path.isdir(path) or (name.isdigit() and _alive(int(name))):
            continue
        if name.isdigit():
            remove([os.path.join(path, n) for n in os.listdir(path)
                    if os.path.isdir(os.path.join(path, n))])
        remove([path])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def remove(paths: list[str]) -> bool:
    """Remove cgroups whose processes have exited; False if one still has members."""
    for path in paths:
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno == errno.EBUSY:
                return False
            raise
    return True


def _move_self(procs: str) -> None:
    try:
        _write(procs, str(os.getpid()))
    except OSError:
        pass  # see Cgroups.overlap_moves


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
