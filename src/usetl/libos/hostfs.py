"""Read-only host directories in the guest tree: a function's code, the module store.

Every path component is looked up with lstat inside the mounted directory;
a host symlink is shown to the guest as a symlink and resolved by the
Namespace inside the guest's own tree, so no path leaves the mount. Only
regular files, directories and symlinks are shown: a FIFO, socket or device
on the host is not there for the guest (ENOENT), so nothing the guest does
can make the monitor open one and block on it.
"""

from __future__ import annotations

import errno
import os
import stat as st

from .errors import SyscallError
from .fs import BLOCK_SIZE, Node

DEV_HOSTFS = 0x2A
SHOWN_TYPES = (st.S_IFREG, st.S_IFDIR, st.S_IFLNK)
# O_NONBLOCK: should a FIFO replace a file after the lstat, opening it does not wait.
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _node(path: str, info: os.stat_result) -> HostNode | None:
    return HostNode(path, info) if st.S_IFMT(info.st_mode) in SHOWN_TYPES else None


class HostNode(Node):
    dev = DEV_HOSTFS

    def __init__(self, path: str, info: os.stat_result):
        # Only permission and type bits: no set-id bits from the host.
        super().__init__(st.S_IFMT(info.st_mode) | (info.st_mode & 0o555), info.st_ino,
                         info.st_mtime_ns)
        self.path = path
        self._size = info.st_size

    @property
    def size(self) -> int:
        return self._size if not self.is_dir else BLOCK_SIZE  # a directory: one block, as ext4

    def readlink(self) -> str:
        if not self.is_symlink:
            raise SyscallError(errno.EINVAL)
        try:
            return os.readlink(self.path)
        except OSError as e:  # changed on the host since the lstat
            raise SyscallError(e.errno or errno.EIO) from None

    def children(self) -> list[tuple[str, Node]]:
        if not self.is_dir:
            raise SyscallError(errno.ENOTDIR)
        out: list[tuple[str, Node]] = []
        try:
            with os.scandir(self.path) as it:
                for entry in it:
                    try:
                        node = _node(entry.path, entry.stat(follow_symlinks=False))
                    except OSError:
                        continue
                    if node is not None:
                        out.append((entry.name, node))
        except OSError as e:
            raise SyscallError(e.errno or errno.EIO) from None
        return out

    def read_at(self, offset: int, length: int) -> bytes:
        try:
            fd = os.open(self.path, OPEN_FLAGS)
        except OSError as e:
            raise SyscallError(e.errno or errno.EIO) from None
        try:
            if not st.S_ISREG(os.fstat(fd).st_mode):
                raise SyscallError(errno.EACCES)
            return os.pread(fd, length, offset)
        except OSError as e:
            raise SyscallError(e.errno or errno.EIO) from None
        except OverflowError:  # an offset past what the host's off_t holds
            raise SyscallError(errno.EINVAL) from None
        finally:
            os.close(fd)


class HostDirFS:
    def __init__(self, root: str):
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise NotADirectoryError(f"{root} is not a directory")

    def walk(self, parts: list[str]) -> HostNode | None:
        path = self.root
        for part in parts:
            if part in ("", ".", "..") or "/" in part:
                return None
            path = os.path.join(path, part)
        try:
            return _node(path, os.lstat(path))
        except OSError:
            return None
