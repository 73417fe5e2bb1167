"""The monitor's per-VM state as bytes: what a template saves and a clone rolls back to.

The state is the whole `Usf` object graph (kernel, fd table, memory map,
namespace, channel) pickled. Objects that belong to one process — the VM,
guest memory and its views, the image archive, the syscall table, the vDSO
clock — are left out by name (`Usf.externals()`) and bound again to the
loading process's own objects.
"""

from __future__ import annotations

import io
import pickle

from usetl.usf import Usf


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


def dumps(usf: Usf) -> bytes:
    names = {id(obj): name for name, obj in usf.externals().items() if obj is not None}
    out = io.BytesIO()
    _Pickler(out, names).dump(usf)
    return out.getvalue()


def loads(data: bytes, externals: dict[str, object]) -> Usf:
    usf = _Unpickler(io.BytesIO(data), externals).load()
    if not isinstance(usf, Usf):
        raise pickle.UnpicklingError("monitor state does not hold a USF")
    return usf
