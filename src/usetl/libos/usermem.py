"""Guest user memory as the syscall layer sees it: every access is checked.

Addresses and lengths come from the guest and are untrusted: a range outside
the guest's user memory is EFAULT, never a host access.
"""

from __future__ import annotations

import errno
import struct

from usetl.vm import GuestMemory
from usetl.vm.layout import USER_START

from .errors import SyscallError

PATH_MAX = 4096
IOV_MAX = 1024  # Linux's UIO_MAXIOV: iovecs in one readv/writev


class UserMemory:
    def __init__(self, ram: GuestMemory):
        self.ram = ram
        self.view = ram.view
        self.start = USER_START
        self.end = ram.end

    def _region(self, addr: int, length: int, write: bool) -> tuple[memoryview, int]:
        if length < 0:
            raise SyscallError(errno.EINVAL)
        if self.start <= addr and addr + length <= self.end:
            return self.view, addr
        raise SyscallError(errno.EFAULT)

    def read(self, addr: int, length: int) -> bytes:
        view, off = self._region(addr, length, False)
        return bytes(view[off : off + length])

    def slice(self, addr: int, length: int, write: bool = False) -> memoryview:
        view, off = self._region(addr, length, write)
        return view[off : off + length]

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        view, off = self._region(addr, len(data), True)
        view[off : off + len(data)] = data

    def cstring(self, addr: int, limit: int = PATH_MAX) -> bytes:
        if not self.start <= addr < self.end:
            view, off = self._region(addr, 1, False)
            end = len(view)
        else:
            view, off, end = self.view, addr, self.end
        chunk = bytes(view[off : min(off + limit, end)])
        nul = chunk.find(b"\0")
        if nul < 0:
            raise SyscallError(errno.ENAMETOOLONG if len(chunk) == limit else errno.EFAULT)
        return chunk[:nul]

    def path(self, addr: int) -> str:
        raw = self.cstring(addr)
        if not raw:
            raise SyscallError(errno.ENOENT)
        return raw.decode("utf-8", "surrogateescape")

    def u32(self, addr: int) -> int:
        return struct.unpack("<I", self.read(addr, 4))[0]

    def u64(self, addr: int) -> int:
        return struct.unpack("<Q", self.read(addr, 8))[0]

    def put_u32(self, addr: int, value: int) -> None:
        self.write(addr, struct.pack("<I", value & 0xFFFFFFFF))

    def put_u64(self, addr: int, value: int) -> None:
        self.write(addr, struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF))

    def iovecs(self, addr: int, count: int) -> list[tuple[int, int]]:
        if not 0 <= count <= IOV_MAX:
            raise SyscallError(errno.EINVAL)
        raw = self.read(addr, 16 * count)
        return [struct.unpack_from("<QQ", raw, 16 * i) for i in range(count)]
