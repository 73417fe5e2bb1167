"""The guest's fixed address layout and its x86-64 system tables.

Guest-physical equals guest-virtual: the monitor identity-maps RAM with 2 MiB
pages. The lowest 2 MiB hold the page tables, GDT, IDT, TSS and the
exception stubs, supervisor-only (the emulator reads them through the page
tables during ring transitions, and null pointers from ring 3 fault). The
next 2 MiB hold the user-accessible SYSCALL trampoline: under PVM SYSCALL
stays at CPL 3. User memory (program, heap, mmaps, stack) starts at 4 MiB.
"""

from __future__ import annotations

import struct

from .memory import PAGE_SIZE, GuestMemory
from .trampoline import (
    EXCEPTION_STUB_SIZE,
    PORT_SYSCALL,
    exception_stubs,
    syscall_entry,
)

HUGE_PAGE = 2 << 20
# A flat segment: with 4 KiB granularity, the whole 4 GiB (long mode ignores it anyway).
FLAT_SEGMENT_LIMIT = 0xFFFFFFFF

# supervisor-only region [0, 2 MiB)
PML4_ADDR = 0x1000
PDPT_ADDR = 0x2000
PD_ADDR = 0x3000  # four page directories: 4 GiB of guest-physical space
PD_COUNT = 4
GDT_ADDR = 0x7000
IDT_ADDR = 0x8000
EXCEPTION_STUBS_ADDR = 0x9000
TSS_ADDR = 0xA000
EXCEPTION_STACK_TOP = 0x20000

# user-accessible trampoline region [2 MiB, 4 MiB)
SYSCALL_ENTRY_ADDR = 0x200000
SAVE_RSP_ADDR = 0x200800
PID_ADDR = 0x200808  # the pid the syscall entry answers getpid with (0: the monitor does)
TRAMPOLINE_STACK_TOP = 0x210000
VDSO_ADDR = 0x210000  # the libos's vDSO image (user-readable code)
VDSO_DATA_ADDR = 0x212000  # its clock data page
ARENA_TABLE_ADDR = 0x213000  # its arena allocator's free lists (guest-writable)

USER_START = 0x400000

# The stack fills the top of RAM; below it one 2 MiB page is left out of the
# page tables, so a stack overflow faults instead of running into the heap.
STACK_SIZE = 8 << 20
STACK_GUARD = HUGE_PAGE


def stack_guard(ram_size: int) -> tuple[int, int]:
    return ram_size - STACK_SIZE - STACK_GUARD, ram_size - STACK_SIZE

# KVM_SET_TSS_ADDR wants three pages outside every memslot (VMX real-mode TSS).
KVM_TSS_ADDR = 0xFFFBD000

# GDT selectors, in Linux's order so that the user selectors match the host's.
KERNEL_CS = 0x10
KERNEL_DS = 0x18
USER_DS = 0x2B
USER_CS = 0x33
TSS_SELECTOR = 0x40

TSS_IOMAP_BASE = 0x68
TSS_IOMAP_SIZE = 8192
TSS_LIMIT = TSS_IOMAP_BASE + TSS_IOMAP_SIZE  # inclusive: covers the trailing 0xff byte

# page-table entry bits
PTE_P, PTE_RW, PTE_US, PTE_PS = 1 << 0, 1 << 1, 1 << 2, 1 << 7

# control registers and EFER
CR0_PE, CR0_MP, CR0_ET, CR0_NE, CR0_WP, CR0_AM, CR0_PG = (
    1 << 0, 1 << 1, 1 << 4, 1 << 5, 1 << 16, 1 << 18, 1 << 31,
)
CR4_PAE, CR4_OSFXSR, CR4_OSXMMEXCPT, CR4_OSXSAVE = 1 << 5, 1 << 9, 1 << 10, 1 << 18
EFER_SCE, EFER_LME, EFER_LMA = 1 << 0, 1 << 8, 1 << 10

CR0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_PG
CR4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT | CR4_OSXSAVE
EFER = EFER_SCE | EFER_LME | EFER_LMA

# MSRs
MSR_EFER = 0xC0000080
MSR_STAR = 0xC0000081
MSR_LSTAR = 0xC0000082
MSR_CSTAR = 0xC0000083
MSR_SFMASK = 0xC0000084
MSR_FS_BASE = 0xC0000100
MSR_GS_BASE = 0xC0000101
MSR_KERNEL_GS_BASE = 0xC0000102
MSR_PAT = 0x277

# SYSCALL masks TF, DF, IF, IOPL, NT and AC, as Linux does.
SFMASK = 0x47700
STAR = ((USER_CS - 16) << 48) | (KERNEL_CS << 32)
SAVED_MSRS = [
    MSR_STAR, MSR_LSTAR, MSR_SFMASK, MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE, MSR_PAT,
]

RFLAGS_RESERVED = 1 << 1

# Segment descriptors (flat), as in Linux's GDT.
_GDT = {
    KERNEL_CS: 0x00AF9B000000FFFF,
    KERNEL_DS: 0x00CF93000000FFFF,
    0x20: 0x00CFFB000000FFFF,  # 32-bit user code: SYSRET's base selector
    USER_DS & ~3: 0x00CFF3000000FFFF,
    USER_CS & ~3: 0x00AFFB000000FFFF,
}


def _tss_descriptor(base: int, limit: int) -> bytes:
    low = (
        (limit & 0xFFFF)
        | ((base & 0xFFFFFF) << 16)
        | (0x89 << 40)  # present, 64-bit TSS (available)
        | (((limit >> 16) & 0xF) << 48)
        | (((base >> 24) & 0xFF) << 56)
    )
    return struct.pack("<QQ", low, base >> 32)


def _idt_gate(handler: int) -> bytes:
    low = (
        (handler & 0xFFFF)
        | (KERNEL_CS << 16)
        | (0x8E << 40)  # present, DPL 0, 64-bit interrupt gate
        | (((handler >> 16) & 0xFFFF) << 48)
    )
    return struct.pack("<QQ", low, handler >> 32)


def write_system_tables(ram: GuestMemory, mappings: list[tuple[int, int, bool]]) -> None:
    """Write page tables, GDT, IDT, TSS and the trampoline into low RAM.

    `mappings` lists (gpa, size, writable) ranges to map for ring 3, each
    2 MiB aligned; the first 2 MiB of RAM is always supervisor-only and the
    stack guard page is left unmapped. `ram` is fresh (reads as zero): what is not written
    here stays zero without a host page (zeroing the 4 MiB cost each VM 1,024 page faults).
    """
    holes = {stack_guard(ram.size)[0]}
    ram.put_u64(PML4_ADDR, PDPT_ADDR | PTE_P | PTE_RW | PTE_US)
    for i in range(PD_COUNT):
        ram.put_u64(PDPT_ADDR + 8 * i, (PD_ADDR + PAGE_SIZE * i) | PTE_P | PTE_RW | PTE_US)
    for gpa, size, writable in mappings:
        if gpa % HUGE_PAGE or size % HUGE_PAGE or gpa + size > PD_COUNT << 30:
            raise ValueError(f"mapping {gpa:#x}+{size:#x} is not 2 MiB aligned or too high")
        for page in range(gpa, gpa + size, HUGE_PAGE):
            if page in holes:
                continue
            flags = PTE_P | PTE_PS | (PTE_RW if writable else 0)
            if page >= HUGE_PAGE:
                flags |= PTE_US
            ram.put_u64(PD_ADDR + 8 * (page // HUGE_PAGE), page | flags)

    for selector, descriptor in _GDT.items():
        ram.put_u64(GDT_ADDR + selector, descriptor)
    ram.write(GDT_ADDR + TSS_SELECTOR, _tss_descriptor(TSS_ADDR, TSS_LIMIT))

    stubs = exception_stubs()
    ram.write(EXCEPTION_STUBS_ADDR, stubs)
    for vector in range(len(stubs) // EXCEPTION_STUB_SIZE):
        handler = EXCEPTION_STUBS_ADDR + vector * EXCEPTION_STUB_SIZE
        ram.write(IDT_ADDR + 16 * vector, _idt_gate(handler))

    tss = bytearray(TSS_IOMAP_BASE + TSS_IOMAP_SIZE + 1)
    struct.pack_into("<Q", tss, 4, EXCEPTION_STACK_TOP)  # RSP0
    struct.pack_into("<H", tss, 0x66, TSS_IOMAP_BASE)
    bitmap = bytearray(b"\xff" * (TSS_IOMAP_SIZE + 1))
    bitmap[PORT_SYSCALL // 8] &= ~(1 << (PORT_SYSCALL % 8)) & 0xFF
    tss[TSS_IOMAP_BASE:] = bitmap
    ram.write(TSS_ADDR, tss)

    entry = syscall_entry(SAVE_RSP_ADDR, TRAMPOLINE_STACK_TOP, USER_CS, USER_DS, PID_ADDR)
    ram.write(SYSCALL_ENTRY_ADDR, entry)
