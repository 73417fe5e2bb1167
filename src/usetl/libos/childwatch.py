"""One host thread per monitor process that watches its children's host fds.

It reads the host pipes that feed the parent's captured stdout and stderr
(ConsoleDrain), so a child writing much output never blocks on them, and
the control sockets to the monitor's children and to its parent, whose
messages (proctree.py: signals, a child's end) it hands to the vCPU's
thread through the scheduler's host work. One thread for all: a jailed
monitor's cgroup counts threads as tasks.
"""

from __future__ import annotations

import os
import select
import socket
import threading
from collections.abc import Callable

from .files import OutputFile
from .net import POLLIN

POLL_HUP = select.POLLHUP | select.POLLERR | select.POLLNVAL
MAX_FDS = 8  # host fds taken from one read of a control socket (more are closed)


class ConsoleDrain:
    """A host pipe into the parent's captured stdout or stderr; the watcher reads it."""

    def __init__(self, target: OutputFile):
        self.target = target
        self.read_fd, self.write_fd = os.pipe()
        # Read by the watcher and by flush, each under the watcher's lock, which keeps order.
        os.set_blocking(self.read_fd, False)
        self.data = bytearray()  # under the watcher's lock
        self.ended = threading.Event()  # every write end is closed and all was read

    def flush(self, watcher: Watcher, wait: float = 0.0) -> None:
        """Hand what arrived to the capture, on the vCPU's thread (after `wait` for the end):
        what the pipe holds too, which the watcher may not have read yet (a child that left
        orphans holding the pipe has ended, its last writes in it)."""
        if wait:
            self.ended.wait(wait)
        with watcher.lock:
            if watcher.drains.get(self.read_fd) is self:  # not closed by the watcher
                self.read_available()
            data, self.data = bytes(self.data), bytearray()
        if data:
            self.target.write_at(0, memoryview(data))

    def read_available(self) -> bool:
        """Move what the pipe holds into data (under the watcher's lock); False at its end."""
        while True:
            try:
                chunk = os.read(self.read_fd, 1 << 16)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            self.data += chunk


class Watcher:
    """The watching thread, started with the first thing to watch."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.drains: dict[int, ConsoleDrain] = {}  # read fd -> drain
        # fd -> its socket, and what is given what arrives (bytes, host fds)
        self.readers: dict[int, tuple[socket.socket, Callable[[bytes, list[int]], None]]] = {}
        self.wake_r, self.wake_w = os.pipe()
        self.thread: threading.Thread | None = None
        self.stopping = False

    def drain(self, target: OutputFile) -> ConsoleDrain:
        d = ConsoleDrain(target)
        with self.lock:
            self.drains[d.read_fd] = d
        self._changed()
        return d

    def on_data(self, sock: socket.socket, got: Callable[[bytes, list[int]], None]) -> None:
        """Call got(bytes, host fds) (on the watcher's thread) with what arrives on sock,
        and got(b"", []) at its end, unless forgotten first."""
        with self.lock:
            self.readers[sock.fileno()] = (sock, got)
        self._changed()

    def forget(self, fd: int) -> None:
        with self.lock:
            self.readers.pop(fd, None)
        self._changed()

    def _changed(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="usetl-children", daemon=True)
            self.thread.start()
        os.write(self.wake_w, b"x")

    def close(self) -> None:
        """End the thread and close what it watches (the state it served is gone: a
        rollback)."""
        self.stopping = True
        os.write(self.wake_w, b"x")
        if self.thread is not None:
            self.thread.join()
        with self.lock:
            for fd in self.drains:
                os.close(fd)
            self.drains.clear()
            self.readers.clear()
        os.close(self.wake_r)
        os.close(self.wake_w)

    def _run(self) -> None:
        while not self.stopping:
            poller = select.poll()
            poller.register(self.wake_r, POLLIN)
            with self.lock:
                watched = {**dict.fromkeys(self.readers, self._pass_on),
                           **dict.fromkeys(self.drains, self._read)}
            for fd in watched:
                poller.register(fd, POLLIN)
            for fd, events in poller.poll():
                if fd == self.wake_r:
                    os.read(self.wake_r, 1 << 12)
                elif fd in watched:
                    watched[fd](fd, events)

    def _pass_on(self, fd: int, events: int) -> None:
        with self.lock:
            reader = self.readers.get(fd)
        if reader is None:
            return
        try:
            chunk, fds, _, _ = socket.recv_fds(reader[0], 1 << 16, MAX_FDS,
                                               socket.MSG_CMSG_CLOEXEC | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            chunk, fds = b"", []
        with self.lock:
            got = self.readers.get(fd) if chunk else self.readers.pop(fd, None)
        if got is not None:
            got[1](chunk, fds)
        else:
            for f in fds:
                os.close(f)

    def _read(self, fd: int, events: int) -> None:
        with self.lock:
            drain = self.drains.get(fd)
            if drain is None:
                return
            if events & (POLLIN | POLL_HUP) and drain.read_available():
                return
            del self.drains[fd]
        os.close(fd)
        drain.ended.set()
