"""A vDSO for the guest: clock_gettime and CPython's arena allocator without a VM exit.

There is no guest kernel to provide one, so the monitor writes a minimal
ELF shared object into guest memory (announced with AT_SYSINFO_EHDR; glibc
looks up `__vdso_clock_gettime` in it) and a data page it keeps anchored to
the host's clocks. Guest `rdtsc` reads the host's TSC, so
ns = base_ns + (rdtsc - base_tsc) * mult >> 32. CPython calls the monotonic
clock on every import lock: without this, 40% of start-up syscalls were
clock_gettime. The process's and the running thread's CPU clocks are read the
same way from bases the monitor publishes at each entry into the guest, once
the guest has read one (clock.CpuClocks); until then, through the syscall.

The arena allocator: CPython takes its obmalloc arenas (1 MiB) and its
frame-stack chunks (16 KiB) from an allocator it lets the embedder replace
(PyObject_SetArenaAllocator), by default mmap and munmap. A call that goes
deeper than a chunk and returns maps and unmaps one, two exits, again and
again (sklearn's import: 12,000 exits). The guest runtime installs
`__usetl_arena_alloc` and `__usetl_arena_free` from here instead (see
usetl.importer.serve_arenas): freed blocks go on a free list per size in a
guest page (ARENA_TABLE_ADDR; ARENA_SLOTS sizes, ARENA_KEPT blocks each, none
over ARENA_MAX_KEPT bytes), and an allocation of a size on the list pops it,
with no exit; anything else is an ordinary mmap or munmap syscall. A block on
a list stays mapped in the monitor's memory map, so nothing there changes,
and CPython does not expect zeroed arenas (its malloc-based allocator gives
none). CPython calls the allocator with the GIL held, so one guest thread is
in it at a time even when the monitor switches threads mid-call. The lists
live in guest RAM: clones, rollbacks and snapshots carry them with the memory
they point into.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
import time

from usetl.vm import GuestMemory
from usetl.vm.layout import ARENA_TABLE_ADDR, PAGE_SIZE, VDSO_ADDR, VDSO_DATA_ADDR

# Assembled from (intel syntax), DATA = VDSO_DATA_ADDR:
#   clock_gettime(edi=clock, rsi=ts):
#     MONOTONIC(1), MONOTONIC_RAW(4), MONOTONIC_COARSE(6), BOOTTIME(7) -> mono
#     REALTIME(0), REALTIME_COARSE(5) -> real; PROCESS_CPUTIME(2) -> process,
#     THREAD_CPUTIME(3) -> thread; anything else: fallback
#   fallback: mov eax,228; syscall; ret
#   process: cmp qword [DATA+48],0; je fallback; mov r8,[DATA+32]; jmp common
#   thread: cmp qword [DATA+48],0; je fallback; mov r8,[DATA+40]; jmp common
#   mono: mov r8,[DATA+8]; jmp common     real: mov r8,[DATA+16]
#   common: rdtsc; shl rdx,32; or rax,rdx; sub rax,[DATA]; mul qword [DATA+24]
#           shrd rax,rdx,32; add rax,r8; xor edx,edx; mov rcx,1e9; div rcx
#           mov [rsi],rax; mov [rsi+8],rdx; xor eax,eax; ret
CLOCK_GETTIME_CODE = bytes.fromhex(
    "83ff01745483ff04744f83ff06744a83ff07744585ff744b83ff05744683ff02740d83ff03741d"
    "b8e40000000f05c3"
    "48833c25{data48}0074ed4c8b0425{data32}eb27"
    "48833c25{data48}0074d84c8b0425{data40}eb12"
    "4c8b0425{data8}eb084c8b0425{data16}0f3148c1e2204809d0482b0425{data0}"
    "48f72425{data24}480facd0204c01c031d248c7c100ca9a3b48f7f14889064889560831c0c3".format(
        **{f"data{o}": struct.pack("<I", VDSO_DATA_ADDR + o).hex()
           for o in (0, 8, 16, 24, 32, 40, 48)}
    )
)

# alloc(ctx, size=rsi) -> rax:
#     for each slot at r8 (ARENA_TABLE_ADDR, 32 bytes: size, head, count):
#       if [r8] == rsi and [r8+8]: rax = [r8+8]; [r8+8] = [rax]; dec [r8+16]; ret
#     mmap(0, rsi, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0); NULL on error
# free(ctx, ptr=rsi, size=rdx):
#     ptr 0: ret; size > ARENA_MAX_KEPT: munmap
#     the slot of this size (or the first empty one, claimed for it): if its count is
#     under ARENA_KEPT: [rsi] = head; head = rsi; inc count; ret
#     otherwise munmap(rsi, rdx)
ARENA_SLOTS, ARENA_KEPT, ARENA_MAX_KEPT = 4, 8, 1 << 20
ARENA_ALLOC_CODE = bytes.fromhex(
    "41b8{table}b9{slots}4939307515498b40084885c07414488b104989500849ff4810c3"
    "4983c020ffc975de31ffba0300000041ba2200000049c7c0ffffffff4531c9b809000000"
    "0f05483d01f0ffff7301c331c0c3".format(
        table=struct.pack("<I", ARENA_TABLE_ADDR).hex(), slots=struct.pack("<I", ARENA_SLOTS).hex())
)
ARENA_FREE_CODE = bytes.fromhex(
    "4885f674444881fa{max}773c41b8{table}b9{slots}498b004839d074124885c0740a"
    "4983c020ffc975ebeb1a49891049837810{kept}7310498b40084889064989700849ff4010c3"
    "4889f74889d6b80b0000000f05c3".format(
        table=struct.pack("<I", ARENA_TABLE_ADDR).hex(), slots=struct.pack("<I", ARENA_SLOTS).hex(),
        max=struct.pack("<I", ARENA_MAX_KEPT).hex(), kept=struct.pack("<B", ARENA_KEPT).hex())
)
ARENA_SLOT_SIZE = 32

CODE_OFFSET = 0x200
# (name, code) at CODE_OFFSET and on, each 16-byte aligned.
FUNCTIONS = (("__vdso_clock_gettime", CLOCK_GETTIME_CODE),
             ("__usetl_arena_alloc", ARENA_ALLOC_CODE),
             ("__usetl_arena_free", ARENA_FREE_CODE))
DATA = struct.Struct("<QQQQ")  # base_tsc, base_monotonic_ns, base_realtime_ns, mult (32.32)
# After DATA: the CPU clocks' bases, each what the clock read at base_tsc (mod 2**64), and
# whether the guest reads them here (0: through the syscall). CpuClocks (clock.py) keeps them.
CPU = struct.Struct("<QQQ")  # process base, thread base, on
CPU_ADDR = VDSO_DATA_ADDR + DATA.size
MASK64 = (1 << 64) - 1
SAMPLE_TRIES = 5
# A try whose two monotonic reads are this close is taken at once (most are, with caches
# warm): the anchor before every request then costs one try, not SAMPLE_TRIES.
SAMPLE_CLOSE_NS = 2_000


def _code_layout() -> list[tuple[bytes, int, bytes]]:
    """(name, offset, code) of each function, 16-byte aligned from CODE_OFFSET."""
    placed, at = [], CODE_OFFSET
    for name, code in FUNCTIONS:
        placed.append((name.encode(), at, code))
        at = (at + len(code) + 15) & ~15
    return placed


def build_image() -> bytes:
    """The vDSO's ELF image: ET_DYN at vaddr 0, one PT_LOAD, one PT_DYNAMIC, its functions."""
    functions = _code_layout()
    dynstr = b"\0" + b"".join(name + b"\0" for name, _, _ in functions) + b"linux-vdso.so.1\0"
    soname = dynstr.index(b"linux-vdso")
    nsyms = len(functions) + 1  # symbol 0 is the null symbol
    ehdr_size, phdr_size, dyn_off = 64, 56, 64 + 2 * 56
    dyn_count = 7
    hash_off = dyn_off + 16 * dyn_count
    symtab_off = hash_off + (8 + 4 + 4 * nsyms + 7) // 8 * 8  # nbucket, nchain, bucket, chain
    strtab_off = symtab_off + nsyms * 24
    _, last_at, last_code = functions[-1]
    image = bytearray(last_at + len(last_code))
    size = len(image)
    struct.pack_into(
        "<4sBBBB8xHHIQQQIHHHHHH", image, 0, b"\x7fELF", 2, 1, 1, 0,
        3, 62, 1, 0, ehdr_size, 0, 0, ehdr_size, phdr_size, 2, 64, 0, 0,
    )
    struct.pack_into("<IIQQQQQQ", image, 64, 1, 5, 0, 0, 0, size, size, PAGE_SIZE)  # PT_LOAD r-x
    struct.pack_into(
        "<IIQQQQQQ", image, 64 + 56, 2, 4, dyn_off, dyn_off, dyn_off,
        16 * dyn_count, 16 * dyn_count, 8,
    )  # PT_DYNAMIC
    dynamic = [(4, hash_off), (5, strtab_off), (6, symtab_off), (10, len(dynstr)), (11, 24),
               (14, soname), (0, 0)]  # DT_HASH, STRTAB, SYMTAB, STRSZ, SYMENT, SONAME, NULL
    for i, (tag, value) in enumerate(dynamic):
        struct.pack_into("<qQ", image, dyn_off + 16 * i, tag, value)
    # One bucket holding the last symbol, each symbol's chain the one before it.
    struct.pack_into(f"<II{1 + nsyms}I", image, hash_off, 1, nsyms, nsyms - 1,
                     0, *range(nsyms - 1))
    for i, (name, at, code) in enumerate(functions, start=1):
        # a global function in a (nameless) section 1, at its code
        struct.pack_into("<IBBHQQ", image, symtab_off + 24 * i, dynstr.index(name + b"\0"),
                         0x12, 0, 1, at, len(code))
        image[at : at + len(code)] = code
    image[strtab_off : strtab_off + len(dynstr)] = dynstr
    assert strtab_off + len(dynstr) <= CODE_OFFSET
    return bytes(image)


class _HostTsc:
    """rdtsc on the host, through a few bytes of machine code called with ctypes."""

    CODE = bytes.fromhex("0f3148c1e2204809d0c3")  # rdtsc; shl rdx,32; or rax,rdx; ret

    def __init__(self) -> None:
        self._page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE
                               | mmap.PROT_EXEC)
        self._page.write(self.CODE)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(self._page))
        self.read = ctypes.CFUNCTYPE(ctypes.c_uint64)(addr)

    def sample(self) -> tuple[int, int, int]:
        """(tsc, monotonic ns, realtime ns) read as close together as Python can: the first
        try whose reads were within SAMPLE_CLOSE_NS, else of a few the closest, as one
        preempted between them skews the rate (under load a 5 ms calibration was 0.6% slow,
        its guest waits as early)."""
        tries = []
        for _ in range(SAMPLE_TRIES):
            before = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            tsc = self.read()
            after = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            tries.append((after - before, tsc, (before + after) // 2, time.time_ns()))
            if after - before <= SAMPLE_CLOSE_NS:
                break
        _, tsc, mono, real = min(tries)
        return tsc, mono, real


def tsc_usable() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "constant_tsc" in flags and "nonstop_tsc" in flags


class VdsoClock:
    """Keeps the guest's vDSO data page anchored to the host's clocks."""

    def __init__(self) -> None:
        self.tsc = _HostTsc()
        self.origin = self.tsc.sample()
        time.sleep(0.005)
        self.mult = self._mult(self.tsc.sample())

    def _mult(self, now: tuple[int, int, int]) -> int:
        dtsc, dns = now[0] - self.origin[0], now[1] - self.origin[1]
        return (dns << 32) // max(dtsc, 1)

    def read(self, ram: GuestMemory, monotonic: bool) -> int:
        """What the guest's clock_gettime reads now in ns, as CLOCK_GETTIME_CODE computes it."""
        # unpack_from, not ram.read: at every syscall while an interval timer is armed
        base_tsc, mono, real, mult = DATA.unpack_from(ram.view, VDSO_DATA_ADDR - ram.gpa)
        elapsed = ((((self.tsc.read() - base_tsc) & MASK64) * mult) >> 32) & MASK64
        return ((mono if monotonic else real) + elapsed) & MASK64

    def since_anchor(self, ram: GuestMemory, tsc: int) -> int:
        """The ns the guest's clocks have moved on from their bases at TSC `tsc`."""
        base_tsc, _, _, mult = DATA.unpack_from(ram.view, VDSO_DATA_ADDR - ram.gpa)
        return ((((tsc - base_tsc) & MASK64) * mult) >> 32) & MASK64

    def publish_cpu(self, ram: GuestMemory, tsc: int, process_ns: int, thread_ns: int) -> None:
        """Have the guest read its CPU clocks in the vDSO, at `process_ns` and `thread_ns`
        at TSC `tsc` and moving on with the TSC from there (as the guest runs)."""
        since = self.since_anchor(ram, tsc)
        CPU.pack_into(ram.view, CPU_ADDR - ram.gpa, (process_ns - since) & MASK64,
                      (thread_ns - since) & MASK64, 1)

    def withdraw_cpu(self, ram: GuestMemory) -> None:
        """Have the guest read its CPU clocks through the syscall again."""
        ram.zero(CPU_ADDR, CPU.size)

    def install(self, ram: GuestMemory, floor: int = 0) -> None:
        """The vDSO in a new guest's memory, its monotonic clock no earlier than `floor` ns
        (a child program's parent's reading: one clock for the process tree)."""
        ram.write(VDSO_ADDR, IMAGE)
        ram.zero(ARENA_TABLE_ADDR, ARENA_SLOTS * ARENA_SLOT_SIZE)  # empty free lists
        ram.zero(VDSO_DATA_ADDR, DATA.size + CPU.size)
        self.anchor(ram, floor)

    def anchor(self, ram: GuestMemory, floor: int = 0) -> None:
        """Re-read the host's clocks; the longer since the origin, the finer the rate."""
        now = self.tsc.sample()
        self.mult = self._mult(now)
        old = DATA.unpack(ram.read(VDSO_DATA_ADDR, DATA.size))
        mono = max(now[1], floor)
        if old[3]:  # never let the guest's monotonic clock step back (a TSC that did, a
            # snapshot's from before a reboot, counts as none elapsed)
            mono = max(mono, old[1] + ((max(now[0] - old[0], 0) * old[3]) >> 32))
        ram.write(VDSO_DATA_ADDR, DATA.pack(now[0], mono, now[2], self.mult))


IMAGE = build_image()
