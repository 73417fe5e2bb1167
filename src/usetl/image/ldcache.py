"""The image's /etc/ld.so.cache: the host's entries for the libraries the image carries.

ld.so looks a library it needs up in the cache after the RPATH and RUNPATH
directories and before the default ones; without one it searches each default
directory's hwcaps and legacy subdirectories first (a failed openat and a stat
each, every one a VM exit in a USF). `ctypes.util.find_library` reads the cache
through `ldconfig -p`. The image's userland is the host's, so its cache is the
host's, less what the image does not carry.

glibc's format ("glibc-ld.so.cache1.1", elf/dl-cache.h): a 48-byte header, the
entries (flags, key and value offsets into the file, an unused OS version, a
hwcap word: 24 bytes each), then the strings. ld.so finds a key by binary search
over entries sorted in decreasing `_dl_cache_libcmp` order, which compares runs
of digits as numbers.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable

MAGIC = b"glibc-ld.so.cache1.1"
HEADER = struct.Struct("<20sIIB3xI12x")  # magic and version, nlibs, len_strings, flags, extension
ENTRY = struct.Struct("<iIIIQ")  # flags, key, value, osversion, hwcap
ENDIAN_LITTLE = 2  # cache_file_new_flags_endian_little
DIGITS = "0123456789"


def read_entries(data: bytes) -> list[tuple[int, str, str]]:
    """(flags, soname, path) of a cache file's entries for any CPU (hwcap 0), in its order;
    [] for a file of another format (the old "ld.so-1.7.0" one)."""
    if len(data) < HEADER.size or not data.startswith(MAGIC):
        return []
    _, count, _, _, _ = HEADER.unpack_from(data)
    entries = []
    for i in range(count):
        flags, key, value, _, hwcap = ENTRY.unpack_from(data, HEADER.size + i * ENTRY.size)
        if hwcap == 0:
            entries.append((flags, _string(data, key), _string(data, value)))
    return entries


def _string(data: bytes, offset: int) -> str:
    return data[offset : data.index(b"\0", offset)].decode()


def cache_bytes(entries: list[tuple[int, str, str]]) -> bytes:
    """A cache file of (flags, soname, path) entries, sorted as ld.so searches them."""
    ordered = sorted(entries, key=functools.cmp_to_key(lambda a, b: libcmp(a[1], b[1])),
                     reverse=True)
    strings = bytearray()
    base = HEADER.size + ENTRY.size * len(ordered)
    rows = []
    for flags, key, value in ordered:
        at = base + len(strings)
        strings += key.encode() + b"\0"
        rows.append(ENTRY.pack(flags, at, base + len(strings), 0, 0))
        strings += value.encode() + b"\0"
    header = HEADER.pack(MAGIC, len(ordered), len(strings), ENDIAN_LITTLE, 0)
    return header + b"".join(rows) + bytes(strings)


def libcmp(a: str, b: str) -> int:
    """glibc's _dl_cache_libcmp: character order, except that runs of digits compare as
    numbers and a digit sorts after any other character."""
    i = j = 0
    while i < len(a):
        digit_b = j < len(b) and b[j] in DIGITS
        if a[i] in DIGITS and digit_b:
            i, x = _number(a, i)
            j, y = _number(b, j)
            if x != y:
                return x - y
        elif a[i] in DIGITS:
            return 1
        elif digit_b:
            return -1
        elif j >= len(b) or a[i] != b[j]:
            return ord(a[i]) - (ord(b[j]) if j < len(b) else 0)
        else:
            i, j = i + 1, j + 1
    return -ord(b[j]) if j < len(b) else 0


def _number(s: str, i: int) -> tuple[int, int]:
    """(the index after the run of digits at i, its value)."""
    j = i
    while j < len(s) and s[j] in DIGITS:
        j += 1
    return j, int(s[i:j])


def image_cache(host_cache: bytes, carried: Callable[[str], bool]) -> bytes | None:
    """The image's cache: the host's entries whose path the image carries (None: the host
    has no cache of this format, or none of its libraries are carried)."""
    entries = [e for e in read_entries(host_cache) if carried(e[2])]
    return cache_bytes(entries) if entries else None
