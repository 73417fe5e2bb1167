"""Pseudo-terminals: /dev/ptmx opens a pseudo-terminal of the host's, held by the monitor.

Its line discipline, termios and window size are then Linux's own (N_TTY:
canonical lines, echo, CR and NL translation, erase and kill, EOF), and its
ends are host fds (hostpipe.py), so a forked process or a child program in a
sibling VM shares the terminal as on Linux (a pexpect-driven child, a program
on a pty's slave). In a jail the host's pseudo-terminals are a devpts
instance of the jail's own (namespaces.py), none of the host's or another
jail's. termios (TCGETS, TCSETS*), the window size, FIONREAD, TIOCOUTQ,
TCFLSH, TCXONC, TCSBRK, TIOCGPTN, TIOCSPTLCK, TIOCGPTLCK and TIOCGPTPEER
(how glibc's openpty opens the slave) go to the host terminal. A USF has one
session and one process group, the guest's, so TIOCSCTTY, TIOCSPGRP and
TIOCNOTTY change nothing and TIOCGPGRP and TIOCGSID answer the guest's pid;
with no foreground group on the host terminal, ISIG characters signal no
one. /dev/pts shows the pseudo-terminals this process made (a forked or exec'd
child, those its parent had made), as long as their masters are open, so a slave
opens again by name (ptsname, ttyname, the tty program) and none other does.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat as st
import struct
from typing import TYPE_CHECKING

from .errors import SyscallError
from .files import O_ACCMODE, O_CLOEXEC, O_NONBLOCK, O_RDWR
from .fs import Node, StaticDir
from .hostpipe import HostStreamFile

if TYPE_CHECKING:
    from .kernel import Kernel

HOST_PTMX = "/dev/ptmx"  # the jail's is its own devpts instance's
HOST_PTS = "/dev/pts/{}"
TERMIOS_SIZE, WINSIZE_SIZE, INT = 36, 8, struct.Struct("<i")
TCGETS, TCSETS, TCSETSW, TCSETSF, TCSBRK, TCXONC, TCFLSH = (
    0x5401, 0x5402, 0x5403, 0x5404, 0x5409, 0x540A, 0x540B)
TIOCSCTTY, TIOCGPGRP, TIOCSPGRP, TIOCOUTQ, TIOCGWINSZ, TIOCSWINSZ, FIONREAD = (
    0x540E, 0x540F, 0x5410, 0x5411, 0x5413, 0x5414, 0x541B)
TIOCNOTTY, TIOCGSID, TIOCGPTPEER = 0x5422, 0x5429, 0x5441
TIOCGPTN, TIOCSPTLCK, TIOCGPTLCK = 0x80045430, 0x40045431, 0x80045439
PTMX_RDEV, PTS_MAJOR = 5 << 8 | 2, 136
# Requests whose argument is a struct in guest memory the host reads (size), or writes.
READS = {TCSETS: TERMIOS_SIZE, TCSETSW: TERMIOS_SIZE, TCSETSF: TERMIOS_SIZE,
         TIOCSWINSZ: WINSIZE_SIZE, TIOCSPTLCK: INT.size}
WRITES = {TCGETS: TERMIOS_SIZE, TIOCGWINSZ: WINSIZE_SIZE, FIONREAD: INT.size,
          TIOCOUTQ: INT.size}
BY_VALUE = (TCSBRK, TCXONC, TCFLSH)  # an int argument, passed as it is
MASTER_WRITES = {**WRITES, TIOCGPTN: INT.size, TIOCGPTLCK: INT.size}
SESSION = (TIOCGPGRP, TIOCGSID)  # the guest's one process group and session: its pid
NO_EFFECT = (TIOCSCTTY, TIOCSPGRP, TIOCNOTTY)


class PtmxNode(Node):
    """/dev/ptmx: each open makes a new pseudo-terminal and is its master."""

    def __init__(self, ino: int) -> None:
        super().__init__(st.S_IFCHR | 0o666, ino)
        self.rdev = PTMX_RDEV

    def open(self, k: Kernel, flags: int) -> PtyMaster:
        fd = _host_open(HOST_PTMX, O_RDWR)
        master = PtyMaster(k, fd, flags, self)
        pts = pts_dir(k)
        pts.entries[str(master.number)] = PtsNode(master.number, k.ns.inodes.next())
        return master


class PtsNode(Node):
    """/dev/pts/N: the slave of a pseudo-terminal this process made."""

    def __init__(self, number: int, ino: int) -> None:
        super().__init__(st.S_IFCHR | 0o620, ino)
        self.rdev = PTS_MAJOR << 8 | number
        self.number = number

    @property
    def path(self) -> str:
        return HOST_PTS.format(self.number)

    def open(self, k: Kernel, flags: int) -> TerminalFile:
        """The slave opened again (EIO while the master locks it)."""
        return TerminalFile(k, _host_open(self.path, flags & O_ACCMODE), flags, self)


def pts_dir(k: Kernel) -> StaticDir:
    pts = k.ns.dev.entries["pts"]
    assert isinstance(pts, StaticDir)
    return pts


def _host_open(path: str, access: int) -> int:
    try:
        return os.open(path, access | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise SyscallError(e.errno or errno.EIO) from None


class TerminalFile(HostStreamFile):
    """An end of a host pseudo-terminal, `node` its /dev/pts (or /dev/ptmx) node: a terminal
    to isatty and termios."""

    writes = WRITES  # the requests whose answer the host writes, and its size

    def __init__(self, k: Kernel, fd: int, flags: int, node: Node):
        path = node.path if isinstance(node, PtsNode) else HOST_PTMX
        super().__init__(k, fd, flags & (O_ACCMODE | O_NONBLOCK), node.mode, path)
        self.node = node

    def isatty(self) -> bool:
        return True

    def ioctl(self, k: Kernel, request: int, arg: int) -> int:
        if request in SESSION:
            k.mem.put_u32(arg, k.identity.pid)
            return 0
        if request in NO_EFFECT:
            return 0
        if request in READS:
            self._host_ioctl(request, bytes(k.mem.read(arg, READS[request])))
        elif request in self.writes:
            k.mem.write(arg, self._host_ioctl(request, bytes(self.writes[request])))
        elif request in BY_VALUE:
            self._host_ioctl(request, arg & 0xFFFFFFFF)
        else:
            raise SyscallError(errno.ENOTTY)
        return 0

    def _host_ioctl(self, request: int, arg: bytes | int) -> bytes | int:
        if self.fd is None:
            raise SyscallError(errno.EIO)  # another process's terminal (see hostpipe.py)
        try:
            return fcntl.ioctl(self.fd, request, arg)
        except OSError as e:
            raise SyscallError(e.errno or errno.EIO) from None


class PtyMaster(TerminalFile):
    writes = MASTER_WRITES

    def __init__(self, k: Kernel, fd: int, flags: int, node: PtmxNode):
        super().__init__(k, fd, O_RDWR | flags & O_NONBLOCK, node)
        self.number = INT.unpack(self._host_ioctl(TIOCGPTN, bytes(INT.size)))[0]
        self.maker = k.identity.pid  # whose /dev/pts shows it (a fork's child's copy too)

    def ioctl(self, k: Kernel, request: int, arg: int) -> int:
        if request == TIOCGPTPEER:
            return self._open_slave(k, arg)
        return super().ioctl(k, request, arg)

    def _open_slave(self, k: Kernel, flags: int) -> int:
        """The slave, opened through the master (EIO while it is locked)."""
        fd = self._host_ioctl(TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        assert isinstance(fd, int)
        node = pts_dir(self.kernel).entries.get(str(self.number))
        if node is None:  # this process did not make it (a fork's child): as its parent's
            node = PtsNode(self.number, k.ns.inodes.next())
        slave = TerminalFile(k, fd, O_RDWR | flags & O_NONBLOCK, node)
        try:
            return k.fds.install(slave, cloexec=bool(flags & O_CLOEXEC))
        except SyscallError:
            slave.close()
            raise

    def close(self) -> None:
        """As on Linux, the pseudo-terminal's /dev/pts entry goes with its master (where
        it was made: a forked child that closes its copy still sees it)."""
        super().close()
        if self.kernel.identity.pid == self.maker:
            pts_dir(self.kernel).entries.pop(str(self.number), None)
