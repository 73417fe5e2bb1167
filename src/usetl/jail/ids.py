"""Unprivileged uids and gids: which one a jailed process gets, and becoming it."""

from __future__ import annotations

import itertools
import os
import threading

from .spec import JailError

# Far above the host's own users (Debian gives people 1000-59999 and systems up to 65535).
DEFAULT_FIRST_UID = 100000
DEFAULT_UID_COUNT = 65536


class UidRange:
    """Hands out uids from [first, first + count), each once, for one controller process.

    Every function template and every clone of a base template gets its own uid, so
    that no two of them may signal, trace or read each other (only the kernel's checks
    for the same uid stand between processes that share one).
    """

    def __init__(self, first: int = DEFAULT_FIRST_UID, count: int = DEFAULT_UID_COUNT):
        if first <= 0 or count <= 0 or first + count > 1 << 31:
            raise JailError(f"bad uid range: first {first}, count {count}")
        self.first = first
        self.count = count
        self._next = itertools.count()
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, value: str | None) -> UidRange:
        """From "FIRST" or "FIRST:COUNT" (USETL_JAIL_UIDS), or the defaults."""
        if not value:
            return cls()
        first, _, count = value.partition(":")
        try:
            return cls(int(first), int(count) if count else DEFAULT_UID_COUNT)
        except ValueError:
            raise JailError(
                f"USETL_JAIL_UIDS must be FIRST or FIRST:COUNT, not {value!r}") from None

    def take(self) -> int:
        with self._lock:
            n = next(self._next)
        # The range wraps: a uid comes back only after `count` others were handed out.
        return self.first + n % self.count


_shared: UidRange | None = None
_shared_lock = threading.Lock()


def shared_range() -> UidRange:
    """This controller's one uid range (USETL_JAIL_UIDS), used by every backend, so that
    a KVM clone and a process sandbox never get the same uid."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = UidRange.from_env(os.environ.get("USETL_JAIL_UIDS"))
        return _shared


def become(uid: int, gid: int) -> None:
    """Drop every group, then take gid and uid as real, effective and saved ids.

    Leaving uid 0 this way clears the permitted and effective capabilities.
    """
    if uid == 0 or gid == 0:
        raise JailError("a jailed process may not keep uid or gid 0")
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as e:
        raise JailError(f"cannot become uid {uid} gid {gid}: {e.strerror}") from None
