"""The function's memory allowance, shared by the processes of an invocation's tree.

A USF's memory limit is its guest RAM: what the guest has mapped cannot
exceed it, and an mmap or brk beyond it fails (ENOMEM, CPython's
MemoryError), as under Linux's strict overcommit. A child's VM has RAM of
its parent's size, so without more each child would have a limit of its
own. Once an invocation makes its first child, every process of its tree
(the USF, each forked child and each program) has a charge in one shared
memory file: the USF's is all it has mapped, a program's all its own, a
forked child's what it mapped beyond what it had at the fork (the rest it
shares with its parent, copy-on-write). A mapping that would take the
tree's charges past the function's memory is ENOMEM, with one `usetl:`
line on the process's stderr: the function ends with a clear error where it
would otherwise grow to its jail cgroup's limit, whose OOM killer ends one
of its monitors (perhaps the USF's) without a word. The file is changed
under a POSIX record lock, which forked monitors do not share, so two
processes cannot both take the last bytes; a child's charge is cleared by
its parent when it ends, killed or not.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import SyscallError

CHARGE = struct.Struct("<q")
FREE = -1  # a slot no process holds
REFUSED = ("usetl: {call} of {size} refused: the function's memory ({limit} MiB) is used by its "
           "processes ({used} MiB mapped, {count} processes)\n")


class MemoryAllowance:
    """The shared file of charges (one slot per process of the tree, slot 0 the USF's)."""

    def __init__(self, limit: int, slots: int):
        self.limit = limit
        self.slots = slots
        self.fd = os.memfd_create("usetl-allowance", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, slots * CHARGE.size)
        self.map = mmap.mmap(self.fd, slots * CHARGE.size)
        for i in range(1, slots):
            CHARGE.pack_into(self.map, i * CHARGE.size, FREE)

    def claim(self) -> int:
        """A slot for a new child, charged nothing (the caller's tokens bound their number)."""
        with self._locked():
            for i in range(1, self.slots):
                if self._charge(i) == FREE:
                    CHARGE.pack_into(self.map, i * CHARGE.size, 0)
                    return i
        raise AssertionError("more children than slots")

    def release(self, slot: int) -> None:
        """The child in `slot` has ended: its charge goes back to the others."""
        with self._locked():
            CHARGE.pack_into(self.map, slot * CHARGE.size, FREE)

    def used(self) -> tuple[int, int]:
        """(bytes charged, processes charged) now."""
        charges = [c for i in range(self.slots) if (c := self._charge(i)) != FREE]
        return sum(charges), len(charges)

    def admit(self, slot: int, charge: int) -> bool:
        """Set `slot`'s charge to `charge` if the tree stays within the limit (or it shrinks)."""
        with self._locked():
            others = sum(c for i in range(self.slots)
                         if i != slot and (c := self._charge(i)) != FREE)
            if charge > self._charge(slot) and others + charge > self.limit:
                return False
            CHARGE.pack_into(self.map, slot * CHARGE.size, charge)
            return True

    def settle(self, slot: int, charge: int) -> None:
        """A lower charge after memory was given back (only its process writes its slot)."""
        CHARGE.pack_into(self.map, slot * CHARGE.size, charge)

    def _charge(self, slot: int) -> int:
        return CHARGE.unpack_from(self.map, slot * CHARGE.size)[0]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """A POSIX record lock on the whole file: held per process, so forked monitors
        exclude each other (an flock would be shared by the open file they inherited)."""
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)



class Charge:
    """One process's part of the allowance, as its address space sees it: its mapped bytes
    beyond `baseline` (what a forked child shares with its parent)."""

    def __init__(self, allowance: MemoryAllowance, slot: int, baseline: int,
                 tell: Callable[[str], None]):
        self.allowance = allowance
        self.slot = slot
        self.baseline = baseline
        self.tell = tell  # a line on the process's stderr, once
        self.told = False

    def admit(self, mapped: int, call: str, size: int) -> None:
        """Room for `mapped` bytes in all, or ENOMEM (told on stderr, once)."""
        if self.allowance.admit(self.slot, max(0, mapped - self.baseline)):
            return
        if not self.told:
            self.told = True
            used, count = self.allowance.used()
            self.tell(REFUSED.format(call=call, size=_mib(size), limit=self.allowance.limit >> 20,
                                     used=used >> 20, count=count))
        raise SyscallError(errno.ENOMEM)

    def settle(self, mapped: int) -> None:
        self.allowance.settle(self.slot, max(0, mapped - self.baseline))


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"
