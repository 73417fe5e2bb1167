"""usetl.libos.mm.AddressSpace over real guest memory (a memfd; no /dev/kvm needed).

RAM is 64 MiB at GPA 0: the stack is its top 8 MiB, a 2 MiB guard below it,
and mmap areas are placed top-down below the guard. The program break starts
at 5 MiB with a 8 MiB reserve, so mmaps stay above 13 MiB.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator

import pytest

from usetl.libos.errors import SyscallError
from usetl.libos.mm import STACK_GUARD, STACK_SIZE, AddressSpace
from usetl.vm.layout import PAGE_SIZE, USER_START
from usetl.vm.memory import GuestMemory

MiB = 1 << 20
RAM_SIZE = 64 * MiB
BRK_BASE = USER_START + MiB
BRK_LIMIT = 8 * MiB
MMAP_TOP = RAM_SIZE - STACK_SIZE - STACK_GUARD
FLOOR = BRK_BASE + BRK_LIMIT


@pytest.fixture(scope="module")
def ram() -> Iterator[GuestMemory]:
    mem = GuestMemory("t", 0, RAM_SIZE)
    yield mem
    mem.close()


@pytest.fixture
def mm(ram: GuestMemory) -> AddressSpace:
    """A fresh address space; RAM is zeroed first (free memory must read as zero)."""
    ram.zero(0, RAM_SIZE)
    space = AddressSpace(ram, brk_limit=BRK_LIMIT)
    space.set_brk_base(BRK_BASE)
    return space


def fill(ram: GuestMemory, addr: int, length: int, byte: int = 0xAB) -> None:
    ram.view[addr : addr + length] = bytes([byte]) * length


def is_zero(ram: GuestMemory, addr: int, length: int) -> bool:
    return ram.read(addr, length) == bytes(length)


def errno_of(excinfo: pytest.ExceptionInfo[SyscallError]) -> int:
    return excinfo.value.errno


def areas(mm: AddressSpace) -> list[tuple[int, int]]:
    return [(a.start, a.end) for a in mm.areas]


def assert_consistent(mm: AddressSpace) -> None:
    """Areas sorted, non-empty, non-overlapping; `starts` mirrors them."""
    assert mm.starts == [a.start for a in mm.areas]
    for a in mm.areas:
        assert a.start < a.end
        assert a.start % PAGE_SIZE == 0 and a.end % PAGE_SIZE == 0
    for a, b in zip(mm.areas, mm.areas[1:], strict=False):
        assert a.end <= b.start


# -- mmap ---------------------------------------------------------------------------


def test_fresh_space_has_only_the_stack(mm: AddressSpace) -> None:
    assert areas(mm) == [(RAM_SIZE - STACK_SIZE, RAM_SIZE)]
    assert mm.mmap_top == MMAP_TOP
    assert mm.mapped_bytes == STACK_SIZE


def test_non_fixed_maps_are_aligned_disjoint_and_below_the_guard(mm: AddressSpace) -> None:
    got = []
    for length in (1, PAGE_SIZE, PAGE_SIZE + 1, 3 * PAGE_SIZE, MiB + 17, 5):
        start = mm.map(0, length, False, False, "[anon]")
        rounded = -(-length // PAGE_SIZE) * PAGE_SIZE
        assert start % PAGE_SIZE == 0
        assert FLOOR <= start and start + rounded <= MMAP_TOP
        got.append((start, start + rounded))
        assert mm.is_mapped(start, start + rounded)
    got.sort()
    for (_, end), (start, _) in zip(got, got[1:], strict=False):
        assert end <= start
    assert_consistent(mm)
    # The guard below the stack is never handed out.
    assert not mm.overlaps(MMAP_TOP, RAM_SIZE - STACK_SIZE)


def test_fresh_mapping_reads_zero(mm: AddressSpace, ram: GuestMemory) -> None:
    start = mm.map(0, 4 * PAGE_SIZE, False, False, "[anon]")
    assert is_zero(ram, start, 4 * PAGE_SIZE)


def test_hint_is_used_when_free(mm: AddressSpace) -> None:
    hint = 20 * MiB
    assert mm.map(hint, PAGE_SIZE, False, False, "[anon]") == hint
    # taken now: the same hint gives some other free place
    other = mm.map(hint, PAGE_SIZE, False, False, "[anon]")
    assert other != hint and not (hint <= other < hint + PAGE_SIZE)


def test_map_fixed_replaces_and_zeroes(mm: AddressSpace, ram: GuestMemory) -> None:
    start = mm.map(0, 8 * PAGE_SIZE, False, False, "first")
    fill(ram, start, 8 * PAGE_SIZE, 0x5A)
    mid = start + 2 * PAGE_SIZE
    assert mm.map(mid, 3 * PAGE_SIZE, True, False, "second") == mid
    assert is_zero(ram, mid, 3 * PAGE_SIZE)
    # the parts of the old mapping it did not cover keep their bytes
    assert ram.read(start, 2 * PAGE_SIZE) == b"\x5a" * (2 * PAGE_SIZE)
    assert ram.read(mid + 3 * PAGE_SIZE, 3 * PAGE_SIZE) == b"\x5a" * (3 * PAGE_SIZE)
    names = [(a.start, a.end, a.name) for a in mm.areas if a.start < mm.stack_bottom]
    assert names == [
        (start, mid, "first"),
        (mid, mid + 3 * PAGE_SIZE, "second"),
        (mid + 3 * PAGE_SIZE, start + 8 * PAGE_SIZE, "first"),
    ]
    assert_consistent(mm)


def test_map_fixed_over_several_areas(mm: AddressSpace, ram: GuestMemory) -> None:
    base = 30 * MiB
    for i in range(4):
        mm.map(base + 2 * i * PAGE_SIZE, PAGE_SIZE, True, False, f"a{i}")
    fill(ram, base, 8 * PAGE_SIZE)
    assert mm.map(base, 8 * PAGE_SIZE, True, False, "big") == base
    assert is_zero(ram, base, 8 * PAGE_SIZE)
    assert [(a.start, a.end, a.name) for a in mm.areas if a.start < mm.stack_bottom] == [
        (base, base + 8 * PAGE_SIZE, "big")
    ]


def test_map_fixed_noreplace_over_a_mapping_is_eexist(mm: AddressSpace, ram: GuestMemory) -> None:
    start = mm.map(0, 4 * PAGE_SIZE, False, False, "[anon]")
    fill(ram, start, 4 * PAGE_SIZE)
    with pytest.raises(SyscallError) as e:
        mm.map(start + PAGE_SIZE, PAGE_SIZE, False, True, "[anon]")
    assert errno_of(e) == errno.EEXIST
    # nothing changed
    assert ram.read(start, 4 * PAGE_SIZE) == b"\xab" * (4 * PAGE_SIZE)
    # but on free memory it maps exactly there
    free = start - 16 * PAGE_SIZE
    assert not mm.overlaps(free, free + PAGE_SIZE)
    assert mm.map(free, PAGE_SIZE, False, True, "[anon]") == free


@pytest.mark.parametrize(
    "addr, length, err",
    [
        (20 * MiB + 1, PAGE_SIZE, errno.EINVAL),  # unaligned fixed address
        (0, 0, errno.EINVAL),
        (0, -PAGE_SIZE, errno.EINVAL),
        (PAGE_SIZE, PAGE_SIZE, errno.ENOMEM),  # below user memory
        (MMAP_TOP, PAGE_SIZE, errno.ENOMEM),  # in the stack guard
        (RAM_SIZE, PAGE_SIZE, errno.ENOMEM),  # past the end of RAM
    ],
)
def test_map_fixed_bad_arguments(mm: AddressSpace, addr: int, length: int, err: int) -> None:
    with pytest.raises(SyscallError) as e:
        mm.map(addr, length, True, False, "[anon]")
    assert errno_of(e) == err


def test_munmap_then_map_again_reads_zero(mm: AddressSpace, ram: GuestMemory) -> None:
    length = 32 * PAGE_SIZE  # large enough for GuestMemory.discard to punch a hole
    start = mm.map(0, length, False, False, "[anon]")
    fill(ram, start, length)
    mm.unmap(start, length)
    assert not mm.overlaps(start, start + length)
    assert is_zero(ram, start, length)
    again = mm.map(start, length, True, False, "[anon]")
    assert again == start
    assert is_zero(ram, start, length)


def test_partial_munmap_splits_and_zeroes_only_that_part(
    mm: AddressSpace, ram: GuestMemory
) -> None:
    start = mm.map(0, 6 * PAGE_SIZE, False, False, "lib")
    fill(ram, start, 6 * PAGE_SIZE)
    mm.unmap(start + 2 * PAGE_SIZE, 2 * PAGE_SIZE)
    assert is_zero(ram, start + 2 * PAGE_SIZE, 2 * PAGE_SIZE)
    assert ram.read(start, 2 * PAGE_SIZE) == b"\xab" * (2 * PAGE_SIZE)
    assert ram.read(start + 4 * PAGE_SIZE, 2 * PAGE_SIZE) == b"\xab" * (2 * PAGE_SIZE)
    assert mm.is_mapped(start, start + 2 * PAGE_SIZE)
    assert not mm.is_mapped(start, start + 3 * PAGE_SIZE)
    assert mm.is_mapped(start + 4 * PAGE_SIZE, start + 6 * PAGE_SIZE)
    assert_consistent(mm)


def test_munmap_of_unmapped_memory_is_fine(mm: AddressSpace) -> None:
    mm.unmap(20 * MiB, 4 * PAGE_SIZE)  # Linux: success, nothing to do
    assert areas(mm) == [(RAM_SIZE - STACK_SIZE, RAM_SIZE)]


@pytest.mark.parametrize(
    "addr, length",
    [(20 * MiB + 8, PAGE_SIZE), (20 * MiB + PAGE_SIZE // 2, 1), (20 * MiB, 0)],
)
def test_bad_munmap_is_einval(mm: AddressSpace, addr: int, length: int) -> None:
    mm.map(20 * MiB, 4 * PAGE_SIZE, True, False, "[anon]")
    with pytest.raises(SyscallError) as e:
        mm.unmap(addr, length)
    assert errno_of(e) == errno.EINVAL
    assert mm.is_mapped(20 * MiB, 20 * MiB + 4 * PAGE_SIZE)


def test_exhausting_memory_is_enomem(mm: AddressSpace) -> None:
    room = MMAP_TOP - FLOOR
    with pytest.raises(SyscallError) as e:
        mm.map(0, room + PAGE_SIZE, False, False, "[anon]")
    assert errno_of(e) == errno.ENOMEM
    chunks = []
    with pytest.raises(SyscallError) as e:
        for _ in range(room // MiB + 2):
            chunks.append(mm.map(0, MiB, False, False, "[anon]"))
    assert errno_of(e) == errno.ENOMEM
    assert len(chunks) == room // MiB
    assert min(chunks) >= FLOOR
    # the space left is less than one chunk, and a page still fits if there is one
    assert_consistent(mm)


def test_mmap_never_lands_in_the_heap_reserve(mm: AddressSpace) -> None:
    # The program's own image sits below the break, as the loader reserves it.
    mm.reserve(USER_START, BRK_BASE, "/usr/bin/python3")
    room = MMAP_TOP - FLOOR
    try:
        start = mm.map(0, room + 4 * MiB, False, False, "[anon]")
    except SyscallError as e:
        assert e.errno == errno.ENOMEM
    else:
        assert start >= FLOOR, f"mmap at {start:#x}, inside the heap reserve below {FLOOR:#x}"


# -- brk ------------------------------------------------------------------------------


def test_brk_query_returns_the_base(mm: AddressSpace) -> None:
    assert mm.brk(0) == BRK_BASE
    assert mm.brk(BRK_BASE - PAGE_SIZE) == BRK_BASE  # below the start: refused


def test_brk_grow_shrink_and_regrow_reads_zero(mm: AddressSpace, ram: GuestMemory) -> None:
    top = BRK_BASE + 40 * PAGE_SIZE + 123
    assert mm.brk(top) == top
    assert mm.is_mapped(BRK_BASE, top)
    assert is_zero(ram, BRK_BASE, top - BRK_BASE)
    fill(ram, BRK_BASE, top - BRK_BASE)
    low = BRK_BASE + 4 * PAGE_SIZE
    assert mm.brk(low) == low
    assert mm.brk(0) == low
    assert not mm.overlaps(low, top)
    assert mm.brk(top) == top
    assert ram.read(BRK_BASE, 4 * PAGE_SIZE) == b"\xab" * (4 * PAGE_SIZE)
    assert is_zero(ram, low, top - low)
    assert_consistent(mm)


def test_brk_grows_up_to_its_limit_and_no_further(mm: AddressSpace) -> None:
    limit = BRK_BASE + BRK_LIMIT
    assert mm.brk(limit) == limit
    assert mm.brk(limit + PAGE_SIZE) == limit
    assert mm.brk(limit + 1) == limit
    assert mm.brk(0) == limit
    assert mm.is_mapped(BRK_BASE, limit)


def test_brk_past_limit_from_the_start_returns_old_break(mm: AddressSpace) -> None:
    assert mm.brk(BRK_BASE + BRK_LIMIT + PAGE_SIZE) == BRK_BASE
    assert not mm.overlaps(BRK_BASE, BRK_BASE + BRK_LIMIT)


def test_brk_does_not_grow_over_a_mapping(mm: AddressSpace, ram: GuestMemory) -> None:
    blocker = BRK_BASE + 8 * PAGE_SIZE
    mm.map(blocker, PAGE_SIZE, True, False, "[anon]")
    fill(ram, blocker, PAGE_SIZE)
    assert mm.brk(BRK_BASE + 4 * PAGE_SIZE) == BRK_BASE + 4 * PAGE_SIZE
    assert mm.brk(BRK_BASE + 16 * PAGE_SIZE) == BRK_BASE + 4 * PAGE_SIZE
    assert ram.read(blocker, PAGE_SIZE) == b"\xab" * PAGE_SIZE


# -- mremap ----------------------------------------------------------------------------


def test_mremap_grows_in_place_when_free(mm: AddressSpace, ram: GuestMemory) -> None:
    start = 30 * MiB
    mm.map(start, 2 * PAGE_SIZE, True, False, "[anon]")
    fill(ram, start, 2 * PAGE_SIZE)
    assert mm.remap(start, 2 * PAGE_SIZE, 6 * PAGE_SIZE, True) == start
    assert mm.is_mapped(start, start + 6 * PAGE_SIZE)
    assert ram.read(start, 2 * PAGE_SIZE) == b"\xab" * (2 * PAGE_SIZE)
    assert is_zero(ram, start + 2 * PAGE_SIZE, 4 * PAGE_SIZE)
    assert_consistent(mm)


def test_mremap_moves_with_content_when_blocked(mm: AddressSpace, ram: GuestMemory) -> None:
    start = 30 * MiB
    mm.map(start, 2 * PAGE_SIZE, True, False, "[anon]")
    mm.map(start + 2 * PAGE_SIZE, PAGE_SIZE, True, False, "blocker")
    content = bytes(range(256)) * (2 * PAGE_SIZE // 256)
    ram.write(start, content)
    with pytest.raises(SyscallError) as e:
        mm.remap(start, 2 * PAGE_SIZE, 4 * PAGE_SIZE, False)  # may not move
    assert errno_of(e) == errno.ENOMEM
    new = mm.remap(start, 2 * PAGE_SIZE, 4 * PAGE_SIZE, True)
    assert new != start
    assert new % PAGE_SIZE == 0
    assert ram.read(new, 2 * PAGE_SIZE) == content
    assert is_zero(ram, new + 2 * PAGE_SIZE, 2 * PAGE_SIZE)
    assert mm.is_mapped(new, new + 4 * PAGE_SIZE)
    # the old range is free and zeroed, the blocker untouched
    assert not mm.overlaps(start, start + 2 * PAGE_SIZE)
    assert is_zero(ram, start, 2 * PAGE_SIZE)
    assert mm.is_mapped(start + 2 * PAGE_SIZE, start + 3 * PAGE_SIZE)
    assert_consistent(mm)


def test_mremap_shrinks_in_place(mm: AddressSpace, ram: GuestMemory) -> None:
    start = 30 * MiB
    mm.map(start, 4 * PAGE_SIZE, True, False, "[anon]")
    fill(ram, start, 4 * PAGE_SIZE)
    assert mm.remap(start, 4 * PAGE_SIZE, PAGE_SIZE, False) == start
    assert mm.is_mapped(start, start + PAGE_SIZE)
    assert not mm.overlaps(start + PAGE_SIZE, start + 4 * PAGE_SIZE)
    assert is_zero(ram, start + PAGE_SIZE, 3 * PAGE_SIZE)
    assert ram.read(start, PAGE_SIZE) == b"\xab" * PAGE_SIZE


def test_mremap_of_unmapped_or_unaligned(mm: AddressSpace) -> None:
    with pytest.raises(SyscallError) as e:
        mm.remap(30 * MiB, PAGE_SIZE, 2 * PAGE_SIZE, True)
    assert errno_of(e) == errno.EFAULT
    mm.map(30 * MiB, PAGE_SIZE, True, False, "[anon]")
    with pytest.raises(SyscallError) as e:
        mm.remap(30 * MiB + 1, PAGE_SIZE, 2 * PAGE_SIZE, True)
    assert errno_of(e) == errno.EINVAL


# -- reserve (the loader's way in) --------------------------------------------------------


def test_reserve_refuses_overlaps_and_bad_ranges(mm: AddressSpace) -> None:
    mm.reserve(USER_START, USER_START + MiB, "exe")
    for lo, hi in [
        (USER_START + PAGE_SIZE, USER_START + 2 * PAGE_SIZE),  # overlaps
        (0, PAGE_SIZE),  # supervisor region
        (MMAP_TOP - PAGE_SIZE, MMAP_TOP + PAGE_SIZE),  # into the guard
    ]:
        with pytest.raises(SyscallError) as e:
            mm.reserve(lo, hi, "x")
        assert errno_of(e) == errno.ENOMEM
    assert_consistent(mm)


def test_a_shared_file_mapping_is_written_back_in_pieces_as_it_is_unmapped(mm: AddressSpace):
    from types import SimpleNamespace

    from usetl.libos.mm import SharedFileMap

    file = SimpleNamespace(data=bytearray(3 * PAGE_SIZE + 100))  # the last page is partial
    start = mm.map(0, 4 * PAGE_SIZE, False, False, "/tmp/f")
    mm.shared.append(SharedFileMap(start, start + 4 * PAGE_SIZE, file, 0))
    view = mm.ram.view
    for page in range(4):
        at = start + page * PAGE_SIZE
        view[at : at + PAGE_SIZE] = bytes([page + 1]) * PAGE_SIZE
    mm.unmap(start + PAGE_SIZE, PAGE_SIZE)  # the middle: two pieces stay shared
    assert file.data[PAGE_SIZE : 2 * PAGE_SIZE] == bytes([2]) * PAGE_SIZE
    assert file.data[:PAGE_SIZE] == bytes(PAGE_SIZE)  # not yet: still mapped
    assert [(m.start - start, m.offset) for m in mm.shared] == [
        (0, 0), (2 * PAGE_SIZE, 2 * PAGE_SIZE)]
    mm.sync(start, start + PAGE_SIZE)
    assert file.data[:PAGE_SIZE] == bytes([1]) * PAGE_SIZE
    mm.unmap(start, 4 * PAGE_SIZE)
    assert file.data[2 * PAGE_SIZE :] == bytes([3]) * PAGE_SIZE + bytes([4]) * 100
    assert len(file.data) == 3 * PAGE_SIZE + 100 and mm.shared == []


# -- the memory allowance an invocation's processes share (allowance.py) ------------------


def test_mapped_bytes_follow_maps_unmaps_splits_and_the_break(mm: AddressSpace) -> None:
    a = mm.map(0, 4 * MiB, False, False, "a")
    mm.unmap(a + MiB, MiB)  # a hole: the area splits in two
    mm.map(a + MiB, 2 * MiB, True, False, "b")  # MAP_FIXED over the hole and 1 MiB of a
    mm.brk(BRK_BASE + 3 * PAGE_SIZE)
    assert mm.mapped_bytes == sum(x.end - x.start for x in mm.areas) \
        == STACK_SIZE + 4 * MiB + 3 * PAGE_SIZE


@pytest.fixture
def fresh() -> Iterator[AddressSpace]:
    """An address space over RAM none of whose pages the host has backed yet."""
    mem = GuestMemory("fresh", 0, RAM_SIZE)
    space = AddressSpace(mem, brk_limit=BRK_LIMIT)
    space.set_brk_base(BRK_BASE)
    yield space
    mem.close()


def test_processes_sharing_an_allowance_are_charged_what_they_hold_not_what_they_map(
        fresh: AddressSpace) -> None:
    """A mapping is refused (ENOMEM, told once) where its size does not fit beside what
    the processes hold; mapped memory they then touch past the allowance makes the process
    holding the most the one to kill; memory given back is the others' again."""
    from usetl.libos.allowance import Charge, MemoryAllowance

    told: list[str] = []
    ram = fresh.ram
    allowance = MemoryAllowance(32 * MiB, 3)
    try:
        fresh.charge = Charge(allowance, 0, 1, ram.backed_bytes, 0, told.append)
        other = allowance.claim()
        allowance.settle(other, 2, 16 * MiB)  # another process holding 16 MiB
        first = fresh.map(0, 12 * MiB, False, False, "untouched")
        second = fresh.map(0, 12 * MiB, False, False, "untouched too")  # 40 MiB mapped: fits
        fill(ram, first, 12 * MiB)
        with pytest.raises(SyscallError) as e:
            fresh.map(0, 8 * MiB, False, False, "does not fit beside 28 MiB held")
        assert e.value.errno == errno.ENOMEM
        assert fresh.brk(BRK_BASE + 5 * MiB) == BRK_BASE  # the break stays
        assert len(told) == 1 and "the function's memory (32 MiB)" in told[0]
        assert allowance.used() == (28 * MiB, 2)
        assert fresh.charge.check() is None  # within it
        fill(ram, second, 6 * MiB)  # 34 MiB held: the holder of the most is killed
        assert fresh.charge.check() == 1
        assert fresh.charge.check() is None  # one victim at a time, until it has ended
        assert len(told) == 2 and "killed process 1 (18 MiB)" in told[1]
        allowance.settle(other, 2, 20 * MiB)  # now the other holds the most
        fresh.unmap(first, 12 * MiB)  # given back
        assert allowance.used() == (26 * MiB, 2) and fresh.charge.check() is None
        allowance.release(other)  # it ended
        fresh.map(0, 16 * MiB, False, False, "now fits")
        assert allowance.used() == (6 * MiB, 1)
    finally:
        fresh.charge = None
        allowance.close()
