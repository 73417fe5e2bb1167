"""Every /dev/kvm ioctl the project uses, each wrapped once, with typed errors."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct

from usetl import hostmm
from usetl.errors import UsetlError

from . import constants as c
from . import structs as s

KVM_DEVICE = "/dev/kvm"
_SUPPORTED_CPUID: ctypes.Structure | None = None  # Kvm.supported_cpuid's


class KvmError(UsetlError):
    """An ioctl on /dev/kvm, a VM or a vCPU failed."""

    def __init__(self, op: str, err: int, detail: str = ""):
        self.op = op
        self.errno = err
        msg = f"{op} failed: {os.strerror(err)} (errno {errno.errorcode.get(err, err)})"
        super().__init__(msg + (f"; {detail}" if detail else ""))


class KvmUnavailable(KvmError):
    """/dev/kvm is missing or cannot be opened."""


_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]


def _ioctl(fd: int, request: int, arg: int | ctypes.Structure, op: str) -> int:
    if isinstance(arg, int):
        # fcntl.ioctl takes a C int argument; KVM_SET_TSS_ADDR's is wider.
        ret = _libc.ioctl(fd, request, arg)
        if ret < 0:
            raise KvmError(op, ctypes.get_errno())
        return ret
    try:
        return fcntl.ioctl(fd, request, arg, True)
    except OSError as e:
        raise KvmError(op, e.errno or 0) from None


class Kvm:
    """The system handle: /dev/kvm."""

    def __init__(self, path: str = KVM_DEVICE):
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise KvmUnavailable(
                f"open {path}", e.errno or 0, "this host needs KVM (is /dev/kvm there and yours?)"
            ) from None
        version = _ioctl(self.fd, c.KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION")
        if version != c.KVM_API_VERSION:
            os.close(self.fd)
            raise KvmError("KVM_GET_API_VERSION", errno.EPROTO, f"API version {version}")

    def check_extension(self, cap: int) -> int:
        return _ioctl(self.fd, c.KVM_CHECK_EXTENSION, cap, "KVM_CHECK_EXTENSION")

    def vcpu_mmap_size(self) -> int:
        return _ioctl(self.fd, c.KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE")

    def supported_cpuid(self) -> ctypes.Structure:
        """The host's CPUID entries (not to be changed): asked once per process tree, since
        the answer is the host's and a clone's VM is made on its way to its first request
        (KVM_GET_SUPPORTED_CPUID took 0.4 ms of a clone's 3 ms of VM creation under PVM)."""
        global _SUPPORTED_CPUID
        if _SUPPORTED_CPUID is None:
            buf = s.cpuid_buffer(256)()
            buf.nent = 256
            _ioctl(self.fd, c.KVM_GET_SUPPORTED_CPUID, buf, "KVM_GET_SUPPORTED_CPUID")
            _SUPPORTED_CPUID = buf
        return _SUPPORTED_CPUID

    def create_vm(self) -> VmFd:
        return VmFd(self, _ioctl(self.fd, c.KVM_CREATE_VM, 0, "KVM_CREATE_VM"))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class VmFd:
    """One KVM VM."""

    def __init__(self, kvm: Kvm, fd: int):
        self.kvm = kvm
        self.fd = fd

    def set_tss_addr(self, addr: int) -> None:
        _ioctl(self.fd, c.KVM_SET_TSS_ADDR, addr, "KVM_SET_TSS_ADDR")

    def set_user_memory_region(
        self, slot: int, guest_phys_addr: int, size: int, userspace_addr: int, flags: int = 0
    ) -> None:
        region = s.kvm_userspace_memory_region(
            slot=slot,
            flags=flags,
            guest_phys_addr=guest_phys_addr,
            memory_size=size,
            userspace_addr=userspace_addr,
        )
        _ioctl(self.fd, c.KVM_SET_USER_MEMORY_REGION, region, "KVM_SET_USER_MEMORY_REGION")

    def create_vcpu(self, vcpu_id: int = 0) -> VcpuFd:
        fd = _ioctl(self.fd, c.KVM_CREATE_VCPU, vcpu_id, "KVM_CREATE_VCPU")
        return VcpuFd(self, fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class VcpuFd:
    """One vCPU, with its kvm_run page mapped."""

    def __init__(self, vm: VmFd, fd: int):
        self.vm = vm
        self.fd = fd
        self._run_size = vm.kvm.vcpu_mmap_size()
        try:
            self._run_addr = hostmm.map_shared(fd, self._run_size)
        except OSError as e:
            raise KvmError("mmap(kvm_run)", e.errno or 0) from None
        self.run_struct = s.kvm_run.from_address(self._run_addr)
        # The port of the last KVM_EXIT_IO, read with one attribute access: the run loop
        # reads it at every syscall, and run_struct.exit.io.port makes two ctypes objects.
        self.exit_io_port = ctypes.c_uint16.from_address(
            self._run_addr + s.kvm_run.exit.offset + s.kvm_run_io.port.offset)
        self._stats: VcpuStats | None = None

    def run(self) -> None:
        """KVM_RUN; raises KvmError(errno EINTR) when interrupted by a signal."""
        try:
            fcntl.ioctl(self.fd, c.KVM_RUN, 0)
        except OSError as e:
            raise KvmError("KVM_RUN", e.errno or 0) from None

    def get_regs(self) -> s.kvm_regs:
        regs = s.kvm_regs()
        _ioctl(self.fd, c.KVM_GET_REGS, regs, "KVM_GET_REGS")
        return regs

    def set_regs(self, regs: s.kvm_regs) -> None:
        _ioctl(self.fd, c.KVM_SET_REGS, regs, "KVM_SET_REGS")

    def get_sregs(self) -> s.kvm_sregs:
        sregs = s.kvm_sregs()
        _ioctl(self.fd, c.KVM_GET_SREGS, sregs, "KVM_GET_SREGS")
        return sregs

    def set_sregs(self, sregs: s.kvm_sregs) -> None:
        _ioctl(self.fd, c.KVM_SET_SREGS, sregs, "KVM_SET_SREGS")

    def get_fpu(self) -> s.kvm_fpu:
        fpu = s.kvm_fpu()
        _ioctl(self.fd, c.KVM_GET_FPU, fpu, "KVM_GET_FPU")
        return fpu

    def set_fpu(self, fpu: s.kvm_fpu) -> None:
        _ioctl(self.fd, c.KVM_SET_FPU, fpu, "KVM_SET_FPU")

    def get_xsave(self) -> s.kvm_xsave:
        xsave = s.kvm_xsave()
        _ioctl(self.fd, c.KVM_GET_XSAVE, xsave, "KVM_GET_XSAVE")
        return xsave

    def set_xsave(self, xsave: s.kvm_xsave) -> None:
        _ioctl(self.fd, c.KVM_SET_XSAVE, xsave, "KVM_SET_XSAVE")

    def get_xcrs(self) -> s.kvm_xcrs:
        xcrs = s.kvm_xcrs()
        _ioctl(self.fd, c.KVM_GET_XCRS, xcrs, "KVM_GET_XCRS")
        return xcrs

    def set_xcrs(self, xcrs: s.kvm_xcrs) -> None:
        _ioctl(self.fd, c.KVM_SET_XCRS, xcrs, "KVM_SET_XCRS")

    def get_vcpu_events(self) -> s.kvm_vcpu_events:
        events = s.kvm_vcpu_events()
        _ioctl(self.fd, c.KVM_GET_VCPU_EVENTS, events, "KVM_GET_VCPU_EVENTS")
        return events

    def set_vcpu_events(self, events: s.kvm_vcpu_events) -> None:
        _ioctl(self.fd, c.KVM_SET_VCPU_EVENTS, events, "KVM_SET_VCPU_EVENTS")

    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        buf = s.msrs_buffer(len(indices))()
        buf.nmsrs = len(indices)
        for i, index in enumerate(indices):
            buf.entries[i].index = index
        got = _ioctl(self.fd, c.KVM_GET_MSRS, buf, "KVM_GET_MSRS")
        if got != len(indices):
            raise KvmError("KVM_GET_MSRS", errno.EINVAL, f"MSR {indices[got]:#x} not readable")
        return {buf.entries[i].index: buf.entries[i].data for i in range(len(indices))}

    def set_msrs(self, values: dict[int, int]) -> None:
        buf = s.msrs_buffer(len(values))()
        buf.nmsrs = len(values)
        for i, (index, data) in enumerate(values.items()):
            buf.entries[i].index = index
            buf.entries[i].data = data
        done = _ioctl(self.fd, c.KVM_SET_MSRS, buf, "KVM_SET_MSRS")
        if done != len(values):
            bad = list(values)[done]
            raise KvmError("KVM_SET_MSRS", errno.EINVAL, f"MSR {bad:#x} refused")

    def set_cpuid2(self, cpuid: ctypes.Structure) -> None:
        _ioctl(self.fd, c.KVM_SET_CPUID2, cpuid, "KVM_SET_CPUID2")

    def stats(self) -> VcpuStats:
        """This vCPU's counters (opened on first use, kept while the vCPU is)."""
        if self._stats is None:
            self._stats = VcpuStats(_ioctl(self.fd, c.KVM_GET_STATS_FD, 0, "KVM_GET_STATS_FD"))
        return self._stats

    def close(self) -> None:
        if self._stats is not None:
            self._stats.close()
            self._stats = None
        if self.fd >= 0:
            hostmm.unmap(self._run_addr, self._run_size)
            os.close(self.fd)
            self.fd = -1


class VcpuStats:
    """A vCPU's binary statistics file (KVM_GET_STATS_FD): cumulative counters by name.

    Under shadow paging, pf_fixed counts the guest page faults KVM fixed itself (a
    first touch of a page, or a write to a page shadowed read-only), which never
    reach the monitor; exits counts every VM exit, io_exits the monitor's syscalls.
    """

    HEADER = struct.Struct("<6I")  # flags, name_size, num_desc, id_offset, desc_offset, data_offset
    DESCRIPTOR = struct.Struct("<IhHII")  # flags, exponent, size, offset, bucket_size; then name

    def __init__(self, fd: int):
        self.fd = fd
        _, name_size, count, _, desc_offset, self.data_offset = self.HEADER.unpack(
            os.pread(fd, self.HEADER.size, 0))
        step = self.DESCRIPTOR.size + name_size
        table = os.pread(fd, count * step, desc_offset)
        self.offsets: dict[str, int] = {}
        self.data_size = 0
        for i in range(count):
            _, _, size, offset, _ = self.DESCRIPTOR.unpack_from(table, i * step)
            name = table[i * step + self.DESCRIPTOR.size : (i + 1) * step].split(b"\0")[0]
            self.offsets[name.decode()] = offset
            self.data_size = max(self.data_size, offset + 8 * size)

    def counter(self, name: str) -> int:
        """One counter now (0 for one this KVM does not keep): one 8-byte read (every
        invocation reads pf_fixed twice)."""
        offset = self.offsets.get(name)
        if offset is None:
            return 0
        return int.from_bytes(os.pread(self.fd, 8, self.data_offset + offset), "little")

    def read(self, names: tuple[str, ...]) -> dict[str, int]:
        """The counters `names` now (0 for one this KVM does not keep)."""
        data = os.pread(self.fd, self.data_size, self.data_offset)
        return {n: struct.unpack_from("<Q", data, self.offsets[n])[0] if n in self.offsets else 0
                for n in names}

    def close(self) -> None:
        os.close(self.fd)
