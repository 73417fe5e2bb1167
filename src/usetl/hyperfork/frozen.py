"""A frozen USF: what a template process holds and every clone starts from.

A paused USF whose VM is closed: guest memory (memfds), the captured vCPU
state and the monitor state, both as live objects (clones inherit them by
fork) and as bytes (rollback and snapshots read those).
"""

from __future__ import annotations

import hashlib
import os

from usetl.usf import Usf
from usetl.vm import GuestMemory, RegionSpec
from usetl.vm.memory import data_ranges
from usetl.vm.vcpu_state import VcpuState

from . import monitor_state

# How far a template's memory file may grow with clones' zero pages before it is trimmed.
TRIM_SLACK = 16 << 20


class Frozen:
    """A paused USF captured for cloning: monitor state, vCPU state and guest memory."""

    def __init__(self, usf: Usf, vcpu: VcpuState, state: bytes,
                 memory: dict[str, GuestMemory], specs: list[RegionSpec]):
        self.usf = usf
        self.vcpu = vcpu
        self.state = state
        self.memory = memory
        self.specs = specs
        # What the memory files hold when frozen, before any clone touched them.
        self.data = {name: data_ranges(m.fd, m.size) for name, m in memory.items()}

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

    def trim(self) -> None:
        """Give back the zero pages clones' faults added to the memory files (see trim_outside)."""
        for name, mem in self.memory.items():
            keep = self.data[name]
            if resident_bytes(mem.fd) > sum(n for _, n in keep) + TRIM_SLACK:
                mem.trim_outside(keep)

    def memory_bytes(self) -> int:
        return sum(resident_bytes(m.fd) for m in self.memory.values())

    def digests(self) -> dict[str, str]:
        return memory_digests(self.memory)


def resident_bytes(fd: int) -> int:
    return os.fstat(fd).st_blocks * 512


def memory_digests(memory: dict[str, GuestMemory]) -> dict[str, str]:
    return {name: hashlib.sha256(mem.view).hexdigest() for name, mem in memory.items()}
