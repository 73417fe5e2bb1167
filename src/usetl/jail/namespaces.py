"""New mount, IPC, UTS and network namespaces with a minimal root; the PID namespace.

The root is a tmpfs holding only mount points: each read-only path at the same path as
on the host (so the interpreter, the image and the mounted code keep their names; one
that only its owner may read is an idmapped mount showing root's files as the jail
uid's), the
devices as nodes of the tmpfs, and a /proc of the jail's PID namespace that shows only
processes of the same uid (hidepid=invisible). pivot_root then leaves the host's tree.

A root can also be made once and entered by many jails (PreparedRoots: a restored
template's, per set of paths): its mount namespace, held by an fd, has the paths others
may read bound in and mount points for the rest; each jail enters a copy of it and mounts
only what is its own (its uid's idmapped mounts, device nodes and /proc). That costs no
unmount, which waits for an RCU grace period, and no bind mount per path.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import stat
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from usetl.libos.sharedtmp import JAIL_DIR

from .spec import JailError

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
CLONE_NEWUSER = 0x10000000
PR_SET_PDEATHSIG = 1
CLONE_VM = 0x00000100
HOLDER_STACK = 64 << 10  # a user namespace's holder (_mapping_userns) runs only pause()
SYS_PIVOT_ROOT = 155
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_IDMAP = 0x100000

# Where a new root is assembled, in the process's own mount namespace (so each jail
# has its own tmpfs here; the empty directory is all the host keeps of it).
STAGING = "/run/usetl-jail"
ROOT_TMPFS = "size=1m,mode=755"
# The jail's own writable tmpfs, for its invocation trees' /tmp: charged to its cgroup.
SHARED_TMP_OPTIONS = "mode=700,uid={uid},gid={gid}"
# A jail's own pseudo-terminals, at most 64 at once (the host's in all: kernel.pty.max).
PTS_OPTIONS = "newinstance,ptmxmode=0666,mode=0600,max=64"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.clone.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        raise JailError(f"{what}: {os.strerror(ctypes.get_errno())}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    _check(_libc.mount(source.encode() if source else None, target.encode(),
                       fstype.encode() if fstype else None, ctypes.c_ulong(flags),
                       data.encode() if data else None), f"mount {target}")


def unshare() -> None:
    flags = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET
    _check(_libc.unshare(flags), "unshare (mount, ipc, uts, network namespaces)")


def set_hostname(name: str) -> None:
    _check(_libc.sethostname(name.encode(), len(name)), "sethostname")


def _covered(path: str, paths: list[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in paths)


class _Owner:
    """A user namespace mapping uid and gid 0 to the jail's, made on first use: an idmapped
    mount through it shows root's files as the jail uid's own (so a 0700 directory the
    platform or a test made for a function reads), while the host's files stay as they are."""

    def __init__(self, uid: int, gid: int):
        self.uid, self.gid = uid, gid
        self.fd: int | None = None

    def userns(self) -> int:
        if self.fd is None:
            self.fd = _mapping_userns(self.uid, self.gid)
        return self.fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


def _mapping_userns(uid: int, gid: int) -> int:
    """A user namespace mapping 0 to uid and gid, held by the fd returned.

    Made by a child that shares this process's memory (CLONE_VM) and runs only libc's
    pause() on a stack of its own, killed once the namespace is held: no page table is
    copied, where a fork of this Python process copied them all (0.25 against 8-20 ms in
    the snapshot loader, once per restore)."""
    stack = ctypes.create_string_buffer(HOLDER_STACK)
    top = ctypes.c_void_p(ctypes.addressof(stack) + HOLDER_STACK - 64)  # 16-byte aligned
    pid = _libc.clone(ctypes.cast(_libc.pause, ctypes.c_void_p), top,
                      CLONE_VM | CLONE_NEWUSER | signal.SIGCHLD, None)
    if pid < 0:
        raise JailError("cannot make a user namespace for an idmapped mount: "
                        f"{os.strerror(ctypes.get_errno())}")
    try:
        for name, inner in (("uid_map", uid), ("gid_map", gid)):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(f"0 {inner} 1")
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.kill(pid, signal.SIGKILL)
        _reap(pid)  # before its stack goes


@contextmanager
def _namespace_holder(setup: Callable[[], bytes]) -> Iterator[tuple[int, bytes]]:
    """A child process that runs `setup` (which makes its namespaces) and then waits, so
    that the caller can open /proc/PID/ns/* while it lives: yields its pid and what `setup`
    returned, or b"!" and the error (b"" if it died); reaps it at the end."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(ready_r)
            os.close(done_w)
            try:
                os.write(ready_w, setup())
                status = 0
            except (OSError, JailError) as e:
                os.write(ready_w, b"!" + str(e).encode())
            os.read(done_r, 1)  # until the parent holds the namespace
        finally:
            os._exit(status)
    os.close(ready_w)
    os.close(done_r)
    try:
        yield pid, os.read(ready_r, 1 << 16)
    finally:
        os.close(ready_r)
        os.close(done_w)
        _reap(pid)


def _bind_idmapped(source: str, target: str, userns: int) -> None:
    tree = _idmapped_tree(source, userns)
    try:
        _move_tree(tree, target)
    finally:
        os.close(tree)


def _idmapped_tree(source: str, userns: int) -> int:
    """A detached read-only mount of `source` showing root's files as userns's uid 0's."""
    tree = _libc.syscall(SYS_OPEN_TREE, AT_FDCWD, source.encode(),
                         OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)
    if tree < 0:
        raise JailError(f"open_tree {source}: {os.strerror(ctypes.get_errno())}")
    try:
        attr = struct.pack("QQQQ", MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID
                           | MOUNT_ATTR_NODEV, 0, 0, userns)
        _check(_libc.syscall(SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH, attr, len(attr)),
               f"an idmapped mount of {source}")
    except JailError:
        os.close(tree)
        raise
    return tree


def _move_tree(tree: int, target: str) -> None:
    _check(_libc.syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, target.encode(),
                         MOVE_MOUNT_F_EMPTY_PATH), f"move_mount to {target}")


def _show(root: str, path: str, owner: _Owner | None) -> bool:
    """Make host `path` appear read-only at the same path under `root`; without an owner,
    one that only its owner may read gets only its mount point (False)."""
    target = root + path
    if os.path.islink(path):
        # /lib -> usr/lib: the link, not a second copy of its target.
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.symlink(os.readlink(path), target)
        return True
    source = os.path.realpath(path)
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    if not _readable_by_others(source):
        if owner is None:
            return False
        _bind_idmapped(source, target, owner.userns())
        return True
    _mount(source, target, None, MS_BIND)
    _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    return True


def _readable_by_others(path: str) -> bool:
    """Whether the jail's uid, which owns nothing outside the jail, may read `path`."""
    mode = os.stat(path).st_mode
    need = 0o005 if stat.S_ISDIR(mode) else 0o004
    return mode & need == need


def _device_number(path: str) -> int:
    st = os.stat(path)
    if not stat.S_ISCHR(st.st_mode):
        raise JailError(f"{path} is not a character device")
    return st.st_rdev


def _make_device(root: str, path: str, rdev: int, uid: int, gid: int) -> None:
    """A node of the host's character device `path` (number `rdev`) in the root, owned by
    the jail's uid (as Firecracker's jailer does for /dev/kvm, whose host node is root's)."""
    target = root + path
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.mknod(target, stat.S_IFCHR | 0o600, rdev)
    os.chown(target, uid, gid)


def _mount_ptys(dev: str) -> None:
    """A devpts instance of the jail's own at dev/pts, dev/ptmx its multiplexer: the
    monitor's pseudo-terminals (libos/pty.py), none of them the host's or another jail's."""
    os.makedirs(dev + "/pts", exist_ok=True)
    _mount("devpts", dev + "/pts", "devpts", MS_NOSUID | MS_NOEXEC, PTS_OPTIONS)
    os.symlink("pts/ptmx", dev + "/ptmx")


def build_root(paths: tuple[str, ...], devices: tuple[str, ...], uid: int, gid: int) -> None:
    """Assemble the minimal root and pivot into it (call in a new mount namespace, as root)."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    # A /proc of this PID namespace, so that a child's /proc/PID is the pid fork() gave.
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    owner = _Owner(uid, gid)
    try:
        _stage(paths, owner)
    finally:
        owner.close()
    for device in devices:
        if os.path.exists(device):
            _make_device(STAGING, device, _device_number(device), uid, gid)
    if os.path.isdir(STAGING + "/dev"):
        _mount_ptys(STAGING + "/dev")
    _pivot()
    _mount_proc()
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID)
    _mount_shared_tmp(uid, gid)


def _stage(paths: tuple[str, ...], owner: _Owner | None) -> list[str]:
    """A tmpfs at STAGING showing `paths`; returns those only their owner may read, which
    get only a mount point without an owner."""
    os.makedirs(STAGING, exist_ok=True)
    _mount("usetl-jail", STAGING, "tmpfs", MS_NOSUID, ROOT_TMPFS)
    os.makedirs(STAGING + JAIL_DIR, exist_ok=True)
    shown: list[str] = []
    owned: list[str] = []
    for path in sorted({os.path.normpath(p) for p in paths}, key=len):
        if os.path.lexists(path) and not _covered(path, shown):
            if not _show(STAGING, path, owner):
                owned.append(path)
            shown.append(path)
    return owned


def _pivot() -> None:
    """Make STAGING the root and leave the host's tree."""
    os.makedirs(STAGING + "/proc")
    os.makedirs(STAGING + "/.old")
    _check(_libc.syscall(SYS_PIVOT_ROOT, STAGING.encode(), (STAGING + "/.old").encode()),
           "pivot_root")
    os.chdir("/")
    _check(_libc.umount2(b"/.old", MNT_DETACH), "detaching the host's root")
    os.rmdir("/.old")


def _mount_shared_tmp(uid: int, gid: int) -> None:
    """A tmpfs of the jail's own at JAIL_DIR, where its invocation trees' /tmp lives
    (libos/sharedtmp.py): its pages are charged to the jail's cgroup."""
    _mount("usetl-tmp", JAIL_DIR, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
           SHARED_TMP_OPTIONS.format(uid=uid, gid=gid))


def _mount_proc() -> None:
    """This process's PID namespace (the jailer's children's): only its own uid's processes."""
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible")


@dataclass(frozen=True)
class PreparedRoot:
    """A root made once (prepare_root): the mount namespace `fd` holds, the paths each jail
    mounts itself (idmapped to its uid), and the devices (path, device number) whose nodes
    each jail makes in a tmpfs of its own on their directories."""

    fd: int
    owned: tuple[str, ...]
    devices: tuple[tuple[str, int], ...]


DEV_TMPFS = "size=64k,mode=755"


def prepare_root(paths: tuple[str, ...], devices: tuple[str, ...]) -> PreparedRoot:
    """A root showing `paths` read-only, in a mount namespace a child of this process makes
    (this one's own stays as it is); call as root."""
    found = tuple((d, _device_number(d)) for d in devices if os.path.exists(d))

    def build() -> bytes:
        _check(_libc.unshare(CLONE_NEWNS), "unshare (mount namespace)")
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        owned = _stage(paths, None)
        for directory in {os.path.dirname(d) for d, _ in found}:
            os.makedirs(STAGING + directory, exist_ok=True)
        _pivot()
        _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID)
        return json.dumps(owned).encode()

    with _namespace_holder(build) as (pid, said):
        if not said or said.startswith(b"!"):
            raise JailError(f"cannot prepare a jail's root: {said[1:].decode() or 'it died'}")
        fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    return PreparedRoot(fd, tuple(json.loads(said)), found)


class PreparedRoots:
    """Roots made once per set of paths and devices as the host has them now (the most
    recently used `most` kept): a path replaced since (another file, mode or link) gets a
    new root, as a jail built afresh would show it."""

    def __init__(self, most: int = 16):
        self.most = most
        self._roots: OrderedDict[tuple, PreparedRoot] = OrderedDict()

    def get(self, paths: tuple[str, ...], devices: tuple[str, ...]) -> PreparedRoot:
        key = _identity(paths, devices)
        root = self._roots.get(key)
        if root is not None:
            self._roots.move_to_end(key)
            return root
        root = self._roots[key] = prepare_root(paths, devices)
        while len(self._roots) > self.most:
            os.close(self._roots.popitem(last=False)[1].fd)
        return root


def _identity(paths: tuple[str, ...], devices: tuple[str, ...]) -> tuple:
    found: list[tuple] = []
    for path in sorted({os.path.normpath(p) for p in (*paths, *devices)}):
        try:
            st = os.lstat(path)
            link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            real = os.stat(path)
        except OSError:
            found.append((path,))
            continue
        found.append((path, st.st_ino, st.st_mode, link, real.st_dev, real.st_ino,
                      real.st_mode, real.st_rdev))
    return tuple(found)


@dataclass
class JailRoot:
    """One jail's way into a prepared root: the root, and its uid's idmapped mounts of the
    paths only their owner may read, detached (made where the host's tree is visible)."""

    root: PreparedRoot
    trees: list[tuple[int, str]]

    def fds(self) -> set[int]:
        return {self.root.fd, *(tree for tree, _ in self.trees)}

    def close(self) -> None:
        for tree, _ in self.trees:
            os.close(tree)
        self.trees = []


def jail_root(root: PreparedRoot, uid: int, gid: int) -> JailRoot:
    trees: list[tuple[int, str]] = []
    owner = _Owner(uid, gid)
    try:
        for path in root.owned:
            trees.append((_idmapped_tree(os.path.realpath(path), owner.userns()), path))
    except JailError:
        JailRoot(root, trees).close()
        raise
    finally:
        owner.close()
    return JailRoot(root, trees)


def enter_root(entry: JailRoot, uid: int, gid: int) -> None:
    """Into a copy of a prepared root, in new mount, IPC, UTS and network namespaces, with
    this jail's own mounts (call as root, single-threaded)."""
    _check(_libc.setns(entry.root.fd, CLONE_NEWNS), "setns (the prepared root)")
    unshare()
    for tree, path in entry.trees:
        _move_tree(tree, path)
    entry.close()
    directories = {os.path.dirname(d) for d, _ in entry.root.devices}
    for directory in sorted(directories):
        _mount("usetl-dev", directory, "tmpfs", MS_NOSUID | MS_NOEXEC, DEV_TMPFS)
    for device, rdev in entry.root.devices:
        _make_device("", device, rdev, uid, gid)
    if "/dev" in directories:
        _mount_ptys("/dev")
    _mount_proc()
    _mount_shared_tmp(uid, gid)


def _reap(pid: int) -> None:
    """Wait for a helper child (a SIGCHLD handler of the caller's may have reaped it)."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def start_pid_namespace() -> int:
    """Make this process's later children the members of a new PID namespace.

    Its first child is the namespace's init: it only reaps, and lives on while the
    namespace has members (so a jailer's clones outlive it, as without a jail: when the
    caller dies its children go to the host's reaper, not to this init, which must not
    end, killing them, before they do). The caller stays where it is, so its own pid
    stays the one its controller knows.
    """
    _check(_libc.unshare(CLONE_NEWPID), "unshare (pid namespace)")
    pid = os.fork()
    if pid == 0:
        _reap_forever()
    return pid


MEMBERS_POLL_S = 1.0


def _namespace_has_members() -> bool:
    """Whether a process other than this init is in its PID namespace (kill(-1) reaches
    every process of the caller's namespace but its init)."""
    try:
        os.kill(-1, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # there are some, if none this init may signal
        pass
    return True


def _reap_forever() -> None:
    status = 0
    try:
        signals = {signal.SIGCHLD, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the jailer's channel above all
        parent_gone = False
        while True:
            try:
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            except ChildProcessError:
                pass
            if parent_gone:
                if not _namespace_has_members():
                    break
                # Members that are not its children end unseen: look again after a while.
                signal.sigtimedwait(signals, MEMBERS_POLL_S)
            elif signal.sigwait(signals) == signal.SIGTERM:
                parent_gone = True
    except BaseException:
        status = 1
    finally:
        os._exit(status)
