"""What /proc, /sys and /etc/passwd show a USF: one process, one CPU, the VM's memory.

/proc/self/fd lists the fd table of the process that looks; /dev/fd, /dev/stdin,
/dev/stdout and /dev/stderr link into it. /proc/self/task lists its threads.

Files that describe live state (/proc/self/status, stat, statm and maps,
/proc/meminfo, /proc/stat, /proc/uptime) are rendered from the kernel at
each open; the rest is fixed when the kernel is made. Times are the host's
(its boot, the monitor process's CPU time), as getrusage and times report.
The host's /proc/cpuinfo is read then too, before any jail hides it, and
reduced to its first processor.
"""

from __future__ import annotations

import errno
import functools
import os
import resource
import time
import uuid
from typing import TYPE_CHECKING

from usetl.vm.layout import PAGE_SIZE

from .children import Usage, find_process, parent_pid
from .errors import SyscallError
from .fs import (
    DEV_DEVFS,
    DEV_PROC,
    DEV_SYSFS,
    FdDir,
    ListedDir,
    Node,
    ProcNode,
    StaticDir,
    StaticFile,
    StaticLink,
)
from .guestnet import SOMAXCONN

if TYPE_CHECKING:
    from .kernel import Kernel
    from .sched import Thread

USER_NAME = "usetl"
HOST_CPUINFO = "/proc/cpuinfo"
PROC_INO, SYS_INO = 0x100, 0x200
FD_DIR_INO = 8
TASK_DIR_INO = 9
# /proc/self/loginuid and sessionid with no login session: audit's unset id, as Linux
# prints it (no newline); glibc's getlogin() reads it and fails with ENXIO.
AUDIT_UNSET = b"4294967295"
TASK_INO = 0x100000  # /proc/self/task/<tid> is this plus 4 * tid, its files 1 and 2 more
# /dev's links into /proc/self/fd, as udev and systemd make them on Linux.
DEV_LINKS = {"fd": (22, "/proc/self/fd"), "stdin": (23, "/proc/self/fd/0"),
             "stdout": (24, "/proc/self/fd/1"), "stderr": (25, "/proc/self/fd/2")}


CLOCK_TICKS = 100  # sysconf(_SC_CLK_TCK): the unit of /proc's times
OS_RELEASE = "6.1.0-usetl"  # uname's release, and /proc/sys/kernel/osrelease
HOST_BOOT_ID = "/proc/sys/kernel/random/boot_id"


def _kib(n: int) -> int:
    return n >> 10


def uptime() -> float:
    """Seconds since the host booted (CLOCK_BOOTTIME, as Linux's /proc/uptime)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def thread_name(k: Kernel, t: Thread) -> bytes:
    """A thread's comm: the name PR_SET_NAME gave it or its creator, else its program's."""
    if t.name is not None:
        return t.name
    return os.path.basename(k.ns.proc.entries["self"].entries["exe"].readlink())[:15].encode()


def _name(k: Kernel) -> str:
    """The process's name: its main thread's."""
    main = k.sched.threads.get(k.identity.pid, k.sched.current)
    return thread_name(k, main).decode("utf-8", "replace")


def _signal_sets(k: Kernel) -> tuple[int, int]:
    """The signals the process ignores and those it catches, as bit masks."""
    ignored = caught = 0
    for signum, action in k.signals.actions.items():
        if action.handler == 1:
            ignored |= 1 << (signum - 1)
        elif action.handler != 0:
            caught |= 1 << (signum - 1)
    return ignored, caught


def render_status(k: Kernel) -> bytes:
    ident = k.identity
    sig = k.signals
    thread = k.thread_signals
    ignored, caught = _signal_sets(k)
    size = _kib(k.mm.mapped_bytes)
    lines = [
        f"Name:\t{_name(k)}", f"Umask:\t{k.umask:04o}", "State:\tR (running)",
        f"Tgid:\t{ident.pid}", "Ngid:\t0", f"Pid:\t{ident.pid}", f"PPid:\t{parent_pid(k)}",
        "TracerPid:\t0",
        f"Uid:\t{ident.uid}\t{ident.uid}\t{ident.uid}\t{ident.uid}",
        f"Gid:\t{ident.gid}\t{ident.gid}\t{ident.gid}\t{ident.gid}",
        f"FDSize:\t{max(64, len(k.fds.files))}", "Groups:\t",
        f"VmPeak:\t{size:8d} kB", f"VmSize:\t{size:8d} kB", f"VmRSS:\t{size:8d} kB",
        f"VmData:\t{size:8d} kB", f"VmStk:\t{_kib(k.mm.stack_top - k.mm.stack_bottom):8d} kB",
        f"Threads:\t{len(k.sched.threads)}", "SigQ:\t0/0",
        f"SigPnd:\t{thread.pending:016x}", f"ShdPnd:\t{sig.pending:016x}",
        f"SigBlk:\t{thread.mask:016x}", f"SigIgn:\t{ignored:016x}", f"SigCgt:\t{caught:016x}",
        "CapInh:\t0000000000000000", "CapPrm:\t0000000000000000", "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000", "CapAmb:\t0000000000000000", "NoNewPrivs:\t1",
        "Seccomp:\t0", "Cpus_allowed:\t1", "Cpus_allowed_list:\t0",
        "Mems_allowed:\t1", "Mems_allowed_list:\t0",
        "voluntary_ctxt_switches:\t0", "nonvoluntary_ctxt_switches:\t0",
    ]
    return ("\n".join(lines) + "\n").encode()


def _ticks(seconds: float) -> int:
    return int(seconds * CLOCK_TICKS)


def render_stat(k: Kernel) -> bytes:
    return (" ".join(map(str, _stat_fields(k))) + "\n").encode()


def _stat_fields(k: Kernel) -> list:
    """/proc/self/stat's 52 fields (proc(5)): what ps and psutil read (state, parent,
    group, session, CPU times, threads, start, sizes, signals); the rest 0."""
    me = find_process(k, 0)
    own = Usage.of(resource.getrusage(resource.RUSAGE_SELF))
    waited = k.children.waited_usage()
    size = k.mm.mapped_bytes
    ignored, caught = _signal_sets(k)
    fields = [
        k.identity.pid, f"({_name(k)})", "R", parent_pid(k), me.group, me.session, 0, -1, 0,
        0, 0, 0, 0, _ticks(own.user_s), _ticks(own.system_s), _ticks(waited.user_s),
        _ticks(waited.system_s), 20, 0, len(k.sched.threads), 0, _ticks(k.started), size,
        size // PAGE_SIZE, (1 << 64) - 1, 0, 0, k.mm.stack_top, 0, 0, k.signals.pending,
        k.thread_signals.mask, ignored, caught, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0,
    ]  # fmt: skip
    return fields


class TaskDir(ListedDir):
    """/proc/self/task: a directory per thread of the process that looks, named by its
    tid, with the thread's comm and stat."""

    @property
    def entries(self) -> dict[str, Node]:
        return {str(tid): StaticDir(TASK_INO + 4 * tid, {
            "comm": ProcNode(TASK_INO + 4 * tid + 1, functools.partial(render_task_comm, tid)),
            "stat": ProcNode(TASK_INO + 4 * tid + 2, functools.partial(render_task_stat, tid)),
        }, DEV_PROC) for tid in self.owner.sched.threads}


def _task(k: Kernel, tid: int) -> Thread:
    t = k.sched.threads.get(tid)
    if t is None:
        raise SyscallError(errno.ESRCH)  # the thread ended after its directory was looked up
    return t


def render_task_comm(tid: int, k: Kernel) -> bytes:
    return thread_name(k, _task(k, tid)) + b"\n"


def render_task_stat(tid: int, k: Kernel) -> bytes:
    """The process's stat with the thread's id, name and CPU time (the vCPU's turns it
    had, all counted as user time)."""
    t = _task(k, tid)
    fields = _stat_fields(k)
    fields[0:2] = [tid, f"({thread_name(k, t).decode('utf-8', 'replace')})"]
    fields[13:15] = [_ticks(k.sched.cpu_ns(t) / 1e9), 0]
    return (" ".join(map(str, fields)) + "\n").encode()


def render_statm(k: Kernel) -> bytes:
    """Sizes in pages: all of the mapped memory is resident (guest RAM), none shared."""
    pages = k.mm.mapped_bytes // PAGE_SIZE
    return f"{pages} {pages} 0 0 0 {pages} 0\n".encode()


def render_comm(k: Kernel) -> bytes:
    return _name(k).encode() + b"\n"


def render_system_stat(k: Kernel) -> bytes:
    """/proc/stat: one CPU, whose time is the monitor's; the host's boot time."""
    own = Usage.of(resource.getrusage(resource.RUSAGE_SELF))
    cpu = f"{_ticks(own.user_s)} 0 {_ticks(own.system_s)} 0 0 0 0 0 0 0"
    lines = [f"cpu  {cpu}", f"cpu0 {cpu}", "intr 0", "ctxt 0",
             f"btime {int(time.time() - uptime())}", f"processes {len(k.sched.threads)}",
             "procs_running 1", "procs_blocked 0", "softirq 0"]
    return ("\n".join(lines) + "\n").encode()


def render_uptime(k: Kernel) -> bytes:
    return f"{uptime():.2f} 0.00\n".encode()


def render_cmdline(k: Kernel) -> bytes:
    """argv's strings, each ending in NUL, as the process has them in its memory now."""
    start, end = k.mm.args
    return k.mem.read(start, end - start)


def render_environ(k: Kernel) -> bytes:
    """The environment the process started with (not what it set since), as Linux's."""
    start, end = k.mm.env
    return k.mem.read(start, end - start)


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


# /proc/net/dev: the guest's one interface (libos/netlink.py), what psutil lists interfaces
# by; its traffic is not counted (zeros).
NET_DEV = (
    b"Inter-|   Receive                                                |  Transmit\n"
    b" face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs "
    b"drop fifo colls carrier compressed\n"
    b"    lo:" + b" ".join(b"%7d" % 0 for _ in range(16)) + b"\n"
)


def _proc_sys() -> StaticDir:
    """/proc/sys: the few tunables libraries read (filelock's overflowuid, the backlog cap
    servers size their listen by, a boot id and fresh UUIDs), each Linux's value here."""
    def files(first: int, values: dict[str, bytes]) -> dict[str, StaticFile]:
        return {name: StaticFile(first + i, data + b"\n", DEV_PROC)
                for i, (name, data) in enumerate(values.items())}

    kernel = files(PROC_INO + 0x20, {
        "overflowuid": b"65534", "overflowgid": b"65534", "pid_max": b"4194304",
        "ostype": b"Linux", "osrelease": OS_RELEASE.encode()})
    random = files(PROC_INO + 0x30, {"boot_id": _host_boot_id()})
    random["uuid"] = ProcNode(PROC_INO + 0x31, render_uuid)
    kernel["random"] = StaticDir(PROC_INO + 0x2F, random, DEV_PROC)
    core = StaticDir(PROC_INO + 0x41, files(PROC_INO + 0x40, {"somaxconn": b"%d" % SOMAXCONN}),
                     DEV_PROC)
    net = StaticDir(PROC_INO + 0x42, {"core": core}, DEV_PROC)
    return StaticDir(PROC_INO + 0x43, {"kernel": StaticDir(PROC_INO + 0x2E, kernel, DEV_PROC),
                                       "net": net}, DEV_PROC)


def render_uuid(k: Kernel) -> bytes:
    return str(uuid.uuid4()).encode() + b"\n"  # a new one at each read, as Linux gives


def _host_boot_id() -> bytes:
    """The host's boot id (its boot is the guest's: /proc/uptime and btime are the host's)."""
    try:
        with open(HOST_BOOT_ID, "rb") as f:
            return f.read().strip()
    except OSError:
        return str(uuid.uuid4()).encode()


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
    own["stat"] = ProcNode(PROC_INO + 5, render_stat)
    own["statm"] = ProcNode(PROC_INO + 6, render_statm)
    own["cmdline"] = ProcNode(PROC_INO + 9, render_cmdline)
    own["environ"] = ProcNode(PROC_INO + 10, render_environ)
    own["fd"] = FdDir(FD_DIR_INO, k)
    own["task"] = TaskDir(TASK_DIR_INO, k)
    own["comm"] = ProcNode(PROC_INO + 13, render_comm)
    own["loginuid"] = StaticFile(PROC_INO + 14, AUDIT_UNSET, DEV_PROC)
    own["sessionid"] = StaticFile(PROC_INO + 15, AUDIT_UNSET, DEV_PROC)
    for name, (ino, target) in DEV_LINKS.items():
        ns.dev.entries[name] = StaticLink(ino, target, DEV_DEVFS)
    show_pid(k)
    ns.proc.entries["meminfo"] = ProcNode(PROC_INO + 3, render_meminfo)
    ns.proc.entries["cpuinfo"] = StaticFile(PROC_INO + 4, _host_cpuinfo(), DEV_PROC)
    ns.proc.entries["stat"] = ProcNode(PROC_INO + 7, render_system_stat)
    ns.proc.entries["uptime"] = ProcNode(PROC_INO + 8, render_uptime)
    dev = StaticFile(PROC_INO + 12, NET_DEV, DEV_PROC)
    ns.proc.entries["net"] = StaticDir(PROC_INO + 11, {"dev": dev}, DEV_PROC)
    ns.proc.entries["sys"] = _proc_sys()
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
