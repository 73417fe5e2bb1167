"""The libos's vDSO image is an ELF shared object glibc can read."""

import struct

from usetl.elf import ElfFile
from usetl.libos.vdso import FUNCTIONS, IMAGE


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
