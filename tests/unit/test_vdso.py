"""The libos's vDSO image is an ELF shared object glibc can read."""

from usetl.elf import ElfFile
from usetl.libos.vdso import CLOCK_GETTIME_CODE, CODE_OFFSET, IMAGE


def test_vdso_image_parses_as_a_shared_object_with_its_code():
    elf = ElfFile.parse(IMAGE, name="vdso")
    assert elf.is_pie and elf.interp is None
    assert elf.span() == (0, len(IMAGE))
    assert IMAGE[CODE_OFFSET:] == CLOCK_GETTIME_CODE
    assert b"__vdso_clock_gettime\0" in IMAGE
