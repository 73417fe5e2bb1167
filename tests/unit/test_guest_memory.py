"""Guest memory as clones use it: copy-on-write views, finding and reverting written pages."""

import os

import pytest

from usetl import hostmm
from usetl.hyperfork.frozen import held_parts
from usetl.vm.machine import memslots
from usetl.vm.memory import PAGE_SIZE, GuestMemory, data_ranges, guest_memories


@pytest.fixture
def memory():
    mem = GuestMemory("ram", 0, 64 << 20)
    mem.view[10 * PAGE_SIZE : 12 * PAGE_SIZE] = b"t" * (2 * PAGE_SIZE)  # the "template's" bytes
    mem.view[40 * PAGE_SIZE] = 7
    yield mem
    mem.close()


def test_a_private_view_keeps_writes_out_of_the_file(memory):
    memory.make_private()
    memory.view[10 * PAGE_SIZE] = ord("c")
    assert os.pread(memory.fd, 1, 10 * PAGE_SIZE) == b"t"
    assert memory.view[10 * PAGE_SIZE] == ord("c")


def test_written_pages_are_found_and_reverted_to_the_file(memory):
    memory.make_private()
    assert memory.written_ranges() == []
    _ = bytes(memory.view[: 100 * PAGE_SIZE])  # reads copy nothing
    memory.view[11 * PAGE_SIZE + 5] = ord("x")
    memory.view[50 * PAGE_SIZE : 53 * PAGE_SIZE] = b"y" * (3 * PAGE_SIZE)
    assert memory.written_ranges() == [(11 * PAGE_SIZE, PAGE_SIZE), (50 * PAGE_SIZE, 3 * PAGE_SIZE)]
    memory.revert(memory.written_ranges())
    assert memory.view[11 * PAGE_SIZE + 5] == ord("t")
    assert bytes(memory.view[50 * PAGE_SIZE : 53 * PAGE_SIZE]) == bytes(3 * PAGE_SIZE)


def test_a_revert_restores_from_the_file_the_memory_has_now(memory):
    memory.make_private()
    memory.view[10 * PAGE_SIZE] = ord("a")
    memory.revert(memory.written_ranges())
    assert memory.view[10 * PAGE_SIZE] == ord("t")
    memory.view[10 * PAGE_SIZE] = ord("b")
    memory.copy_to_new_file()  # a clone becoming a template: "b" is its file's byte now
    memory.make_private()
    memory.view[10 * PAGE_SIZE] = ord("c")
    memory.revert(memory.written_ranges())
    assert memory.view[10 * PAGE_SIZE] == ord("b")


def test_the_page_table_scan_and_the_page_map_agree(memory):
    memory.make_private()
    for page in range(0, 16000, 7):
        memory.view[page * PAGE_SIZE] = 1
    from_page_map = memory._written_ranges_from_pagemap()
    assert len(from_page_map) == len(range(0, 16000, 7))
    scanned = hostmm.private_pages(memory.host_addr, memory.size)
    if scanned is not None:  # PAGEMAP_SCAN needs Linux 6.7
        assert [(a - memory.host_addr, b - a) for a, b in scanned] == from_page_map


def test_a_scan_holds_until_the_process_takes_a_page_fault_or_remaps(memory):
    memory.make_private()
    memory.view[11 * PAGE_SIZE] = 1
    scans = []
    scan = memory._scan_written
    memory._scan_written = lambda: scans.append(1) or scan()
    assert memory.written_ranges() == [(11 * PAGE_SIZE, PAGE_SIZE)]
    memory.view[11 * PAGE_SIZE] = 2  # its own copy already: no fault
    rescanned = _rescans_with_no_fault_between(memory, scans)
    assert rescanned and not any(rescanned)
    assert memory.written_ranges() == [(11 * PAGE_SIZE, PAGE_SIZE)]
    memory.view[20 * PAGE_SIZE] = 3  # a copy-on-write fault
    scanned = len(scans)
    assert memory.written_ranges() == [(11 * PAGE_SIZE, PAGE_SIZE), (20 * PAGE_SIZE, PAGE_SIZE)]
    assert len(scans) == scanned + 1
    memory.map_own_file(0, 16 * PAGE_SIZE)  # the file's pages again there, with no fault
    assert memory.written_ranges() == [(20 * PAGE_SIZE, PAGE_SIZE)] and len(scans) == scanned + 2


def _rescans_with_no_fault_between(memory: GuestMemory, scans: list, tries: int = 50,
                                   ) -> list[bool]:
    """For each of `tries` calls of written_ranges() with no page fault of this process
    from before the call before it (whose scan, if it made one, may have faulted) to its own
    end (other tests' threads may fault at any time: those calls are left out), whether it
    scanned again."""
    rescanned = []
    before = hostmm.page_faults()
    memory.written_ranges()
    for _ in range(tries):
        scanned = len(scans)
        start = hostmm.page_faults()
        memory.written_ranges()
        if hostmm.page_faults() == before:
            rescanned.append(len(scans) > scanned)
        before = start
    return rescanned


def test_copy_to_new_file_keeps_the_contents_and_shares_them_again(memory):
    memory.make_private()
    memory.view[60 * PAGE_SIZE] = 9
    old_fd = memory.fd
    memory.copy_to_new_file()
    assert memory.fd != old_fd and not memory.private
    assert os.pread(memory.fd, 1, 60 * PAGE_SIZE) == b"\x09"
    assert os.pread(memory.fd, 1, 10 * PAGE_SIZE) == b"t"
    assert data_ranges(memory.fd, memory.size)  # sparse: only what holds data


def test_trim_outside_punches_out_everything_but_the_kept_ranges(memory):
    keep = data_ranges(memory.fd, memory.size)
    memory.view[200 * PAGE_SIZE] = 0  # a zero page added to the file
    memory.trim_outside(keep)
    assert data_ranges(memory.fd, memory.size) == keep
    assert bytes(memory.view[10 * PAGE_SIZE : 10 * PAGE_SIZE + 4]) == b"tttt"


def test_a_file_of_its_own_starts_as_the_template_and_rolls_back_to_it(memory):
    template_fd = memory.fd
    memory.use_own_file()
    assert memory.fd != template_fd and hostmm.has_fixed_size(memory.fd)
    assert not hostmm.has_fixed_size(template_fd)  # what the broker refuses
    assert memory.view[10 * PAGE_SIZE] == ord("t") and memory.view[40 * PAGE_SIZE] == 7
    # The broker writes through a mapping of its own, which only a mark shows here.
    os.pwrite(memory.fd, b"d" * PAGE_SIZE, 30 * PAGE_SIZE)
    memory.mark(30 * PAGE_SIZE, PAGE_SIZE)
    memory.view[11 * PAGE_SIZE] = ord("g")  # the guest writes through this one
    assert os.pread(template_fd, 1, 11 * PAGE_SIZE) == b"t"
    ranges = memory.written_ranges()
    assert (30 * PAGE_SIZE, PAGE_SIZE) in ranges
    assert any(off <= 11 * PAGE_SIZE < off + n for off, n in ranges)
    memory.revert(ranges)
    assert os.pread(memory.fd, PAGE_SIZE, 30 * PAGE_SIZE) == bytes(PAGE_SIZE)
    assert memory.view[11 * PAGE_SIZE] == ord("t") and memory.marked == []


def test_prefetching_for_writing_copies_the_pages_with_their_bytes(memory):
    memory.make_private()
    assert memory.prefetch_for_writing([(10 * PAGE_SIZE, 2 * PAGE_SIZE)])
    assert memory.written_ranges() == [(10 * PAGE_SIZE, 2 * PAGE_SIZE)]
    assert bytes(memory.view[10 * PAGE_SIZE : 12 * PAGE_SIZE]) == b"t" * (2 * PAGE_SIZE)
    memory.view[10 * PAGE_SIZE] = ord("c")
    assert os.pread(memory.fd, 1, 10 * PAGE_SIZE) == b"t"


def test_a_reported_working_set_is_kept_only_where_the_template_holds_pages():
    held = [(10 * PAGE_SIZE, 2 * PAGE_SIZE), (40 * PAGE_SIZE, PAGE_SIZE)]
    reported = [(0, 1 << 40), (-5, 10), (41 * PAGE_SIZE, PAGE_SIZE), (11 * PAGE_SIZE + 1, 1)]
    assert held_parts(reported, held) == held
    assert held_parts([(11 * PAGE_SIZE + 1, 1)], held) == [(11 * PAGE_SIZE, PAGE_SIZE)]
    assert held_parts([(12 * PAGE_SIZE, 28 * PAGE_SIZE)], held) == []


def test_neighbours_the_guest_may_write_alike_share_a_memslot():
    mib = 1 << 20
    placed = guest_memories([
        ("ram", 0, 16 * mib, None), ("guest", 16 * mib, 2 * mib, None),
        ("host", 18 * mib, 2 * mib, None), ("modules", 20 * mib, 4 * mib, None),
        ("far", 64 * mib, 2 * mib, None)])
    # Next to "far" in guest-physical addresses only: its host span cannot touch far's end.
    span = hostmm.reserve(6 * mib)
    apart = GuestMemory("apart", 66 * mib, 2 * mib, at=span + 4 * mib)
    try:
        writable = {"ram": True, "guest": True, "host": False, "modules": False, "far": False}
        slots = memslots([(mem, writable[name]) for name, mem in placed.items()]
                         + [(apart, False)])
        assert [(gpa, size, w) for gpa, size, _, w in slots] == [
            (0, 18 * mib, True), (18 * mib, 6 * mib, False), (64 * mib, 2 * mib, False),
            (66 * mib, 2 * mib, False)]
        assert [addr for _, _, addr, _ in slots] == [
            placed["ram"].host_addr, placed["host"].host_addr, placed["far"].host_addr,
            apart.host_addr]
        assert placed["far"].host_addr - placed["ram"].host_addr == 64 * mib
        placed["modules"].view[-1] = 9  # each is mapped whole, at its place
        assert os.pread(placed["modules"].fd, 1, 4 * mib - 1) == b"\x09"
    finally:
        for mem in [*placed.values(), apart]:
            mem.close()
        hostmm.unmap(span, 4 * mib)


def _shmem_pmd_mapped_kib(addr):
    """ShmemPmdMapped of this process's mapping that starts at `addr` (/proc/self/smaps)."""
    with open("/proc/self/smaps") as f:
        lines = f.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{addr:x}-"))
    for line in lines[start + 1 :]:
        if line.startswith("ShmemPmdMapped:"):
            return int(line.split()[1])
    raise AssertionError("no ShmemPmdMapped line")


def test_huge_pages_at_least_half_to_be_filled_are_collapsed_keeping_their_bytes():
    huge = hostmm.HUGE_PAGE
    mem = GuestMemory("modules", 0, 4 * huge)
    try:
        mem.view[:PAGE_SIZE] = b"p" * PAGE_SIZE  # written before (an archive placed earlier)
        ranges = [(PAGE_SIZE, huge - PAGE_SIZE), (huge, huge * 3 // 4), (2 * huge, huge // 8)]
        collapsed = mem.use_huge_pages(ranges)
        if collapsed == 0 and not hostmm.collapse(mem.host_addr, huge):
            pytest.skip("this kernel refuses MADV_COLLAPSE on shared memory")
        assert collapsed == 2  # the first two; an eighth stays sparse
        for (offset, length), byte in zip(ranges, b"abc", strict=True):
            mem.view[offset : offset + length] = bytes([byte]) * length
        assert _shmem_pmd_mapped_kib(mem.host_addr) == 2 * huge >> 10
        assert bytes(mem.view[PAGE_SIZE - 1 : PAGE_SIZE + 1]) == b"pa"
        assert bytes(mem.view[huge * 7 // 4 - 1 : huge * 7 // 4 + 1]) == b"b\0"
        assert os.fstat(mem.fd).st_blocks * 512 == 2 * huge + huge // 8
    finally:
        mem.close()
