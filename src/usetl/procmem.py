"""Memory of host processes, from /proc: USS, PSS and RSS, and the host's MemAvailable."""

from __future__ import annotations

from pathlib import Path

KIB = 1024


def smaps_rollup(pid: int) -> dict[str, int]:
    """Fields of /proc/PID/smaps_rollup, in bytes."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            fields[name.strip()] = int(parts[0]) * KIB
    return fields


def process_memory(pids: list[int]) -> dict[str, int]:
    """USS (private pages), PSS and RSS summed over the processes of one instance."""
    uss = pss = rss = 0
    for pid in pids:
        f = smaps_rollup(pid)
        uss += f["Private_Clean"] + f["Private_Dirty"]
        pss += f["Pss"]
        rss += f["Rss"]
    return {"uss": uss, "pss": pss, "rss": rss}


def mem_available() -> int:
    """MemAvailable from /proc/meminfo, in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * KIB
    raise KeyError("MemAvailable")
