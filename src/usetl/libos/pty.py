"""Pseudo-terminals: /dev/ptmx makes a master and slave pair, held in the monitor.

As on Linux: what the master writes is the slave's input, through the line
discipline (ICRNL, INLCR, IGNCR; in canonical mode, ICANON, the slave reads
whole lines, VERASE and VKILL edit the line and VEOF ends it; ECHO sends
the input back to the master, ECHOCTL as ^X); what the slave writes is the
master's output (OPOST with ONLCR turns "\\n" into "\\r\\n"). termios
(TCGETS, TCSETS, TCSETSW, TCSETSF), the window size, TIOCGPTN,
TIOCSPTLCK and TIOCGPTPEER (how glibc's openpty opens the slave) are
served. ISIG characters are input like any other (a USF has no process
groups to signal) and the other termios flags are kept, not applied. Once
the master is closed the slave reads end of file and its writes fail with
EIO; once a slave was opened and every slave is closed, the master's reads
fail with EIO. There is no /dev/pts directory to open a slave by name.

The bytes travel in two ipc Channels (master to slave, slave to master),
so blocking, poll, select and epoll work as for pipes.
"""

from __future__ import annotations

import errno
import stat as st
import struct
from collections import deque
from typing import TYPE_CHECKING

from .errors import SyscallError
from .files import O_CLOEXEC, O_NONBLOCK, O_RDWR
from .fs import Node
from .ipc import PIPE_BUF, READABLE, Channel, ChannelFile

if TYPE_CHECKING:
    from .kernel import Kernel

TERMIOS = struct.Struct("<IIIIB19s")  # the kernel's struct termios: flags, c_line, c_cc
WINSIZE = struct.Struct("<HHHH")
IGNCR, INLCR, ICRNL, IXON = 0o200, 0o100, 0o400, 0o2000
OPOST, ONLCR = 0o1, 0o4
ISIG, ICANON, ECHO, ECHOE, ECHOCTL = 0o1, 0o2, 0o10, 0o20, 0o1000
VERASE, VKILL, VEOF, VEOL = 2, 3, 4, 11
# Linux's tty_std_termios: B38400 CS8 CREAD HUPCL, and its INIT_C_CC.
DEFAULT_TERMIOS = (ICRNL | IXON, OPOST | ONLCR, 0o17 | 0o60 | 0o200 | 0o2000,
                   ISIG | ICANON | ECHO | ECHOE | 0o40 | ECHOCTL | 0o4000 | 0o100000, 0,
                   b"\x03\x1c\x7f\x15\x04\x00\x01\x00\x11\x13\x1a\x00\x12\x0f\x17\x16\x00\x00\x00")
LINE_MAX = 4095  # N_TTY's line buffer: more is dropped
TCGETS, TCSETS, TCSETSW, TCSETSF, TCSBRK, TCXONC, TCFLSH = (
    0x5401, 0x5402, 0x5403, 0x5404, 0x5409, 0x540A, 0x540B)
TIOCSCTTY, TIOCGPGRP, TIOCSPGRP, TIOCOUTQ, TIOCGWINSZ, TIOCSWINSZ, FIONREAD = (
    0x540E, 0x540F, 0x5410, 0x5411, 0x5413, 0x5414, 0x541B)
TIOCNOTTY, TIOCGSID, TIOCGPTPEER = 0x5422, 0x5429, 0x5441
TIOCGPTN, TIOCSPTLCK, TIOCGPTLCK = 0x80045430, 0x40045431, 0x80045439
PTS_MAJOR = 136


class PtmxNode(Node):
    """/dev/ptmx: each open makes a new pseudo-terminal and is its master."""

    def __init__(self, ino: int) -> None:
        super().__init__(st.S_IFCHR | 0o666, ino)
        self.rdev = 5 << 8 | 2
        self.next_number = 0

    def open(self, k: Kernel, flags: int) -> PtyMaster:
        pty = Pty(k, self.next_number)
        self.next_number += 1
        return PtyMaster(pty, self, flags)


class Pty:
    """One pseudo-terminal: its termios, window size, channels and the line being typed."""

    def __init__(self, k: Kernel, number: int):
        self.number = number
        self.termios = DEFAULT_TERMIOS
        self.winsize = (0, 0, 0, 0)
        self.locked = True  # until unlockpt (TIOCSPTLCK 0)
        self.slave_opened = False
        self.to_slave = Channel(k.sched, PIPE_BUF * 16, datagrams=False)
        self.to_master = Channel(k.sched, PIPE_BUF * 16, datagrams=False)
        self.line = bytearray()  # canonical mode: typed, not yet a line the slave can read
        self.ends: deque[int] = deque()  # canonical mode: where each line ends in to_slave
        self.slave_node = Node(st.S_IFCHR | 0o620, k.ns.inodes.next())
        self.slave_node.rdev = PTS_MAJOR << 8 | number  # type: ignore[attr-defined]

    def flag(self, which: int, bit: int) -> bool:
        return bool(self.termios[which] & bit)

    def cc(self, index: int) -> int:
        """A control character; 0 disables it (_POSIX_VDISABLE), so -1, which no byte is."""
        return self.termios[5][index] or -1

    def _echo(self, byte: int) -> bytes:
        if self.flag(1, OPOST) and self.flag(1, ONLCR) and byte == 10:
            return b"\r\n"
        if self.flag(3, ECHOCTL) and (byte < 32 and byte not in (9, 10) or byte == 127):
            return bytes((94, byte ^ 64))
        return bytes((byte,))

    def _end_line(self, extra: bytes = b"") -> None:
        self.to_slave.feed(bytes(self.line) + extra)
        self.ends.append(self.to_slave.written)
        self.line.clear()

    def type_in(self, data: bytes) -> None:
        """Bytes the master wrote, through the line discipline into the slave's input."""
        canonical, echo = self.flag(3, ICANON), self.flag(3, ECHO)
        echoed = bytearray()
        for byte in data:
            if byte == 13 and self.flag(0, IGNCR):
                continue
            if byte == 13 and self.flag(0, ICRNL):
                byte = 10
            elif byte == 10 and self.flag(0, INLCR):
                byte = 13
            if not canonical:
                self.to_slave.feed(bytes((byte,)))
            elif byte == self.cc(VERASE):
                if self.line:
                    self.line.pop()
                    echoed += b"\b \b" if self.flag(3, ECHOE) else self._echo(byte)
                continue
            elif byte == self.cc(VKILL):
                echoed += b"\b \b" * len(self.line) if self.flag(3, ECHOE) else self._echo(byte)
                self.line.clear()
                continue
            elif byte == self.cc(VEOF):
                self._end_line()
                continue
            elif byte in (10, self.cc(VEOL)):
                self._end_line(bytes((byte,)))
            elif len(self.line) < LINE_MAX:
                self.line.append(byte)
            if echo:
                echoed += self._echo(byte)
        if echoed and self.to_master.readers:
            self.to_master.feed(bytes(echoed))

    def set_termios(self, raw: bytes, flush: bool) -> None:
        self.termios = TERMIOS.unpack(raw)
        if flush:
            self.flush_input()
        elif not self.flag(3, ICANON) and self.line:
            self.to_slave.feed(bytes(self.line))  # a line half typed is input now
            self.line.clear()
        if not self.flag(3, ICANON):
            self.ends.clear()

    def flush_input(self) -> None:
        if self.to_slave.held:
            self.to_slave.take(self.to_slave.held, blocking=False)
        self.line.clear()
        self.ends.clear()


class PtyFile(ChannelFile):
    """An end of a pseudo-terminal: a terminal to isatty and termios."""

    pty: Pty

    def isatty(self) -> bool:
        return True

    def ioctl(self, k: Kernel, request: int, arg: int) -> int:
        pty = self.pty
        if request == TCGETS:
            k.mem.write(arg, TERMIOS.pack(*pty.termios))
        elif request in (TCSETS, TCSETSW, TCSETSF):
            pty.set_termios(bytes(k.mem.read(arg, TERMIOS.size)), request == TCSETSF)
        elif request == TIOCGWINSZ:
            k.mem.write(arg, WINSIZE.pack(*pty.winsize))
        elif request == TIOCSWINSZ:
            pty.winsize = WINSIZE.unpack(k.mem.read(arg, WINSIZE.size))
        elif request == FIONREAD:
            channel = self.rx
            k.mem.put_u32(arg, channel.held if channel is not None else 0)
        elif request == TIOCOUTQ:
            k.mem.put_u32(arg, 0)
        elif request == TCFLSH:
            if arg not in (0, 1, 2):
                raise SyscallError(errno.EINVAL)
            if arg != 1:
                pty.flush_input()
        elif request in (TIOCGPGRP, TIOCGSID):
            k.mem.put_u32(arg, k.identity.pid)  # one process group, one session: the guest
        elif request not in (TCSBRK, TCXONC, TIOCSCTTY, TIOCSPGRP, TIOCNOTTY):
            raise SyscallError(errno.ENOTTY)
        return 0


class PtyMaster(PtyFile):
    def __init__(self, pty: Pty, node: Node, flags: int):
        super().__init__("/dev/ptmx", node, flags, pty.to_master, pty.to_slave)
        self.pty = pty

    def read(self, length: int) -> bytes:
        rx = self.rx
        if rx is not None and not rx.readable and rx.writers == 0:
            if self.pty.slave_opened:
                raise SyscallError(errno.EIO)  # every slave is closed
            raise rx.wait(self._blocking())  # none opened yet: nothing to read so far
        return super().read(length)

    def write(self, data: memoryview) -> int:
        if self.tx is None:
            raise SyscallError(errno.EBADF)
        room = self.tx.room
        if not room:
            raise self.tx.wait(self._blocking())
        take = bytes(data[:room])
        self.pty.type_in(take)
        return len(take)

    def ioctl(self, k: Kernel, request: int, arg: int) -> int:
        pty = self.pty
        if request == TIOCGPTN:
            k.mem.put_u32(arg, pty.number)
        elif request == TIOCSPTLCK:
            pty.locked = bool(k.mem.u32(arg))
        elif request == TIOCGPTLCK:
            k.mem.put_u32(arg, int(pty.locked))
        elif request == TIOCGPTPEER:
            if pty.locked:
                raise SyscallError(errno.EIO)
            slave = PtySlave(pty, arg)
            try:
                return k.fds.install(slave, cloexec=bool(arg & O_CLOEXEC))
            except SyscallError:
                slave.close()
                raise
        else:
            return super().ioctl(k, request, arg)
        return 0


class PtySlave(PtyFile):
    def __init__(self, pty: Pty, flags: int):
        super().__init__(f"/dev/pts/{pty.number}", pty.slave_node, O_RDWR | flags & O_NONBLOCK,
                         pty.to_slave, pty.to_master)
        self.pty = pty
        pty.slave_opened = True
        pty.to_master.changed()  # a master waiting to read waits for its output now

    def read(self, length: int) -> bytes:
        rx, ends = self.rx, self.pty.ends
        if rx is not None and ends:
            if ends[0] == rx.read_at:
                ends.popleft()
                return b""  # VEOF at the start of a line: end of file, once
            length = min(length, ends[0] - rx.read_at)  # canonical: one line at most
        data = super().read(length)
        if ends and rx is not None and ends[0] == rx.read_at:
            ends.popleft()
        return data

    def write(self, data: memoryview) -> int:
        tx = self.tx
        if tx is None:
            raise SyscallError(errno.EBADF)
        if not tx.readers:
            raise SyscallError(errno.EIO)  # the master is closed: hung up
        room = tx.room
        if not room:
            raise tx.wait(self._blocking())
        take = bytes(data[:room])
        out = take.replace(b"\n", b"\r\n") if self.pty.flag(1, OPOST) and \
            self.pty.flag(1, ONLCR) else take
        tx.feed(out)
        return len(take)

    def poll(self) -> int:
        events = super().poll()
        rx, ends = self.rx, self.pty.ends
        if rx is not None and ends and ends[0] == rx.read_at:
            events |= READABLE  # an end of file typed at the start of a line
        return events
