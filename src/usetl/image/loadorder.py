"""The libraries to load by path before an extension module, so that ld.so finds each by
soname instead of searching for it.

Loading a library its DT_NEEDED names, ld.so first looks for one loaded already
whose soname is that name; only then does it search: the RPATH directories (a
failed openat and a stat for each of their hwcaps and legacy subdirectories the
first time, every one a VM exit in a USF), LD_LIBRARY_PATH, RUNPATH, then
/etc/ld.so.cache (opened, mapped and unmapped again on each dlopen that reads it:
five syscalls) or the default directories. usetl.importer loads the libraries
recorded here (the archive meta's "libraries") by path, in this order, before the
module, and ld.so then finds them all by soname.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from usetl.elf import ElfFile

# Libraries every CPython process has loaded already (a second copy must not be loaded).
ALWAYS_LOADED = frozenset({"libc.so.6", "libm.so.6", "ld-linux-x86-64.so.2"})

# (a DT_NEEDED name, the directories searched for it) -> the path ld.so would load, or None
# where the library is left to ld.so's own search.
Find = Callable[[str, list[str]], str | None]
ElfOf = Callable[[str], ElfFile | None]


def load_order(module: str, find: Find, elf_of: ElfOf) -> list[list[str]]:
    """[path, soname] of what `module` needs, each after what it needs in turn.

    A library whose soname is not the name it is needed by is left out (ld.so would
    not match it, and searches for it as before), and so is one that needs it: loaded
    on its own it would not find it, having no loader's RPATH to inherit.
    """
    order: list[list[str]] = []
    _visit(module, [], find, elf_of, order, set())
    return order


def _visit(path: str, inherited: list[str], find: Find, elf_of: ElfOf,
           order: list[list[str]], seen: set[str]) -> bool:
    """Append what `path` needs to `order`; returns whether all of it was. `inherited`: the
    RPATH directories of the objects that need it, which ld.so searches for it too;
    `seen`: the libraries visited, which a cycle of needs meets again."""
    elf = elf_of(path)
    if elf is None:
        return False
    origin = os.path.dirname(path)  # $ORIGIN is the directory of the object naming it
    search = [d.replace("${ORIGIN}", origin).replace("$ORIGIN", origin)
              for d in elf.runpath] + inherited
    complete = True
    for name in elf.needed:
        found = None if name in ALWAYS_LOADED else find(name, search)
        if found is None:
            continue
        if found in seen:
            complete = complete and any(found == p for p, _ in order)
            continue
        seen.add(found)
        needed = elf_of(found)
        if _visit(found, search, find, elf_of, order, seen) and needed is not None \
                and needed.soname == name:
            order.append([found, name])
        else:
            complete = False
    return complete
