"""Typed bindings to /dev/kvm: ioctl numbers, structs, errors."""

from .api import Kvm, KvmError, KvmUnavailable, VcpuFd, VmFd

__all__ = ["Kvm", "KvmError", "KvmUnavailable", "VcpuFd", "VmFd"]
