"""Numbers from <linux/kvm.h>: ioctl requests, capabilities, exit reasons."""

from __future__ import annotations

import ctypes

from . import structs as s

KVMIO = 0xAE
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (KVMIO << 8) | nr


def _io(nr: int) -> int:
    return _ioc(_IOC_NONE, nr, 0)


def _ior(nr: int, struct: type) -> int:
    return _ioc(_IOC_READ, nr, ctypes.sizeof(struct))


def _iow(nr: int, struct: type) -> int:
    return _ioc(_IOC_WRITE, nr, ctypes.sizeof(struct))


def _iowr(nr: int, struct: type) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, nr, ctypes.sizeof(struct))


KVM_API_VERSION = 12

# system ioctls
KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_CHECK_EXTENSION = _io(0x03)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_GET_SUPPORTED_CPUID = _iowr(0x05, s.kvm_cpuid2)

# VM ioctls
KVM_CREATE_VCPU = _io(0x41)
KVM_SET_USER_MEMORY_REGION = _iow(0x46, s.kvm_userspace_memory_region)
KVM_SET_TSS_ADDR = _io(0x47)
KVM_ENABLE_CAP = _iow(0xA3, s.kvm_enable_cap)

# vCPU ioctls
KVM_RUN = _io(0x80)
KVM_GET_REGS = _ior(0x81, s.kvm_regs)
KVM_SET_REGS = _iow(0x82, s.kvm_regs)
KVM_GET_SREGS = _ior(0x83, s.kvm_sregs)
KVM_SET_SREGS = _iow(0x84, s.kvm_sregs)
KVM_GET_MSRS = _iowr(0x88, s.kvm_msrs)
KVM_SET_MSRS = _iow(0x89, s.kvm_msrs)
KVM_GET_FPU = _ior(0x8C, s.kvm_fpu)
KVM_SET_FPU = _iow(0x8D, s.kvm_fpu)
KVM_SET_CPUID2 = _iow(0x90, s.kvm_cpuid2)
KVM_GET_VCPU_EVENTS = _ior(0x9F, s.kvm_vcpu_events)
KVM_SET_VCPU_EVENTS = _iow(0xA0, s.kvm_vcpu_events)
KVM_GET_XSAVE = _ior(0xA4, s.kvm_xsave)
KVM_SET_XSAVE = _iow(0xA5, s.kvm_xsave)
KVM_GET_XCRS = _ior(0xA6, s.kvm_xcrs)
KVM_SET_XCRS = _iow(0xA7, s.kvm_xcrs)
KVM_GET_STATS_FD = _io(0xCE)  # a VM's or vCPU's binary statistics (Linux 5.14+)

# capabilities
KVM_CAP_USER_MEMORY = 3
KVM_CAP_SET_TSS_ADDR = 4
KVM_CAP_EXT_CPUID = 7
KVM_CAP_READONLY_MEM = 81
KVM_CAP_XSAVE = 55
KVM_CAP_XCRS = 56
KVM_CAP_SYNC_REGS = 74
KVM_CAP_IMMEDIATE_EXIT = 136

# memory region flags
KVM_MEM_READONLY = 1 << 1

# kvm_run.kvm_valid_regs / kvm_dirty_regs
KVM_SYNC_X86_REGS = 1 << 0
KVM_SYNC_X86_SREGS = 1 << 1
KVM_SYNC_X86_EVENTS = 1 << 2

# kvm_run.exit_reason
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24

EXIT_REASON_NAMES = {
    value: name[len("KVM_EXIT_") :]
    for name, value in dict(globals()).items()
    if name.startswith("KVM_EXIT_") and isinstance(value, int)
}

KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1
