"""Randomness: served live from the host, so no two clones share it."""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from ..errors import SyscallError

if TYPE_CHECKING:
    from ..kernel import Kernel

GRND_NONBLOCK, GRND_RANDOM, GRND_INSECURE = 1, 2, 4


def sys_getrandom(k: Kernel, buf: int, count: int, flags: int, *_: int) -> int:
    if flags & ~(GRND_NONBLOCK | GRND_RANDOM | GRND_INSECURE):
        raise SyscallError(errno.EINVAL)
    count = min(count, 1 << 25)
    k.mem.write(buf, os.urandom(count))
    return count
