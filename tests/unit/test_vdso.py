"""The libos's vDSO image is an ELF shared object glibc can read."""

import ctypes
import mmap
import struct

import pytest

from usetl.elf import ElfFile
from usetl.libos.vdso import ARENA_KEPT, ARENA_MAX_KEPT, ARENA_SLOTS, FUNCTIONS, IMAGE
from usetl.vm.layout import ARENA_TABLE_ADDR


def _symbols(image: bytes) -> dict[str, tuple[int, int]]:
    """name -> (value, size), found as glibc finds them: through DT_HASH's chains."""
    dynamic = {}
    for i in range(7):
        tag, value = struct.unpack_from("<qQ", image, 64 + 2 * 56 + 16 * i)
        dynamic[tag] = value
    hashtab, strtab, symtab = dynamic[4], dynamic[5], dynamic[6]
    nbucket, nchain = struct.unpack_from("<II", image, hashtab)
    buckets = struct.unpack_from(f"<{nbucket}I", image, hashtab + 8)
    chains = struct.unpack_from(f"<{nchain}I", image, hashtab + 8 + 4 * nbucket)
    found, index = {}, buckets[0]
    while index:
        name, _, _, _, value, size = struct.unpack_from("<IBBHQQ", image, symtab + 24 * index)
        found[image[strtab + name:].split(b"\0")[0].decode()] = (value, size)
        index = chains[index]
    return found


def test_vdso_image_parses_as_a_shared_object_with_its_functions():
    elf = ElfFile.parse(IMAGE, name="vdso")
    assert elf.is_pie and elf.interp is None
    assert elf.span() == (0, len(IMAGE))
    symbols = _symbols(IMAGE)
    assert sorted(symbols) == sorted(name for name, _ in FUNCTIONS)
    for name, code in FUNCTIONS:
        at, size = symbols[name]
        assert size == len(code) and IMAGE[at : at + size] == code and at % 16 == 0


def test_the_arena_allocator_reuses_freed_blocks_by_size():
    # Run on the host: its page of free lists is mapped where the guest has it.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    map_fixed_noreplace, rw_private_anon = 0x100000, (3, 0x22)
    prot, flags = rw_private_anon
    table = libc.mmap(ARENA_TABLE_ADDR, 4096, prot, flags | map_fixed_noreplace, -1, 0)
    if table != ARENA_TABLE_ADDR:
        pytest.skip("the free lists' address is taken in this process")
    code = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    try:
        code.write(IMAGE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(code))
        symbols = _symbols(IMAGE)
        alloc = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)(
            base + symbols["__usetl_arena_alloc"][0])
        free = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)(
            base + symbols["__usetl_arena_free"][0])
        chunk, arena, huge = 16 << 10, 1 << 20, 4 << 20
        first, second = alloc(None, chunk), alloc(None, chunk)
        ctypes.memset(first, 0x5A, chunk)  # fresh mappings, writable
        free(None, first, chunk)
        free(None, second, chunk)
        assert alloc(None, chunk) == second and alloc(None, chunk) == first  # last in, first out
        big = alloc(None, arena)
        free(None, big, arena)
        assert alloc(None, arena) == big  # a list of its own size
        kept = [alloc(None, chunk) for _ in range(ARENA_KEPT + 2)]
        for block in kept:
            free(None, block, chunk)
        # The list holds ARENA_KEPT blocks; the others were unmapped.
        again = {alloc(None, chunk) for _ in range(ARENA_KEPT)}
        assert again == set(kept[:ARENA_KEPT])
        block = alloc(None, huge)
        free(None, block, huge)  # over ARENA_MAX_KEPT: unmapped, not kept
        slots = (ctypes.c_uint64 * (4 * ARENA_SLOTS)).from_address(ARENA_TABLE_ADDR)
        assert huge not in list(slots)[::4] and huge > ARENA_MAX_KEPT
        for block in [first, second, big, *again]:
            free(None, block, arena if block == big else chunk)
    finally:
        libc.munmap(ctypes.c_void_p(ARENA_TABLE_ADDR), ctypes.c_size_t(4096))
