"""One VM: guest memory, 64-bit set-up, trampoline, vCPU run loop, exits."""

from .machine import GuestFault, GuestTimeout, RegionSpec, Stop, ThreadContext, Vm, VmError
from .memory import GuestMemory

__all__ = [
    "GuestFault", "GuestMemory", "GuestTimeout", "RegionSpec", "Stop", "ThreadContext", "Vm",
    "VmError",
]
