"""The function's memory allowance, shared by the processes of an invocation's tree.

A USF's memory limit is its guest RAM: what the guest has mapped cannot
exceed it, and an mmap or brk beyond it fails (ENOMEM, CPython's
MemoryError). A child's VM has RAM of its parent's size, so without more
each child would have a limit of its own. Once an invocation makes its
first child, every process of its tree (the USF, each forked child and each
program) has a charge in one shared memory file: the host memory it holds
for its guest RAM (GuestMemory.backed_bytes: the pages its guest touched or
the monitor wrote, not those it only mapped), as Linux's memory cgroup
charges what is resident, not what is mapped; a forked child's is what it
holds beyond what it held at the fork (the rest it shares with its parent,
copy-on-write). Linux's overcommit heuristic refuses a mapping that could
not be backed by the memory not yet in use; so here an mmap, brk or mremap
whose size does not fit beside what the tree holds is ENOMEM, with one
`usetl:` line on the process's stderr. Memory mapped and then touched
beyond the allowance is Linux's out-of-memory path instead: each process
measures itself every CHECK_EVERY seconds while it runs, and when the
tree holds more than the function's memory, the process holding the most
is killed (SIGKILL), told on the stderr of the process that found it,
where the function would otherwise grow to its jail cgroup's limit, whose
OOM killer ends one of its monitors (perhaps the USF's) without a word. The
file is changed under a POSIX record lock, which forked monitors do not
share; a child's charge is cleared by its parent when it ends, killed or not.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import SyscallError

# A process's charge (FREE: no process holds the slot), its pid, and whether it is being
# killed for the tree's memory (one victim at a time, as Linux's OOM killer waits for its
# victim to exit before it picks another).
SLOT = struct.Struct("<qqq")
FREE = -1
CHECK_EVERY = 0.05  # seconds between a running process's measurements of itself
REFUSED = ("usetl: {call} of {size} refused: the function's memory ({limit} MiB) is used by its "
           "processes ({used} MiB in use, {count} processes)\n")
KILLED = ("usetl: out of memory: the function's memory ({limit} MiB) is used by its processes "
          "({used} MiB in use, {count} processes): killed process {pid} ({victim} MiB)\n")


class MemoryAllowance:
    """The shared file of charges (one slot per process of the tree, slot 0 the USF's)."""

    def __init__(self, limit: int, slots: int):
        self.limit = limit
        self.slots = slots
        self.fd = os.memfd_create("usetl-allowance", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, slots * SLOT.size)
        self.map = mmap.mmap(self.fd, slots * SLOT.size)
        for i in range(1, slots):
            SLOT.pack_into(self.map, i * SLOT.size, FREE, 0, 0)

    def claim(self) -> int:
        """A slot for a new child, charged nothing (the caller's tokens bound their number)."""
        with self._locked():
            for i in range(1, self.slots):
                if self._slot(i)[0] == FREE:
                    SLOT.pack_into(self.map, i * SLOT.size, 0, 0, 0)
                    return i
        raise AssertionError("more children than slots")

    def release(self, slot: int) -> None:
        """The child in `slot` has ended: its charge goes back to the others."""
        with self._locked():
            SLOT.pack_into(self.map, slot * SLOT.size, FREE, 0, 0)

    def used(self) -> tuple[int, int]:
        """(bytes charged, processes charged) now."""
        held = self._held()
        return sum(c for c, _, _, _ in held), len(held)

    def fits(self, slot: int, pid: int, charge: int, more: int) -> bool:
        """Set `slot`'s charge (process `pid`'s) to `charge`; whether `more` bytes fit beside
        what the tree holds."""
        with self._locked():
            self.settle(slot, pid, charge)
            return sum(c for c, _, _, _ in self._held()) + more <= self.limit

    def settle(self, slot: int, pid: int, charge: int) -> None:
        """`slot`'s charge is `charge` now (only its process writes its charge)."""
        SLOT.pack_into(self.map, slot * SLOT.size, charge, pid, self._slot(slot)[2])

    def victim(self) -> tuple[int, int] | None:
        """(pid, charge) of the process to kill, if the tree holds more than the function's
        memory and none is being killed already: the one holding the most, marked so that
        no other process picks a victim until it has ended."""
        with self._locked():
            held = self._held()
            if sum(c for c, _, _, _ in held) <= self.limit or any(d for _, _, d, _ in held):
                return None
            charge, pid, _, slot = max(held)
            SLOT.pack_into(self.map, slot * SLOT.size, charge, pid, 1)
        return pid, charge

    def _held(self) -> list[tuple[int, int, int, int]]:
        """(charge, pid, being killed, slot) of every slot a process holds."""
        return [(*self._slot(i), i) for i in range(self.slots) if self._slot(i)[0] != FREE]

    def _slot(self, slot: int) -> tuple[int, int, int]:
        return SLOT.unpack_from(self.map, slot * SLOT.size)

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
    """One process's part of the allowance: the host memory its guest RAM holds
    (`measure`), beyond `baseline` (what a forked child shares with its parent)."""

    def __init__(self, allowance: MemoryAllowance, slot: int, pid: int,
                 measure: Callable[[], int], baseline: int, tell: Callable[[str], None]):
        self.allowance = allowance
        self.slot = slot
        self.pid = pid
        self.measure = measure
        self.baseline = baseline
        self.tell = tell  # a line on the process's stderr
        self.told = False  # of a refusal, once
        self.next_check = time.monotonic() + CHECK_EVERY
        self.ran_to = -1  # the VM's exit count at the last measurement (Kernel.check_memory)

    def held(self) -> int:
        return max(0, self.measure() - self.baseline)

    def admit(self, call: str, size: int) -> None:
        """Room for a mapping of `size` more bytes beside what the tree holds, or ENOMEM
        (told on stderr, once)."""
        if self.allowance.fits(self.slot, self.pid, self.held(), size):
            return
        if not self.told:
            self.told = True
            used, count = self.allowance.used()
            self.tell(REFUSED.format(call=call, size=_mib(size), limit=self.allowance.limit >> 20,
                                     used=used >> 20, count=count))
        raise SyscallError(errno.ENOMEM)

    def settle(self) -> None:
        """Memory was given back: the charge is what is held now."""
        self.allowance.settle(self.slot, self.pid, self.held())

    def check(self) -> int | None:
        """The periodic measurement: the pid of the process to kill if the tree now holds
        more than the function's memory (told on stderr), else None."""
        self.next_check = time.monotonic() + CHECK_EVERY
        self.settle()
        found = self.allowance.victim()
        if found is None:
            return None
        pid, charge = found
        used, count = self.allowance.used()
        self.tell(KILLED.format(limit=self.allowance.limit >> 20, used=used >> 20, count=count,
                                pid=pid, victim=charge >> 20))
        return pid


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"
