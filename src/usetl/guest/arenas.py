"""CPython's arena allocator from the USF's vDSO: arenas and frame-stack chunks without exits.

CPython maps its obmalloc arenas and its frame-stack chunks with mmap and
unmaps them with munmap; a call chain that keeps crossing a chunk boundary
does both each time, and in a USF each is a VM exit. The monitor's vDSO
(usetl.libos.vdso) carries an allocator that keeps freed blocks on free lists
in guest memory and reuses them with no exit; installing it is the public
PyObject_SetArenaAllocator. Blocks allocated before it was installed are
freed through it too, which is safe: a free list takes any mapped block of
its size. Outside a USF (the process backend) the vDSO has no such functions
and nothing is installed.
"""

import ctypes
import os

VDSO = "linux-vdso.so.1"
_installed = []


class _ArenaAllocator(ctypes.Structure):
    _fields_ = [("ctx", ctypes.c_void_p), ("alloc", ctypes.c_void_p), ("free", ctypes.c_void_p)]


def install():
    """Use the vDSO's arena allocator if this guest has one; returns whether it does."""
    if _installed:
        return True
    try:
        vdso = ctypes.CDLL(VDSO, mode=os.RTLD_NOLOAD)
        alloc = ctypes.cast(getattr(vdso, "__usetl_arena_alloc"), ctypes.c_void_p).value
        free = ctypes.cast(getattr(vdso, "__usetl_arena_free"), ctypes.c_void_p).value
    except (OSError, AttributeError):
        return False
    # CPython copies the structure.
    ctypes.pythonapi.PyObject_SetArenaAllocator(ctypes.byref(_ArenaAllocator(None, alloc, free)))
    _installed.append((alloc, free))
    return True
