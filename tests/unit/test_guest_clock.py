"""The guest's clocks as the monitor reads them, and the deadlines judged on them."""

import contextlib
import ctypes
import mmap
import time
from types import SimpleNamespace

import pytest

from usetl.libos.clock import MONOTONIC, REALTIME, Deadline, GuestClock
from usetl.libos.errors import SyscallError
from usetl.libos.vdso import CLOCK_GETTIME_CODE, CPU, DATA, VdsoClock, tsc_usable
from usetl.vm.layout import VDSO_DATA_ADDR
from usetl.vm.memory import GuestMemory

pytestmark = pytest.mark.skipif(not tsc_usable(), reason="no invariant TSC: no vDSO")


class SlowRate(VdsoClock):
    """A calibration slow by far more than one taken under load can be (0.2%, 1.7% at
    worst, measured): between anchors the guest's clock runs at half the host's."""

    def _mult(self, now: tuple[int, int, int]) -> int:
        return super()._mult(now) // 2


@pytest.fixture(scope="module")
def ram():
    mem = GuestMemory("ram", 0, 4 << 20)
    yield mem
    mem.close()


def guest(ram, vdso):
    """The clocks of a guest whose RAM is `ram` (the kernel's part GuestClock reads)."""
    vdso.install(ram)
    return GuestClock(SimpleNamespace(vm=SimpleNamespace(ram=ram)), vdso)


@contextlib.contextmanager
def vdso_code(ram):
    """The vDSO's clock_gettime called here, with the data page the guest would see (a copy
    of `ram`'s, taken at each call)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    map_fixed_noreplace, prot, flags = 0x100000, 3, 0x22
    page = libc.mmap(VDSO_DATA_ADDR, 4096, prot, flags | map_fixed_noreplace, -1, 0)
    if page != VDSO_DATA_ADDR:
        pytest.skip("the vDSO data page's address is taken in this process")
    code = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    code.write(CLOCK_GETTIME_CODE)
    gettime = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)(
        ctypes.addressof(ctypes.c_char.from_buffer(code)))
    ts = (ctypes.c_int64 * 2)()

    def read(clock_id: int) -> int:
        size = DATA.size + CPU.size
        ctypes.memmove(VDSO_DATA_ADDR, ram.read(VDSO_DATA_ADDR, size), size)
        assert gettime(clock_id, ctypes.addressof(ts)) == 0
        return ts[0] * 1_000_000_000 + ts[1]

    try:
        yield read
    finally:
        code.close()
        libc.munmap(ctypes.c_void_p(VDSO_DATA_ADDR), ctypes.c_size_t(4096))


def test_the_monitor_reads_the_guest_clock_as_the_vdso_code_computes_it(ram):
    clock = guest(ram, SlowRate())
    with vdso_code(ram) as read:
        for clock_id, which in ((1, MONOTONIC), (0, REALTIME), (7, MONOTONIC)):
            before = clock.ns(which)
            ns = read(clock_id)
            assert before <= ns <= clock.ns(which)


def test_the_vdso_cpu_clocks_go_on_from_what_was_published_else_ask_the_kernel(ram):
    vdso = SlowRate()
    vdso.install(ram)
    with vdso_code(ram) as read:
        host = time.clock_gettime_ns(time.CLOCK_PROCESS_CPUTIME_ID)
        assert host <= read(2) <= time.clock_gettime_ns(time.CLOCK_PROCESS_CPUTIME_ID)
        process, thread = 5 * 10**9, 7 * 10**9
        tsc = vdso.tsc.read()
        vdso.publish_cpu(ram, tsc, process, thread)
        for clock_id, base in ((2, process), (3, thread)):
            ns = read(clock_id)
            ran = vdso.since_anchor(ram, vdso.tsc.read()) - vdso.since_anchor(ram, tsc)
            assert base <= ns <= base + ran
        vdso.withdraw_cpu(ram)
        assert read(3) <= time.clock_gettime_ns(time.CLOCK_THREAD_CPUTIME_ID)


def test_a_deadline_is_reached_on_the_guest_clock_when_it_runs_slow(ram):
    clock = guest(ram, SlowRate())
    guest0, host0 = clock.ns(MONOTONIC), time.monotonic()
    deadline = clock.after(0.1)
    time.sleep(clock.host_at(deadline) - time.monotonic())
    assert not clock.reached(deadline)  # the host's 0.1 s is the guest's 0.05 s
    looks = 1
    while not clock.reached(deadline):  # each look waits what the guest's clock has left
        time.sleep(max(clock.host_at(deadline) - time.monotonic(), 0.0))
        looks += 1
    assert clock.ns(MONOTONIC) - guest0 >= 100_000_000
    assert time.monotonic() - host0 >= 0.2 and looks < 40


def test_an_absolute_deadline_names_its_clock(ram):
    clock = guest(ram, VdsoClock())
    wall = clock.ns(REALTIME)
    assert abs(wall - time.time_ns()) < 50_000_000  # the guest's wall time is the host's
    assert clock.at(0, wall + 50_000_000) == Deadline(REALTIME, wall + 50_000_000)
    assert clock.at(1, 5) == Deadline(MONOTONIC, 5)
    assert clock.reached(Deadline(REALTIME, wall)) and not clock.reached(clock.at(0, wall + 10**9))
    assert 0.9 < clock.left(Deadline(REALTIME, wall + 10**9)) <= 1.0
    with pytest.raises(SyscallError):
        clock.at(2, 0)  # CPU time: no guest clock
    assert Deadline(MONOTONIC, 5).shifted(10) == Deadline(MONOTONIC, 15)


def test_an_anchor_never_steps_the_monotonic_clock_back(ram):
    vdso = VdsoClock()
    clock = guest(ram, vdso)
    tsc, mono, real, mult = DATA.unpack(ram.read(VDSO_DATA_ADDR, DATA.size))
    ahead = mono + 10**9  # a guest whose clock ran ahead of the host's
    ram.write(VDSO_DATA_ADDR, DATA.pack(tsc, ahead, real, mult))
    clock.anchor()
    assert clock.ns(MONOTONIC) >= ahead
    # A TSC that went back (a snapshot from before the host rebooted): none elapsed.
    ram.write(VDSO_DATA_ADDR, DATA.pack(tsc + (1 << 50), ahead, real, mult))
    clock.anchor()
    assert ahead <= clock.ns(MONOTONIC) < ahead + 10**9
    assert abs(clock.ns(REALTIME) - time.time_ns()) < 50_000_000


def test_a_child_program_s_clock_goes_on_from_its_parent_s(ram):
    parent = guest(ram, VdsoClock())
    floor = parent.ns(MONOTONIC) + 10**9  # a parent whose clock ran ahead of the host's
    child_ram = GuestMemory("ram", 0, 4 << 20)
    try:
        child = parent.for_child(SimpleNamespace(vm=SimpleNamespace(ram=child_ram)), floor)
        assert child.ns(MONOTONIC) >= floor
        assert abs(child.ns(REALTIME) - time.time_ns()) < 50_000_000
    finally:
        child_ram.close()


def test_without_a_vdso_the_guest_clocks_are_the_host_s(ram):
    clock = GuestClock(SimpleNamespace(vm=SimpleNamespace(ram=ram)))
    before = time.monotonic_ns()
    assert before <= clock.of_id(1) <= time.monotonic_ns()
    assert clock.of_id(2) > 0  # the process's CPU time, the host's
    with pytest.raises(SyscallError):
        clock.of_id(99)
