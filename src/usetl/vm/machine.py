"""One VM: guest memory, 64-bit set-up, the vCPU run loop and its exits."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from usetl import hostmm
from usetl.errors import UsetlError
from usetl.kvm import Kvm, KvmError
from usetl.kvm import constants as kc
from usetl.kvm import structs as ks

from . import layout as L
from .memory import GuestMemory, guest_memories
from .trampoline import PORT_EXCEPTION, PORT_SYSCALL, SYSCALL_OUT_OFFSET, syscall_entry_size
from .vcpu_state import VcpuState

log = logging.getLogger(__name__)

EXCEPTION_NAMES = {
    0: "divide error (#DE)",
    1: "debug (#DB)",
    3: "breakpoint (#BP)",
    4: "overflow (#OF)",
    5: "bound range (#BR)",
    6: "invalid opcode (#UD)",
    7: "device not available (#NM)",
    8: "double fault (#DF)",
    10: "invalid TSS (#TS)",
    11: "segment not present (#NP)",
    12: "stack fault (#SS)",
    13: "general protection fault (#GP)",
    14: "page fault (#PF)",
    16: "x87 floating-point error (#MF)",
    17: "alignment check (#AC)",
    18: "machine check (#MC)",
    19: "SIMD floating-point error (#XM)",
}

# The signal that kicks a vCPU out of KVM_RUN; its handler does nothing.
KICK_SIGNAL = signal.SIGUSR1
# Held by a kick (host threads: an alarm, I/O work done) and by a release of the vCPU, so that
# no kick writes to a kvm_run page that is being unmapped. One for the process, made anew in a
# forked child, where a thread that held it at the fork does not exist.
_kicks = threading.Lock()


def _new_kick_lock() -> None:
    global _kicks
    _kicks = threading.Lock()


os.register_at_fork(after_in_child=_new_kick_lock)


class VmError(UsetlError):
    """The VM could not be set up, or KVM stopped it in a way it cannot go on from."""


class GuestFault(VmError):
    """The guest took an exception: the invocation ends, naming it and the guest rip."""

    def __init__(self, vector: int, error_code: int, rip: int, address: int | None):
        self.vector = vector
        self.error_code = error_code
        self.rip = rip
        self.address = address
        name = EXCEPTION_NAMES.get(vector, f"exception {vector}")
        where = f" at address {address:#x}" if address is not None else ""
        super().__init__(f"guest {name}{where}, rip={rip:#x}, error code {error_code:#x}")


class GuestTimeout(VmError):
    """The guest ran past its deadline and was stopped."""


class SyscallHandler(Protocol):
    def handle_syscall(self, regs: ks.kvm_regs) -> Stop | None:
        """Serve the syscall in `regs` (result into regs.rax), or return why to stop."""

    def interrupted(self, regs: ks.kvm_regs) -> Stop | None:
        """The vCPU was kicked out of KVM_RUN at `regs` (wake_at): act on it (may change regs)."""

    def next_wake(self) -> float | None:
        """When (time.monotonic()) the vCPU should be kicked for the handler, if ever."""

    @property
    def vcpu_observer(self) -> VcpuObserver | None:
        """Who is told of each entry into the guest and each return from it, if anyone."""


class VcpuObserver(Protocol):
    def entering(self) -> None:
        """The guest runs next (KVM_RUN is called)."""

    def exited(self) -> None:
        """KVM_RUN returned (an exit, a kick)."""

# Where a thread stopped at a syscall exit resumes: just past the trampoline's
# port write (KVM completes that write only for the thread that made it).
SYSCALL_OUT_ADDR = L.SYSCALL_ENTRY_ADDR + SYSCALL_OUT_OFFSET
SYSCALL_RESUME_ADDR = SYSCALL_OUT_ADDR + 2  # out imm8, al
TRAMPOLINE_END = L.SYSCALL_ENTRY_ADDR + syscall_entry_size()


@dataclass
class ThreadContext:
    """What one guest thread needs on the vCPU to run: saved when another runs instead.

    regs are the general registers, rip, rsp and rflags (kvm_regs bytes);
    user_rsp is the trampoline's save slot (the thread's own rsp while it is
    in a syscall: the trampoline's stack pointer is in regs); xsave is the
    x87/SSE/AVX state, kept whole because glibc's inline syscalls may hold
    live vector registers across the instruction (under PVM the saved state
    may lack the upper YMM halves; see DESIGN.md). Segment registers are
    shared: under PVM every guest thread, in a syscall or not, runs at CPL 3
    with the same flat segments. On hardware KVM the syscall entry runs in
    ring 0, so a thread preempted in user code and one stopped in a syscall
    would differ in CS and SS too, and a context would need them.
    """

    regs: bytes
    user_rsp: int
    fs_base: int
    xsave: bytes


@dataclass(frozen=True)
class Stop:
    """Why the run loop returned: the guest exited, or it waits for the monitor."""

    reason: str  # "exit" or "pause"
    status: int = 0


def memslots(placed: list[tuple[GuestMemory, bool]]) -> list[tuple[int, int, int, bool]]:
    """(gpa, size, host address, guest-writable) of each memslot for these memories: one
    for each run of neighbours, in guest-physical and host addresses alike, that the guest
    may write alike. Registering a memslot waits for KVM's SRCU grace period (milliseconds
    on a busy host), and a clone registers its slots on the way to its first request."""
    slots: list[tuple[int, int, int, bool]] = []
    for mem, writable in sorted(placed, key=lambda p: p[0].gpa):
        if slots:
            gpa, size, addr, was_writable = slots[-1]
            if (gpa + size == mem.gpa and addr + size == mem.host_addr
                    and was_writable == writable):
                slots[-1] = (gpa, size + mem.size, addr, writable)
                continue
        slots.append((mem.gpa, mem.size, mem.host_addr, writable))
    return slots


def _ignore(signum: int, frame: object) -> None:
    pass


@dataclass
class RegionSpec:
    name: str
    gpa: int
    size: int
    guest_writable: bool


class Vm:
    """A KVM VM with its RAM at guest-physical 0, further regions above, one vCPU.

    Under PVM one VM with memory per process works reliably, so a process
    holds at most one Vm (clones are separate processes).
    """

    def __init__(
        self,
        mem_mib: int = 256,
        regions: list[RegionSpec] | None = None,
        memory: dict[str, GuestMemory] | None = None,
    ):
        """A new VM; `memory` (a clone's) reuses existing guest memory: "ram" and each region."""
        if mem_mib < 16 or mem_mib % 2:
            raise VmError(f"guest memory must be an even number of MiB >= 16, not {mem_mib}")
        self.specs = list(regions or [])
        self.kvm = Kvm()
        for cap, name in (
            (kc.KVM_CAP_SYNC_REGS, "KVM_CAP_SYNC_REGS"),
            (kc.KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"),
        ):
            if not self.kvm.check_extension(cap):
                raise VmError(f"this KVM lacks {name}, which usetl needs")
        self.vmfd = self.kvm.create_vm()
        # Under PVM, memslots are refused unless the TSS address is set first.
        self.vmfd.set_tss_addr(L.KVM_TSS_ADDR)
        fresh = memory is None
        if memory is None:
            memory = guest_memories([("ram", 0, mem_mib << 20, None),
                                     *((s.name, s.gpa, s.size, None) for s in self.specs)])
        self.ram = memory["ram"]
        self.regions = {spec.name: memory[spec.name] for spec in self.specs}
        mappings = [(0, self.ram.size, True),
                    *((s.gpa, s.size, s.guest_writable) for s in self.specs)]
        placed = [(self.ram, True), *((self.regions[s.name], s.guest_writable)
                                      for s in self.specs)]
        for slot, (gpa, size, addr, writable) in enumerate(memslots(placed)):
            flags = 0 if writable else kc.KVM_MEM_READONLY
            self.vmfd.set_user_memory_region(slot, gpa, size, addr, flags)
        self.vcpu = self.vmfd.create_vcpu(0)
        self.run_struct = self.vcpu.run_struct
        self.cpuid = self.kvm.supported_cpuid()
        self.vcpu.set_cpuid2(self.cpuid)
        if fresh:
            L.write_system_tables(self.ram, mappings)
            self._setup_vcpu()
        self._deadline_hit = False
        self.closed = False
        self._released = False
        # Every return from KVM_RUN into this process (an exit, a kick): the floor of every
        # latency here, so invocations and benchmarks count them.
        self.exits = 0
        # The monitor wrote FS_BASE since the last exit stored the segment registers in
        # kvm_run: reset_to() cannot trust that copy.
        self._fs_written = False
        self._wake_pending = False
        self._thread_id: int | None = None
        self._alarm: _Alarm | None = None
        self._deadline: _Alarm | None = None  # run()'s timeout: a thread made once, not per run
        if threading.current_thread() is threading.main_thread():
            signal.signal(KICK_SIGNAL, _ignore)

    def _setup_vcpu(self) -> None:
        cpuid = self.cpuid
        sregs = self.vcpu.get_sregs()
        code = ks.kvm_segment(
            base=0, limit=L.FLAT_SEGMENT_LIMIT, selector=L.USER_CS, type=11, present=1, dpl=3,
            db=0, s=1, l=1, g=1,
        )
        data = ks.kvm_segment(
            base=0, limit=L.FLAT_SEGMENT_LIMIT, selector=L.USER_DS, type=3, present=1, dpl=3,
            db=1, s=1, l=0, g=1,
        )
        sregs.cs = code
        sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data
        sregs.tr = ks.kvm_segment(
            base=L.TSS_ADDR, limit=L.TSS_LIMIT, selector=L.TSS_SELECTOR, type=11, present=1,
            dpl=0, db=0, s=0, l=0, g=0,
        )
        sregs.ldt = ks.kvm_segment(unusable=1)
        sregs.gdt = ks.kvm_dtable(base=L.GDT_ADDR, limit=L.TSS_SELECTOR + 15)
        sregs.idt = ks.kvm_dtable(base=L.IDT_ADDR, limit=16 * 256 - 1)
        sregs.cr0 = L.CR0
        sregs.cr3 = L.PML4_ADDR
        sregs.cr4 = L.CR4
        sregs.efer = L.EFER
        self.vcpu.set_sregs(sregs)
        xcrs = self.vcpu.get_xcrs()
        xcrs.nr_xcrs = 1
        xcrs.xcrs[0].xcr = 0
        xcrs.xcrs[0].value = self._supported_xcr0(cpuid) & 0x7
        try:
            self.vcpu.set_xcrs(xcrs)
        except KvmError as e:
            log.debug("XCR0 left at its default: %s", e)
        self.vcpu.set_msrs(
            {
                L.MSR_STAR: L.STAR,
                L.MSR_LSTAR: L.SYSCALL_ENTRY_ADDR,
                L.MSR_SFMASK: L.SFMASK,
                L.MSR_FS_BASE: 0,
                L.MSR_GS_BASE: 0,
                L.MSR_KERNEL_GS_BASE: 0,
            }
        )

    @staticmethod
    def _supported_xcr0(cpuid: ctypes.Structure) -> int:
        for i in range(cpuid.nent):
            e = cpuid.entries[i]
            if e.function == 0xD and e.index == 0:
                return e.eax | 1
        return 1

    # -- entering and running ------------------------------------------------

    def enter_user(self, rip: int, rsp: int) -> None:
        """Point the vCPU at ring-3 code: rip, rsp, rdx=0 (no atexit function)."""
        regs = ks.kvm_regs()
        regs.rip = rip
        regs.rsp = rsp
        regs.rflags = L.RFLAGS_RESERVED
        self.vcpu.set_regs(regs)

    @property
    def regs(self) -> ks.kvm_regs:
        """The vCPU registers as of the last exit (KVM_CAP_SYNC_REGS)."""
        return self.run_struct.s.regs.regs

    def mark_regs_dirty(self) -> None:
        """Have the next KVM_RUN load the registers changed through `regs` (and whatever
        else reset_to() left for it)."""
        self.run_struct.kvm_dirty_regs |= kc.KVM_SYNC_X86_REGS

    def set_fs_base(self, value: int) -> None:
        """The FS base (MSR_FS_BASE), set through the segment registers: under PVM
        KVM_SET_MSRS costs about four times KVM_GET_SREGS plus KVM_SET_SREGS (28 against
        14 µs on the AMD hosts), and SET_SREGS keeps KVM's shadow page tables while the
        control registers stay as they are (no thread or arch_prctl changes those)."""
        sregs = self.vcpu.get_sregs()
        sregs.fs.base = value
        self.vcpu.set_sregs(sregs)
        self._fs_written = True

    def fs_base(self) -> int:
        """MSR_FS_BASE, which is the FS base KVM_GET_SREGS reads (a quarter of the cost of
        KVM_GET_MSRS under PVM)."""
        return self.vcpu.get_sregs().fs.base

    def run(self, handler: SyscallHandler, timeout: float | None = None) -> Stop:
        """Run until the handler asks to stop; raise GuestFault or GuestTimeout."""
        run = self.run_struct
        vcpu = self.vcpu
        regs = run.s.regs.regs
        exit_port = vcpu.exit_io_port
        sync_regs = kc.KVM_SYNC_X86_REGS
        # The segment registers too, for reset_to() to compare without a KVM_GET_SREGS.
        run.kvm_valid_regs = kc.KVM_SYNC_X86_REGS | kc.KVM_SYNC_X86_SREGS
        self._thread_id = threading.get_ident()
        if timeout is not None:
            if self._deadline is None:
                self._deadline = _Alarm(self.interrupt)
            self._deadline.set(time.monotonic() + timeout)
        self.wake_at(handler.next_wake())
        try:
            while True:
                observer = handler.vcpu_observer
                if observer is not None:
                    observer.entering()
                try:
                    vcpu.run()
                except KvmError as e:
                    self.exits += 1
                    if observer is not None:
                        observer.exited()
                    if e.errno != errno.EINTR:
                        raise
                    stop = self._kicked(handler, timeout)
                    if stop is not None:
                        return stop
                    continue
                self.exits += 1
                if observer is not None:
                    observer.exited()
                reason = run.exit_reason
                if reason == kc.KVM_EXIT_IO:
                    port = exit_port.value
                    if port == PORT_SYSCALL:
                        stop = handler.handle_syscall(regs)
                        run.kvm_dirty_regs = sync_regs
                        if stop is not None:
                            return stop
                        continue
                    if port == PORT_EXCEPTION:
                        raise self._fault()
                self._unexpected_exit(reason)
        finally:
            if self._deadline is not None:
                self._deadline.set(None)
            self.wake_at(None)

    def _kicked(self, handler: SyscallHandler, timeout: float | None) -> Stop | None:
        """KVM_RUN was interrupted: by the deadline (GuestTimeout), or by a wake the handler
        asked for (its answer); a stray signal changes nothing."""
        run = self.run_struct
        if self._deadline_hit:
            run.immediate_exit = 0
            self._deadline_hit = False
            raise GuestTimeout(f"guest ran past its {timeout:g} s deadline and was stopped") \
                from None
        if not self._wake_pending:
            return None
        self._wake_pending = False
        run.immediate_exit = 0
        stop = handler.interrupted(run.s.regs.regs)
        run.kvm_dirty_regs = kc.KVM_SYNC_X86_REGS
        return stop

    def wake_at(self, when: float | None) -> None:
        """Kick the running vCPU out of KVM_RUN at `when` (time.monotonic()) for the
        handler's interrupted(); None cancels. One wake is kept: a new one replaces it.

        One alarm thread per VM waits on a Condition for the time (the
        scheduler sets a wake at every switch: no timer thread per wake).
        """
        if self._alarm is None:
            if when is None:
                return
            self._alarm = _Alarm(self._wake)
        self._alarm.set(when)

    def _wake(self) -> None:
        self._wake_pending = True
        self._kick()

    def _kick(self) -> None:
        with _kicks:
            if self._released:  # its vCPU is gone: nothing runs to kick
                return
            self.run_struct.immediate_exit = 1
            if self._thread_id is not None:
                try:
                    signal.pthread_kill(self._thread_id, KICK_SIGNAL)
                except ProcessLookupError:
                    pass

    @property
    def deadline_hit(self) -> bool:
        """Has run()'s deadline passed? A syscall handler that waits on the host checks this."""
        return self._deadline_hit

    def interrupt(self) -> None:
        """Stop a running vCPU from another thread (the deadline)."""
        self._deadline_hit = True
        self._kick()

    def wake_now(self) -> None:
        """wake_at(now), from any thread (a host thread whose work a guest thread waits for)."""
        self._wake()

    # -- guest threads sharing the vCPU ------------------------------------------

    def save_context(self) -> ThreadContext:
        """The running thread's state, taken at an exit (a syscall or a kick)."""
        regs = ks.kvm_regs.from_buffer_copy(self.run_struct.s.regs.regs)
        if regs.rip == SYSCALL_OUT_ADDR:
            regs.rip = SYSCALL_RESUME_ADDR
        return ThreadContext(bytes(regs), self.ram.u64(L.SAVE_RSP_ADDR), self.fs_base(),
                             bytes(self.vcpu.get_xsave()))

    def load_context(self, ctx: ThreadContext) -> None:
        """Put a saved thread on the vCPU; its registers load on the next KVM_RUN."""
        ctypes.memmove(ctypes.addressof(self.run_struct.s.regs.regs), ctx.regs, len(ctx.regs))
        self.mark_regs_dirty()
        self.ram.put_u64(L.SAVE_RSP_ADDR, ctx.user_rsp)
        self.set_fs_base(ctx.fs_base)
        self.vcpu.set_xsave(ks.kvm_xsave.from_buffer_copy(ctx.xsave))

    def answer_getpid(self, pid: int) -> None:
        """Have the syscall entry answer getpid with `pid`, with no exit (0: exit for it)."""
        self.ram.put_u64(L.PID_ADDR, pid)

    @staticmethod
    def in_trampoline(rip: int) -> bool:
        """Is rip inside the syscall entry (whose stack and save slot all threads share)?"""
        return L.SYSCALL_ENTRY_ADDR <= rip < TRAMPOLINE_END

    def _fault(self) -> GuestFault:
        regs = self.run_struct.s.regs.regs
        frame = self.ram.read(regs.rsp, 8 * 7)
        vector, error_code, rip = (int.from_bytes(frame[i : i + 8], "little") for i in (0, 8, 16))
        address = self.vcpu.get_sregs().cr2 if vector == 14 else None
        return GuestFault(vector, error_code, rip, address)

    def _unexpected_exit(self, reason: int) -> None:
        name = kc.EXIT_REASON_NAMES.get(reason, str(reason))
        regs = self.run_struct.s.regs.regs
        detail = ""
        if reason == kc.KVM_EXIT_SHUTDOWN:
            raise VmError(f"guest triple fault (KVM_EXIT_SHUTDOWN) near rip={regs.rip:#x}")
        if reason == kc.KVM_EXIT_INTERNAL_ERROR:
            detail = f", suberror {self.run_struct.exit.internal.suberror}"
        elif reason == kc.KVM_EXIT_IO:
            io = self.run_struct.exit.io
            detail = f", port {io.port:#x}"
        elif reason == kc.KVM_EXIT_MMIO:
            mmio = self.run_struct.exit.mmio
            detail = f", {'write' if mmio.is_write else 'read'} at {mmio.phys_addr:#x}"
        raise VmError(f"unexpected VM exit {name}{detail} at rip={regs.rip:#x}")

    # -- state capture (templates and clones) ------------------------------------

    def memory(self) -> dict[str, GuestMemory]:
        return {"ram": self.ram, **self.regions}

    def inherit_on_fork(self, inherit: bool) -> None:
        """Whether a host fork of this process maps this VM's memory in the child. A fork
        write-protects the private pages it shares, and each page's next store from the
        guest is then a KVM fault: a child that never uses the memory should not get it."""
        for mem in self.memory().values():
            hostmm.inherit_on_fork(mem.host_addr, mem.size, inherit)

    def settle(self) -> None:
        """Complete the port write the vCPU stopped in, so its state is whole.

        After a PIO exit KVM finishes the instruction on the next KVM_RUN;
        with immediate_exit set, that KVM_RUN does only this and returns EINTR.
        """
        run = self.run_struct
        run.immediate_exit = 1
        try:
            self.vcpu.run()
        except KvmError as e:
            if e.errno != errno.EINTR:
                raise
        finally:
            # A kick that came meanwhile must still stop the next KVM_RUN.
            run.immediate_exit = 1 if self._deadline_hit or self._wake_pending else 0

    def save_state(self) -> VcpuState:
        """The vCPU's state; call settle() first if it stopped at an exit."""
        v = self.vcpu
        return VcpuState(
            regs=v.get_regs(), sregs=v.get_sregs(), fpu=v.get_fpu(), xsave=v.get_xsave(),
            xcrs=v.get_xcrs(), events=v.get_vcpu_events(), msrs=v.get_msrs(L.SAVED_MSRS),
        )

    def restore_state(self, state: VcpuState) -> None:
        v = self.vcpu
        # KVM_SET_SREGS drops KVM's shadow page tables, which every page then
        # faults back in; a rollback usually finds them unchanged.
        cur = v.get_sregs()
        if bytes(cur) != bytes(state.sregs):
            v.set_sregs(state.sregs)
        v.set_msrs(state.msrs)
        try:
            v.set_xcrs(state.xcrs)
        except KvmError as e:
            log.debug("XCRs not restored: %s", e)
        v.set_xsave(state.xsave)
        v.set_fpu(state.fpu)
        v.set_vcpu_events(state.events)
        v.set_regs(state.regs)
        # The syscall path reads and writes registers through kvm_run.
        ctypes.memmove(ctypes.addressof(self.run_struct.s.regs.regs),
                       ctypes.addressof(state.regs), ctypes.sizeof(state.regs))

    def reset_to(self, state: VcpuState) -> None:
        """restore_state() for a vCPU that was restored to `state` and has run since (a
        rollback): only what can have changed is set again. Ring-3 code cannot write MSRs
        or XCR0 (XSETBV), nor, without CR4.FSGSBASE, the segment bases except by loading a
        selector; the one MSR the monitor writes, FS_BASE, is the FS base KVM_GET_SREGS
        reads. So the segment registers are compared, and set with FS_BASE only where they
        differ. The x87/SSE/AVX state is all in the XSAVE area; the registers and the
        events load from kvm_run on the next KVM_RUN. A vCPU ioctl costs about half a VM
        exit under PVM: the segment registers are compared as the last exit stored them in
        kvm_run (KVM_SYNC_X86_SREGS), unless the monitor wrote FS_BASE since."""
        v, run = self.vcpu, self.run_struct
        if self._fs_written or bytes(run.s.regs.sregs) != bytes(state.sregs):
            v.set_sregs(state.sregs)  # FS_BASE with them: sregs.fs.base is that MSR
            self._fs_written = False
        v.set_xsave(state.xsave)
        for field in ("regs", "events"):
            ctypes.memmove(ctypes.addressof(getattr(run.s.regs, field)),
                           ctypes.addressof(getattr(state, field)),
                           ctypes.sizeof(getattr(state, field)))
        run.kvm_dirty_regs |= kc.KVM_SYNC_X86_REGS | kc.KVM_SYNC_X86_EVENTS

    def release(self) -> None:
        """Close the VM and its vCPU but keep the guest memory (a template's)."""
        with _kicks:
            self._released = True
        self.vcpu.close()
        self.vmfd.close()
        self.kvm.close()

    def close(self) -> None:
        """Release the VM and its guest memory; a second close does nothing."""
        if self.closed:
            return
        self.closed = True
        self.release()
        for mem in self.regions.values():
            mem.close()
        self.ram.close()


ALARM_MAX_WAIT = 3600.0  # a guest's far-off timeout must not overflow Condition.wait


class _Alarm:
    """A thread that calls `kick` once at the time last set (a Condition, no timer per kick)."""

    def __init__(self, kick):
        self._kick = kick
        self._cond = threading.Condition()
        self._when: float | None = None
        self._armed: float | None = None  # when the thread's wait ends (None: at a notify)
        threading.Thread(target=self._run, name="usetl-vcpu-alarm", daemon=True).start()

    def set(self, when: float | None) -> None:
        with self._cond:
            self._when = when
            # Only an earlier time needs the thread now: a later one (or none) it finds when
            # its wait ends. Waking it at every run's start and end was two thread switches
            # per invocation (about a millisecond each on a loaded host).
            if when is not None and (self._armed is None or when < self._armed):
                self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                if self._when is None:
                    self._armed = None
                    self._cond.wait()
                    continue
                left = self._when - time.monotonic()
                if left > 0:
                    wait = min(left, ALARM_MAX_WAIT)
                    self._armed = time.monotonic() + wait
                    self._cond.wait(wait)
                    continue
                self._when = None
                self._kick()
