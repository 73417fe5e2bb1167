"""The vm layer alone: hand-assembled ring-3 code in a real KVM VM."""

import struct

import pytest

from usetl.vm import GuestFault, GuestTimeout, Stop, Vm
from usetl.vm import layout as L

pytestmark = pytest.mark.kvm

SYS_WRITE, SYS_EXIT = 1, 60


class Recorder:
    """A syscall handler that records calls, echoes writes and stops on exit."""

    vcpu_observer = None

    def __init__(self, vm):
        self.vm = vm
        self.calls = []
        self.written = b""

    def handle_syscall(self, regs):
        self.calls.append((regs.rax, regs.rdi, regs.rsi, regs.rdx))
        if regs.rax == SYS_WRITE:
            self.written += self.vm.ram.read(regs.rsi, regs.rdx)
            regs.rax = regs.rdx
            return None
        if regs.rax == SYS_EXIT:
            return Stop("exit", regs.rdi)
        regs.rax = 1000 + len(self.calls)
        return None

    def interrupted(self, regs):
        return None

    def next_wake(self):
        return None


def write_then_exit(message: bytes, status: int) -> bytes:
    # mov eax,1; mov edi,1; lea rsi,[rip+msg]; mov edx,len; syscall;
    # mov edi,eax (the result); mov eax,60; syscall; msg
    code = b"\xb8\x01\x00\x00\x00\xbf\x01\x00\x00\x00"
    code += b"\x48\x8d\x35" + struct.pack("<i", 5 + 2 + 2 + 5 + 2)
    code += b"\xba" + struct.pack("<I", len(message)) + b"\x0f\x05"
    code += b"\x89\xc7" + b"\xb8\x3c\x00\x00\x00" + b"\x0f\x05"
    return code + message


@pytest.fixture
def vm():
    machine = Vm(mem_mib=32)
    yield machine
    machine.close()


def start(vm, code):
    vm.ram.write(L.USER_START, code)
    vm.enter_user(L.USER_START, vm.ram.end - 4096)


def test_ring3_code_makes_syscalls_and_gets_results(vm):
    start(vm, write_then_exit(b"hello from ring 3\n", 0))
    rec = Recorder(vm)
    stop = vm.run(rec)
    assert rec.written == b"hello from ring 3\n"
    # exit's status is write's return value: the result reached the guest's rax
    assert stop == Stop("exit", len(b"hello from ring 3\n"))


def test_registers_survive_the_trampoline(vm):
    # mov rbx, 0x1122334455667788; mov eax, 39; syscall; mov rdi, rbx; mov eax, 60; syscall
    code = b"\x48\xbb" + struct.pack("<Q", 0x1122334455667788)
    code += b"\xb8\x27\x00\x00\x00\x0f\x05\x48\x89\xdf\xb8\x3c\x00\x00\x00\x0f\x05"
    start(vm, code)
    stop = vm.run(Recorder(vm))
    assert stop.status == 0x1122334455667788


def test_null_dereference_is_a_page_fault_naming_the_address(vm):
    start(vm, b"\x48\x31\xc0\x48\x8b\x00")  # xor rax,rax; mov rax,[rax]
    with pytest.raises(GuestFault) as info:
        vm.run(Recorder(vm))
    assert info.value.vector == 14
    assert info.value.address == 0
    assert info.value.rip == L.USER_START + 3
    assert "page fault" in str(info.value)


def test_supervisor_tables_are_not_reachable_from_ring3(vm):
    # mov rax, GDT_ADDR; mov qword [rax], 0  -> a protection fault, tables intact
    start(vm, b"\x48\xc7\xc0" + struct.pack("<I", L.GDT_ADDR) + b"\x48\xc7\x00\x00\x00\x00\x00")
    before = vm.ram.read(L.GDT_ADDR, 64)
    with pytest.raises(GuestFault) as info:
        vm.run(Recorder(vm))
    assert info.value.vector == 14 and info.value.error_code & 1  # present, not allowed
    assert vm.ram.read(L.GDT_ADDR, 64) == before


def test_invalid_opcode_is_reported(vm):
    start(vm, b"\x0f\x0b")  # ud2
    with pytest.raises(GuestFault) as info:
        vm.run(Recorder(vm))
    assert info.value.vector == 6


def test_stack_overflow_hits_the_guard(vm):
    # Below the stack's 8 MiB the page tables leave a hole: pushing past it faults.
    start(vm, b"\x50\xeb\xfd")  # l: push rax; jmp l
    with pytest.raises(GuestFault) as info:
        vm.run(Recorder(vm), timeout=30)
    assert info.value.vector == 14
    lo, hi = L.stack_guard(vm.ram.size)
    assert lo <= info.value.address < hi


def test_deadline_stops_an_infinite_loop(vm):
    start(vm, b"\xeb\xfe")  # jmp $
    with pytest.raises(GuestTimeout):
        vm.run(Recorder(vm), timeout=0.2)


def test_fs_base_set_is_what_fs_relative_loads_use(vm):
    # mov rdi, fs:[0]; mov eax, 60; syscall: the exit status is the quadword at the FS base
    start(vm, b"\x64\x48\x8b\x3c\x25\x00\x00\x00\x00" + b"\xb8\x3c\x00\x00\x00\x0f\x05")
    vm.ram.put_u64(0x800000, 0x1234_5678_9ABC)
    vm.set_fs_base(0x800000)
    assert vm.fs_base() == 0x800000
    assert vm.run(Recorder(vm)) == Stop("exit", 0x1234_5678_9ABC)


class FsSwitcher(Recorder):
    """Sets a new FS base at every syscall, as a thread switch does; KVM's counters taken
    after the first round (which faults the pages in) and at the last."""

    def __init__(self, vm, rounds):
        super().__init__(vm)
        self.rounds = rounds
        self.faults: list[int] = []

    def handle_syscall(self, regs):
        self.calls.append(regs.rax)
        self.vm.set_fs_base(0x1000 * len(self.calls))
        if len(self.calls) in (1, self.rounds):
            self.faults.append(self.vm.vcpu.stats().read(("pf_fixed",))["pf_fixed"])
        return Stop("exit") if len(self.calls) == self.rounds else None


def test_setting_the_fs_base_keeps_the_shadow_page_tables(vm):
    # Each round reads one byte of each of 256 pages, then makes a syscall. set_fs_base goes
    # through KVM_SET_SREGS: were KVM's page tables dropped there, every round would fault
    # all 256 pages in again.
    pages = 256
    code = (b"\x48\xc7\xc1" + struct.pack("<I", pages)  # mov rcx, pages
            + b"\x48\xc7\xc3\x00\x00\x80\x00"  # mov rbx, 0x800000
            + b"\x8a\x03" + b"\x48\x81\xc3\x00\x10\x00\x00"  # l: mov al, [rbx]; add rbx, 4096
            + b"\x48\xff\xc9\x75\xf2"  # dec rcx; jnz l
            + b"\xb8\x27\x00\x00\x00\x0f\x05")  # mov eax, 39; syscall
    start(vm, code + b"\xeb" + bytes([-(len(code) + 2) & 0xFF]))  # jmp to the start
    switcher = FsSwitcher(vm, rounds=20)
    assert vm.run(switcher) == Stop("exit")
    first, last = switcher.faults
    assert last - first < pages


def test_a_kick_that_comes_after_the_close_does_nothing():
    """A host thread's kick (its I/O work done, an alarm) can race the VM's close: it must not
    write to the kvm_run page the close unmapped (in a forked child: that was a segfault)."""
    import os

    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            machine = Vm(mem_mib=32)
            machine.close()
            machine.wake_now()
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
