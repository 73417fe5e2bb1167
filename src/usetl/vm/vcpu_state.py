"""The vCPU's whole architectural state, captured and restored as bytes.

Each part is the raw kernel struct (kvm_regs, kvm_sregs, kvm_fpu,
kvm_xsave, kvm_xcrs, kvm_vcpu_events) plus the MSRs usetl sets, so a state
can be written to a snapshot file and read back by another process.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

from usetl.kvm import structs as ks

_PARTS = (
    ("regs", ks.kvm_regs),
    ("sregs", ks.kvm_sregs),
    ("fpu", ks.kvm_fpu),
    ("xsave", ks.kvm_xsave),
    ("xcrs", ks.kvm_xcrs),
    ("events", ks.kvm_vcpu_events),
)


@dataclass
class VcpuState:
    regs: ks.kvm_regs
    sregs: ks.kvm_sregs
    fpu: ks.kvm_fpu
    xsave: ks.kvm_xsave
    xcrs: ks.kvm_xcrs
    events: ks.kvm_vcpu_events
    msrs: dict[int, int]

    def to_bytes(self) -> bytes:
        out = bytearray()
        for name, _ in _PARTS:
            out += bytes(getattr(self, name))
        out += struct.pack("<I", len(self.msrs))
        for index, value in sorted(self.msrs.items()):
            out += struct.pack("<IQ", index, value)
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> VcpuState:
        parts: dict[str, object] = {}
        off = 0
        for name, ctype in _PARTS:
            size = ctypes.sizeof(ctype)
            if off + size > len(data):
                raise ValueError("vCPU state is truncated")
            parts[name] = ctype.from_buffer_copy(data, off)
            off += size
        (count,) = struct.unpack_from("<I", data, off)
        off += 4
        if off + 12 * count != len(data):
            raise ValueError("vCPU state has the wrong length")
        msrs = {}
        for _ in range(count):
            index, value = struct.unpack_from("<IQ", data, off)
            msrs[index] = value
            off += 12
        return cls(msrs=msrs, **parts)  # type: ignore[arg-type]
