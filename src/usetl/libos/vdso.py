"""A vDSO for the guest: clock_gettime without a VM exit.

There is no guest kernel to provide one, so the monitor writes a minimal
ELF shared object into guest memory (announced with AT_SYSINFO_EHDR; glibc
looks up `__vdso_clock_gettime` in it) and a data page it keeps anchored to
the host's clocks. Guest `rdtsc` reads the host's TSC, so
ns = base_ns + (rdtsc - base_tsc) * mult >> 32. CPython calls the monotonic
clock on every import lock: without this, 40% of start-up syscalls were
clock_gettime.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
import time

from usetl.vm import GuestMemory
from usetl.vm.layout import PAGE_SIZE, VDSO_ADDR, VDSO_DATA_ADDR

# Assembled from (intel syntax), DATA = VDSO_DATA_ADDR:
#   clock_gettime(edi=clock, rsi=ts):
#     MONOTONIC(1), MONOTONIC_RAW(4), MONOTONIC_COARSE(6), BOOTTIME(7) -> mono
#     REALTIME(0), REALTIME_COARSE(5) -> real; anything else: mov eax,228; syscall; ret
#   mono: mov r8,[DATA+8]; jmp common     real: mov r8,[DATA+16]
#   common: rdtsc; shl rdx,32; or rax,rdx; sub rax,[DATA]; mul qword [DATA+24]
#           shrd rax,rdx,32; add rax,r8; xor edx,edx; mov rcx,1e9; div rcx
#           mov [rsi],rax; mov [rsi+8],rdx; xor eax,eax; ret
CLOCK_GETTIME_CODE = bytes.fromhex(
    "83ff01742083ff04741b83ff06741683ff07741185ff741783ff057412b8e40000000f05c3"
    "4c8b0425{data8}eb084c8b0425{data16}0f3148c1e2204809d0482b0425{data0}"
    "48f72425{data24}480facd0204c01c031d248c7c100ca9a3b48f7f14889064889560831c0c3".format(
        **{f"data{o}": struct.pack("<I", VDSO_DATA_ADDR + o).hex() for o in (0, 8, 16, 24)}
    )
)

CODE_OFFSET = 0x200
DATA = struct.Struct("<QQQQ")  # base_tsc, base_monotonic_ns, base_realtime_ns, mult (32.32)


def build_image() -> bytes:
    """The vDSO's ELF image: ET_DYN at vaddr 0, one PT_LOAD, one PT_DYNAMIC, one symbol."""
    dynstr = b"\0__vdso_clock_gettime\0linux-vdso.so.1\0"
    sym_name, soname = 1, dynstr.index(b"linux-vdso")
    ehdr_size, phdr_size, dyn_off = 64, 56, 64 + 2 * 56
    dyn_count = 7
    hash_off = dyn_off + 16 * dyn_count
    symtab_off = hash_off + 24  # nbucket, nchain, bucket[1], chain[2], padded to 8
    strtab_off = symtab_off + 2 * 24
    image = bytearray(CODE_OFFSET + len(CLOCK_GETTIME_CODE))
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
    struct.pack_into("<IIIII", image, hash_off, 1, 2, 1, 0, 0)
    # symbol 1: global function in a (nameless) section 1, at the code
    struct.pack_into("<IBBHQQ", image, symtab_off + 24, sym_name, 0x12, 0, 1, CODE_OFFSET,
                     len(CLOCK_GETTIME_CODE))
    image[strtab_off : strtab_off + len(dynstr)] = dynstr
    assert strtab_off + len(dynstr) <= CODE_OFFSET
    image[CODE_OFFSET:] = CLOCK_GETTIME_CODE
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
        """(tsc, monotonic ns, realtime ns) read as close together as Python can."""
        mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        tsc = self.read()
        real = time.time_ns()
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

    def install(self, ram: GuestMemory) -> None:
        ram.write(VDSO_ADDR, IMAGE)
        self.anchor(ram)

    def anchor(self, ram: GuestMemory) -> None:
        """Re-read the host's clocks; the longer since the origin, the finer the rate."""
        now = self.tsc.sample()
        self.mult = self._mult(now)
        old = DATA.unpack(ram.read(VDSO_DATA_ADDR, DATA.size))
        mono = now[1]
        if old[3]:  # never let the guest's monotonic clock step back
            mono = max(mono, old[1] + (((now[0] - old[0]) * old[3]) >> 32))
        ram.write(VDSO_DATA_ADDR, DATA.pack(now[0], mono, now[2], self.mult))


IMAGE = build_image()
