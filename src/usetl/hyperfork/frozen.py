"""A frozen USF: what a template process holds and every clone starts from.

A paused USF whose VM is closed: guest memory (memfds), the captured vCPU
state and the monitor state, as live objects (clones inherit them by fork),
with what each held (monitor_state.InPlace: rollback puts that back) and as
bytes (snapshots).
"""

from __future__ import annotations

import hashlib
import os

from usetl.usf import Usf
from usetl.vm import GuestMemory, RegionSpec
from usetl.vm.layout import HUGE_PAGE, stack_guard
from usetl.vm.memory import PAGE_SIZE, data_ranges, huge_holes
from usetl.vm.vcpu_state import VcpuState

from . import monitor_state

# How far a template's memory file may grow with clones' zero pages before it is trimmed.
TRIM_SLACK = 16 << 20
# At most this many ranges in a working set (what one clone reported: see learn_working_set).
MAX_WORKING_SET_RANGES = 4096


class Frozen:
    """A paused USF captured for cloning: monitor state, vCPU state and guest memory."""

    def __init__(self, usf: Usf, vcpu: VcpuState, state: bytes,
                 memory: dict[str, GuestMemory], specs: list[RegionSpec]):
        self.usf = usf
        self.vcpu = vcpu
        self.state = state
        self.memory = memory
        self.in_place = monitor_state.InPlace(
            usf, monitor_state.externals(usf.vm, usf.image, usf.kernel.ns.image, memory))
        self.specs = specs
        # What the memory files hold when frozen, before any clone touched them.
        self.data = {name: data_ranges(m.fd, m.size) for name, m in memory.items()}
        # The RAM that clones map anonymous on huge pages (UsfConfig.huge_heap).
        ram = memory["ram"]
        self.huge_holes = (huge_holes(self.data["ram"], ram.size)
                           if usf.config.huge_heap else [])
        # The RAM pages a clone's first request wrote (REAP's recorded working set): each
        # clone forked after it is learnt copies them in one batch before its guest runs.
        self.working_set: list[tuple[int, int]] = []

    @classmethod
    def capture(cls, usf: Usf) -> Frozen:
        """Freeze a USF paused in the agent's wait; its VM is closed, its memory kept."""
        vm = usf.vm
        vm.settle()
        for mem in vm.memory().values():
            mem.keep_file_pages()  # clones map only the memory files
        usf.kernel.captured()
        frozen = cls(usf, vm.save_state(), monitor_state.dumps(usf), vm.memory(), vm.specs)
        vm.release()
        return frozen

    def learn_working_set(self, ranges: list[tuple[int, int]]) -> None:
        """Keep the (offset, length) RAM ranges a clone reported as written by its first
        request, as far as they lie in pages this template holds: a clone's word is not
        believed beyond that, so prefetching them can cost a clone no more than copies of
        the template's own pages."""
        self.working_set = held_parts(ranges[:MAX_WORKING_SET_RANGES], self.data["ram"])

    def ring3_readable(self, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The parts of (offset, length) RAM ranges that guest code may read: all of RAM but
        the supervisor-only first 2 MiB and the stack's guard (vm.layout)."""
        size = self.memory["ram"].size
        guard, guard_end = stack_guard(size)
        return held_parts(ranges, [(HUGE_PAGE, guard - HUGE_PAGE), (guard_end, size - guard_end)])

    def trim(self) -> None:
        """Give back the zero pages clones' faults added to the memory files (see trim_outside)."""
        for name, mem in self.memory.items():
            keep = self.data[name]
            if resident_bytes(mem.fd) > sum(n for _, n in keep) + TRIM_SLACK:
                mem.trim_outside(keep)

    def memory_bytes(self) -> int:
        return sum(resident_bytes(m.fd) for m in self.memory.values())

    def guest_bytes(self) -> int:
        """Its guest memory's size (RAM and regions), what its cgroups are made for."""
        return sum(m.size for m in self.memory.values())

    def digests(self) -> dict[str, str]:
        return memory_digests(self.memory)


def held_parts(ranges: list[tuple[int, int]],
               held: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of (offset, length) `ranges`, widened to pages, that lie in `held` (sorted,
    disjoint (offset, length) ranges), sorted and merged."""
    wanted = sorted((max(off, 0) & ~(PAGE_SIZE - 1),
                     max(off + length + PAGE_SIZE - 1, 0) & ~(PAGE_SIZE - 1))
                    for off, length in ranges)
    spans = [(start, start + length) for start, length in held]
    kept: list[tuple[int, int]] = []
    i = 0
    for lo, hi in wanted:  # both sorted: one walk over `held`
        while i < len(spans) and spans[i][1] <= lo:
            i += 1
        j = i
        while j < len(spans) and spans[j][0] < hi:
            a, b = max(lo, spans[j][0]), min(hi, spans[j][1])
            if kept and a <= kept[-1][1]:
                kept[-1] = (kept[-1][0], max(kept[-1][1], b))
            else:
                kept.append((a, b))
            j += 1
    return [(lo, hi - lo) for lo, hi in kept]


def resident_bytes(fd: int) -> int:
    return os.fstat(fd).st_blocks * 512


def memory_digests(memory: dict[str, GuestMemory]) -> dict[str, str]:
    return {name: hashlib.sha256(mem.view).hexdigest() for name, mem in memory.items()}
