"""The monitor's per-VM state as bytes: what a template saves and a clone rolls back to.

The state is the whole `Usf` object graph (kernel, fd table, memory map,
namespace, channel) pickled. Objects that belong to one process — the VM,
guest memory and its views, the image archive, the syscall table, the vDSO
clock — are left out by name (`externals()`) and bound again to the
loading process's own objects.
"""

from __future__ import annotations

import io
import pickle

from usetl.image.archive import ImageArchive
from usetl.libos.fs import ImageFS
from usetl.libos.syscalls.table import HANDLERS
from usetl.usf import Usf, shared_clock
from usetl.vm import GuestMemory, Vm


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, names: dict[int, str]):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.names = names

    def persistent_id(self, obj: object) -> str | None:
        return self.names.get(id(obj))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, objects: dict[str, object]):
        super().__init__(file)
        self.objects = objects

    def persistent_load(self, pid: str) -> object:
        try:
            return self.objects[pid]
        except KeyError:
            raise pickle.UnpicklingError(f"monitor state refers to unknown {pid!r}") from None


def externals(vm: Vm | None, image: ImageArchive, imagefs: ImageFS,
              memory: dict[str, GuestMemory]) -> dict[str, object]:
    """This process's objects a monitor state refers to, by the names it refers to them."""
    objects: dict[str, object] = {
        "vm": vm, "image": image, "imagefs": imagefs, "clock": shared_clock(),
        "handlers": HANDLERS,
    }
    for name, mem in memory.items():
        objects[f"mem:{name}"] = mem
        objects[f"view:{name}"] = mem.view
    return objects


def externals_of(usf: Usf) -> dict[str, object]:
    """The externals of a running USF (to save its state, or to roll it back in place)."""
    return externals(usf.vm, usf.image, usf.kernel.ns.image, usf.vm.memory())


def dumps(usf: Usf) -> bytes:
    names = {id(obj): name for name, obj in externals_of(usf).items() if obj is not None}
    out = io.BytesIO()
    _Pickler(out, names).dump(usf)
    return out.getvalue()


def loads(data: bytes, externals: dict[str, object]) -> Usf:
    usf = _Unpickler(io.BytesIO(data), externals).load()
    if not isinstance(usf, Usf):
        raise pickle.UnpicklingError("monitor state does not hold a USF")
    return usf
