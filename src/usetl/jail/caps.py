"""Capabilities: none left, and none to be had again."""

from __future__ import annotations

import ctypes
import os

from .spec import JailError

PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAP_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _prctl(option: int, arg: int, what: str) -> None:
    if _libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise JailError(f"{what}: {os.strerror(err)}")


def last_cap() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def clear_bounding_set(last: int) -> None:
    """Empty the bounding set (needs CAP_SETPCAP, so before the uid changes)."""
    for cap in range(last + 1):
        _prctl(PR_CAPBSET_DROP, cap, f"dropping capability {cap} from the bounding set")
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, "clearing the ambient capabilities")


def clear_all() -> None:
    """No effective, permitted or inheritable capability (after the uid changed)."""
    data = (_CapData * 2)()
    if _libc.capset(ctypes.byref(_CapHeader(_CAP_VERSION_3, 0)), data) != 0:
        raise JailError(f"capset: {os.strerror(ctypes.get_errno())}")


def no_new_privs() -> None:
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")


def set_dumpable(on: bool) -> None:
    """Non-dumpable: no process of the same uid may trace it or open its /proc/PID/mem
    (nor see it in a hidepid /proc); its /proc/self then belongs to root."""
    _prctl(PR_SET_DUMPABLE, int(on), "PR_SET_DUMPABLE")


def open_own_proc_file(name: str) -> int:
    """/proc/self/NAME of a non-dumpable process: dumpable just for the open (what it
    exposes for that moment is a process that has not yet run anything of its own)."""
    was = _libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
    set_dumpable(True)
    try:
        return os.open(f"/proc/self/{name}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        set_dumpable(was == 1)
