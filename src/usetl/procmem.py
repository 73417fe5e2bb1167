"""Memory of host processes, from /proc: USS, PSS and RSS, and the host's MemAvailable."""

from __future__ import annotations

import os
from pathlib import Path

KIB = 1024
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def smaps_rollup(pid: int) -> dict[str, int]:
    """Fields of /proc/PID/smaps_rollup, in bytes."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            fields[name.strip()] = int(parts[0]) * KIB
    return fields


def resident_bytes(pid: int) -> int:
    """A process's resident memory (anonymous, file and shared pages), from the kernel's
    counters in /proc/PID/statm: no walk of its page tables, unlike smaps_rollup."""
    fd = os.open(f"/proc/{pid}/statm", os.O_RDONLY)
    try:
        return int(os.read(fd, 128).split()[1]) * PAGE_SIZE
    finally:
        os.close(fd)


def process_memory(pids: list[int]) -> dict[str, int]:
    """USS (private pages), PSS and RSS summed over the processes of one instance."""
    uss = pss = rss = 0
    for pid in pids:
        f = smaps_rollup(pid)
        uss += f["Private_Clean"] + f["Private_Dirty"]
        pss += f["Pss"]
        rss += f["Rss"]
    return {"uss": uss, "pss": pss, "rss": rss}


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children first), from /proc/PID/task/TID/children; one
    that ends meanwhile is left out with its own."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop(0)
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            continue
        found += children
        pending += children
    return found


def descendants_private_bytes(pid: int) -> int:
    """The private bytes (USS) of every process below `pid`: what it runs besides itself."""
    total = 0
    for child in descendants(pid):
        try:
            total += process_memory([child])["uss"]
        except (OSError, KeyError):  # it ended meanwhile
            continue
    return total


def private_by_kind(pid: int) -> dict[str, int]:
    """A process's private bytes (USS) by what holds them, from /proc/PID/smaps: "guest RAM"
    (a USF's copy-on-write copies of its template's RAM), "ETL regions" (its regions' files of
    its own), "Python and C heap" (anonymous memory: CPython's arenas, malloc's heap; and the
stack),
    "libpython data" (the interpreter's static objects), "other"."""
    kinds = dict.fromkeys(("guest RAM", "ETL regions", "Python and C heap", "libpython data",
                           "other"), 0)
    kind = "other"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head, _, rest = line.partition(" ")
        if "-" in head and not head.endswith(":"):
            kind = _mapping_kind(rest.split(maxsplit=4)[4:])
        elif head in ("Private_Clean:", "Private_Dirty:"):
            kinds[kind] += int(rest.split()[0]) * KIB
    return kinds


def _mapping_kind(name: list[str]) -> str:
    """The kind of a mapping by its name (smaps' sixth column, absent for anonymous memory)."""
    if not name or name[0] in ("[heap]", "[stack]"):
        return "Python and C heap"
    if name[0].startswith("/memfd:usetl-ram"):
        return "guest RAM"
    if name[0].startswith("/memfd:usetl-"):
        return "ETL regions"
    if "/libpython" in name[0]:
        return "libpython data"
    return "other"


def page_table_bytes(pid: int) -> int:
    """The host page tables of a process (VmPTE), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmPTE:"):
            return int(line.split()[1]) * KIB
    raise KeyError("VmPTE")


def meminfo(field: str) -> int:
    """A field of /proc/meminfo, in bytes: MemAvailable, or SecPageTables (the page tables
    KVM keeps for its guests, which no process's figures show)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * KIB
    raise KeyError(field)


def mem_available() -> int:
    """MemAvailable from /proc/meminfo, in bytes."""
    return meminfo("MemAvailable")
