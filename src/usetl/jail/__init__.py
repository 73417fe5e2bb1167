"""The jail of a monitor process (Firecracker's jailer is the model).

    confine(JailSpec(uid, gid, read_only=...), keep_fds={chan, *memfds})

in a process forked from a template process (still root, in the template's PID
namespace, before its first guest instruction): new mount, IPC, UTS and network
namespaces (the network one empty: the egress broker does its network I/O) with a
minimal read-only root, no descriptors but its own, an empty environment, an
unprivileged uid and gid, no capabilities and no way to gain any, and a seccomp
allow-list. The controller puts the
process in a cgroup of its own once `handshake.announce` told it the pid. Where this host
lacks a facility the jail logs a warning and goes on without it; where applying one
that the host has fails, JailError.

One module per facility: ids, caps, namespaces, cgroup, seccomp, environ; handshake
is how the controller learns the process's pid.
"""

from __future__ import annotations

import os

from usetl.hostmm import PAGEMAP_SCAN

from . import caps, environ, ids, namespaces, seccomp
from .caps import open_own_proc_file
from .namespaces import JailRoot, PreparedRoots, jail_root
from .spec import DEVICES, SYSTEM_PATHS, JailError, JailSpec, Unavailable, degrade, python_paths

__all__ = ["DEVICES", "SYSTEM_PATHS", "JailError", "JailRoot", "JailSpec", "PreparedRoots",
           "Unavailable", "confine", "jail_root", "open_own_proc_file", "python_paths"]


def confine(spec: JailSpec, keep_fds: set[int], root: JailRoot | None = None) -> None:
    """`root`: a root prepared for spec's paths and devices to enter, instead of building one
    (namespaces.PreparedRoots)."""
    privileged = os.geteuid() == 0
    if privileged:
        last_cap = caps.last_cap()
        if root is None:
            namespaces.unshare()
            namespaces.set_hostname(spec.hostname)
            environ.close_inherited(keep_fds | set(spec.keep_fds))
            namespaces.build_root(spec.read_only, spec.devices, spec.uid, spec.gid)
        else:
            environ.close_inherited(keep_fds | set(spec.keep_fds) | root.fds())
            namespaces.enter_root(root, spec.uid, spec.gid)
            os.close(root.root.fd)
            namespaces.set_hostname(spec.hostname)
    else:
        degrade("namespaces, the minimal root and the uid change", "the process is not root")
        environ.close_inherited(keep_fds | set(spec.keep_fds))
    environ.clear_environment()
    if privileged:
        caps.clear_bounding_set(last_cap)
        ids.become(spec.uid, spec.gid)
        caps.clear_all()
        caps.set_dumpable(False)  # leaving uid 0 did so already; say it
    caps.no_new_privs()
    if spec.seccomp:
        _install_seccomp()


def _install_seccomp() -> None:
    prog = seccomp.build(PAGEMAP_SCAN, seccomp.SOCKET_FAMILIES)
    try:
        seccomp.install(prog)
    except Unavailable as e:
        degrade("seccomp", str(e))
