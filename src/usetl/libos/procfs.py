"""What /proc, /sys and /etc/passwd show a USF: one process, one CPU, the VM's memory.

/proc/self/fd lists the fd table of the process that looks; /dev/fd, /dev/stdin,
/dev/stdout and /dev/stderr link into it.

Files that describe live state (/proc/self/status, /proc/self/maps,
/proc/meminfo) are rendered from the kernel at each open; the rest is
fixed when the kernel is made. The host's /proc/cpuinfo is read then too,
before any jail hides it, and reduced to its first processor.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .fs import DEV_DEVFS, DEV_PROC, DEV_SYSFS, FdDir, ProcNode, StaticDir, StaticFile, StaticLink

if TYPE_CHECKING:
    from .kernel import Kernel

USER_NAME = "usetl"
HOST_CPUINFO = "/proc/cpuinfo"
PROC_INO, SYS_INO = 0x100, 0x200
FD_DIR_INO = 8
# /dev's links into /proc/self/fd, as udev and systemd make them on Linux.
DEV_LINKS = {"fd": (22, "/proc/self/fd"), "stdin": (23, "/proc/self/fd/0"),
             "stdout": (24, "/proc/self/fd/1"), "stderr": (25, "/proc/self/fd/2")}


def _kib(n: int) -> int:
    return n >> 10


def render_status(k: Kernel) -> bytes:
    ident = k.identity
    name = os.path.basename(k.ns.proc.entries["self"].entries["exe"].readlink())[:15]
    sig = k.signals
    thread = k.thread_signals
    ignored = caught = 0
    for signum, action in sig.actions.items():
        if action.handler == 1:
            ignored |= 1 << (signum - 1)
        elif action.handler != 0:
            caught |= 1 << (signum - 1)
    size = _kib(k.mm.mapped_bytes)
    lines = [
        f"Name:\t{name}", f"Umask:\t{k.umask:04o}", "State:\tR (running)",
        f"Tgid:\t{ident.pid}", "Ngid:\t0", f"Pid:\t{ident.pid}", "PPid:\t0", "TracerPid:\t0",
        f"Uid:\t{ident.uid}\t{ident.uid}\t{ident.uid}\t{ident.uid}",
        f"Gid:\t{ident.gid}\t{ident.gid}\t{ident.gid}\t{ident.gid}",
        f"FDSize:\t{max(64, len(k.fds.files))}", "Groups:\t",
        f"VmPeak:\t{size:8d} kB", f"VmSize:\t{size:8d} kB", f"VmRSS:\t{size:8d} kB",
        f"VmData:\t{size:8d} kB", f"VmStk:\t{_kib(k.mm.stack_top - k.mm.stack_bottom):8d} kB",
        "Threads:\t1", "SigQ:\t0/0",
        f"SigPnd:\t{thread.pending:016x}", f"ShdPnd:\t{sig.pending:016x}",
        f"SigBlk:\t{thread.mask:016x}", f"SigIgn:\t{ignored:016x}", f"SigCgt:\t{caught:016x}",
        "CapInh:\t0000000000000000", "CapPrm:\t0000000000000000", "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000", "CapAmb:\t0000000000000000", "NoNewPrivs:\t1",
        "Seccomp:\t0", "Cpus_allowed:\t1", "Cpus_allowed_list:\t0",
        "Mems_allowed:\t1", "Mems_allowed_list:\t0",
        "voluntary_ctxt_switches:\t0", "nonvoluntary_ctxt_switches:\t0",
    ]
    return ("\n".join(lines) + "\n").encode()


def render_maps(k: Kernel) -> bytes:
    """The memory map: RAM is mapped read-write-execute, so every area says rwxp.

    Adjacent areas of one name are one line, as Linux merges such mappings.
    """
    merged: list[list] = []
    for area in k.mm.areas:
        if merged and merged[-1][1] == area.start and merged[-1][2] == area.name:
            merged[-1][1] = area.end
        else:
            merged.append([area.start, area.end, area.name])
    out = []
    for start, end, name in merged:
        line = f"{start:08x}-{end:08x} rwxp 00000000 00:00 0"
        out.append(line if name == "[anon]" else f"{line:<72} {name}")
    return ("\n".join(out) + "\n").encode()


def render_meminfo(k: Kernel) -> bytes:
    total = _kib(k.vm.ram.size)
    free = max(total - _kib(k.mm.mapped_bytes), 0)
    rows = [
        ("MemTotal", total), ("MemFree", free), ("MemAvailable", free), ("Buffers", 0),
        ("Cached", 0), ("SwapCached", 0), ("Active", total - free), ("Inactive", 0),
        ("SwapTotal", 0), ("SwapFree", 0), ("Shmem", _kib(k.ns.tmp.used)),
        ("CommitLimit", total), ("Committed_AS", total - free),
    ]
    return "".join(f"{name + ':':<16}{kib:>8} kB\n" for name, kib in rows).encode()


def first_processor(cpuinfo: str) -> bytes:
    """The first processor's block, renumbered as a machine with one CPU."""
    block = cpuinfo.split("\n\n", 1)[0].strip("\n")
    one = {"processor": "0", "siblings": "1", "cpu cores": "1", "core id": "0",
           "physical id": "0", "apicid": "0", "initial apicid": "0"}
    lines = []
    for line in block.splitlines():
        key, sep, _ = line.partition(":")
        if sep and key.strip() in one:
            line = f"{key}: {one[key.strip()]}"
        lines.append(line)
    return ("\n".join(lines) + "\n\n").encode()


def _host_cpuinfo() -> bytes:
    try:
        with open(HOST_CPUINFO) as f:
            return first_processor(f.read())
    except OSError:
        return b"processor\t: 0\n\n"


def passwd_files(uid: int, gid: int) -> dict[str, bytes]:
    """/etc/passwd and /etc/group naming root, the guest's user and nobody."""
    passwd = (
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"{USER_NAME}:x:{uid}:{gid}:usetl function:/tmp:/usr/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    group = f"root:x:0:\n{USER_NAME}:x:{gid}:\nnogroup:x:65534:\n"
    return {"passwd": passwd.encode(), "group": group.encode()}


def install(k: Kernel) -> None:
    """Fill /proc, /sys and the identity files of /etc for the kernel `k`."""
    ns = k.ns
    own = ns.proc.entries["self"].entries
    own["status"] = ProcNode(PROC_INO + 1, render_status)
    own["maps"] = ProcNode(PROC_INO + 2, render_maps)
    own["fd"] = FdDir(FD_DIR_INO, k)
    for name, (ino, target) in DEV_LINKS.items():
        ns.dev.entries[name] = StaticLink(ino, target, DEV_DEVFS)
    show_pid(k)
    ns.proc.entries["meminfo"] = ProcNode(PROC_INO + 3, render_meminfo)
    ns.proc.entries["cpuinfo"] = StaticFile(PROC_INO + 4, _host_cpuinfo(), DEV_PROC)
    cpus = {name: StaticFile(SYS_INO + i, b"0\n", DEV_SYSFS)
            for i, name in enumerate(("online", "possible", "present"))}
    cpu = StaticDir(SYS_INO + 10, cpus, DEV_SYSFS)
    system = StaticDir(SYS_INO + 11, {"cpu": cpu}, DEV_SYSFS)
    ns.sys.entries["devices"] = StaticDir(SYS_INO + 12, {"system": system}, DEV_SYSFS)
    for name, data in passwd_files(k.identity.uid, k.identity.gid).items():
        ns.put_etc(name, data)



def show_pid(k: Kernel) -> None:
    """/proc/<pid> is /proc/self, for the process's own pid only (its pid changes when a
    fork's copy or a program's kernel becomes a child)."""
    entries = k.ns.proc.entries
    for name in [n for n in entries if n.isdigit()]:
        del entries[name]
    entries[str(k.identity.pid)] = entries["self"]
