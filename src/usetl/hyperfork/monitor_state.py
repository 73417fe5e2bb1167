"""The monitor's per-VM state: as bytes, what a template saves; in place, what a clone
rolls back to.

The state is the whole `Usf` object graph (kernel, fd table, memory map,
namespace, channel) pickled. Objects that belong to one process — the VM,
guest memory and its views, the image archive, the syscall table, the vDSO
clock — are left out by name (`externals()`) and bound again to the
loading process's own objects.

`InPlace` is the same state kept as the graph's own objects: a rollback puts
each back as it was instead of unpickling a new graph (0.4-0.9 ms, and a new
graph's allocations dirty more of a clone's heap each time). It leaves alone the dicts
a request did not change (`_WORDS`), touching none of them.
"""

from __future__ import annotations

import ctypes
import io
import pickle
import sys
import types
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import fields, is_dataclass

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


# Kept by reference, as pickling does: immutable values, and what it pickles by name.
_ATOMS = (type(None), bool, int, float, complex, str, bytes, range, type, types.FunctionType,
          types.BuiltinFunctionType, types.MethodType, types.ModuleType)


TAG_OFFSET = 3 * ctypes.sizeof(ctypes.c_ssize_t)  # a dict's header and length come first
ADDRESSES = 1 << 56  # above every user-space address (x86-64 with 5-level paging, arm64)


class _Probe:
    pass


_get_dict_ptr = getattr(ctypes.pythonapi, "_PyObject_GetDictPtr", None)
if _get_dict_ptr is not None:
    _get_dict_ptr.restype, _get_dict_ptr.argtypes = ctypes.c_void_p, [ctypes.py_object]


def _dict_slot(obj: object) -> int:
    """Where an object keeps the address of its __dict__ (0: it has none)."""
    assert _get_dict_ptr is not None
    return _get_dict_ptr(obj) or 0


def _process_words() -> memoryview | None:
    """This process's memory as 8-byte words (index: address // 8), read to tell a dict's
    version tag (PEP 509: CPython 3.11-3.13 keep it after a dict's header and length and
    give it a new value from one counter at each change: a store of another object, a
    deletion, a clear) and which dict an object holds, without touching either; None where
    this interpreter's dicts and objects are not as checked here."""
    if sys.implementation.name != "cpython" or not (3, 11) <= sys.version_info[:2] <= (3, 13) \
            or _get_dict_ptr is None:
        return None
    words = memoryview((ctypes.c_ubyte * ADDRESSES).from_address(0)).cast("B").cast("Q")
    probe: dict = {}
    tags = [words[(id(probe) + TAG_OFFSET) >> 3]]
    for change in (lambda: probe.update(x=object()), lambda: probe.update(x=object()),
                   probe.clear):
        change()
        tags.append(words[(id(probe) + TAG_OFFSET) >> 3])
    holder = _Probe()
    holder.x = 1
    slot = _dict_slot(holder)
    held = slot and words[slot >> 3] == id(holder.__dict__)
    holder.__dict__ = {}
    held = held and words[slot >> 3] == id(holder.__dict__)
    return words if held and len(set(tags)) == len(tags) else None


# A rollback touches no dict it left as it was, nor the object holding it, nor any value in
# it: touching an object writes its reference count, and so copies the template's page that
# holds it into the clone (its private memory). With no words, every dict is put back.
_WORDS = _process_words()


def _tag(d: dict) -> int:
    """A dict's version tag; 0 where it is not known."""
    return 0 if _WORDS is None else _WORDS[(id(d) + TAG_OFFSET) >> 3]


class InPlace:
    """A monitor state's mutable objects, with what each held when the state was captured.

    Made in the template over the graph pickling walks (stopping at the externals; a class
    with its own __reduce__ is kept by reference, as the object its reduction finds again);
    clones inherit it by fork. reset() gives every one of those objects its captured
    contents back, as unpickling would give new ones: a dict, list, set, bytearray or deque
    its items, an instance its attributes (through __setstate__ where its class has one).
    Objects made since are let go. A dict (an instance's __dict__, or a plain dict of the
    graph) that is the one last given and whose version tag is unchanged is left as it is:
    it holds the same objects. Host threads that finish work of an earlier invocation
    must not reach the graph through an object reset here (sched.HostWork's workers hold
    the queue they were given, which a reset replaces).
    """

    def __init__(self, usf: Usf, externals: dict[str, object]):
        self._entries: list[tuple[Callable[[object, object], None], object, object]] = []
        self._attrs: list[tuple[object, dict]] = []  # instances: their attributes, kept
        # Per _attrs entry, as addresses: where its object keeps its __dict__, the dict last
        # given it (0: none known: put the attributes back) and that dict's tag then; and the
        # dicts, kept alive so that their addresses stay theirs.
        self._slots, self._given, self._given_tags = array("Q"), array("Q"), array("Q")
        self._held: list[dict | None] = []
        # Per _entries entry: a plain dict's address (0: not a plain dict), and its tag when it
        # last held its kept items.
        self._dicts, self._tags = array("Q"), array("Q")
        seen = {id(o) for o in externals.values() if o is not None}
        stack: list[object] = [usf]
        while stack:
            obj = stack.pop()
            if id(obj) in seen or isinstance(obj, _ATOMS):
                continue
            seen.add(id(obj))
            stack.extend(self._keep(obj))
        # reset() gives an instance a new __dict__: one the graph also reaches as a dict
        # would be reset apart from its object.
        attrs = {id(obj.__dict__): obj for obj, _ in self._attrs}
        for put, obj, _ in self._entries:
            if put is _put_dict and id(obj) in attrs:
                raise pickle.PicklingError(f"monitor state holds the __dict__ of a "
                                           f"{type(attrs[id(obj)]).__qualname__}, which it "
                                           "cannot reset in place")

    def _keep(self, obj: object) -> list[object]:
        """Note what `obj` holds; returns the objects it refers to."""
        cls = type(obj)
        if cls in (tuple, frozenset):
            return list(obj)  # type: ignore[call-overload]
        own = _own(cls)
        refs: list[object] = []
        if isinstance(obj, dict):
            items = dict(obj)
            self._entries.append((_put_dict, obj, items))
            # An OrderedDict reorders without a change of tag: a plain dict only.
            self._dicts.append(id(obj) if cls is dict and _WORDS is not None else 0)
            self._tags.append(_tag(obj))
            refs += [*items, *items.values()]
        elif isinstance(obj, (list, deque)):
            listed = list(obj)
            self._entries.append((_put_list if isinstance(obj, list) else _put_deque, obj,
                                  listed))
            self._dicts.append(0)
            self._tags.append(0)
            refs += listed
        elif isinstance(obj, set):
            members = set(obj)
            self._entries.append((_put_set, obj, members))
            self._dicts.append(0)
            self._tags.append(0)
            refs += list(members)
        elif isinstance(obj, bytearray):
            self._entries.append((_put_bytes, obj, bytes(obj)))
            self._dicts.append(0)
            self._tags.append(0)
        elif is_dataclass(obj) and cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            return [getattr(obj, f.name) for f in fields(obj)]  # it never changes; they may
        elif "__reduce__" in own or "__reduce_ex__" in own:
            return []  # pickled as a call that finds it again (an archive's mount, an enum)
        elif not hasattr(obj, "__dict__"):
            raise pickle.PicklingError(f"monitor state holds a {cls.__qualname__}, which it "
                                       "cannot reset in place")
        if not hasattr(obj, "__dict__"):
            return refs
        if "__getstate__" in own or "__setstate__" in own:
            state = obj.__getstate__()  # type: ignore[attr-defined]
        else:
            state = dict(obj.__dict__)
        if "__setstate__" in own:
            self._entries.append((_set_state, obj, state))
            self._dicts.append(0)
            self._tags.append(0)
        else:
            self._attrs.append((obj, state))  # a __getstate__'s own state is a dict
            self._keep_given(obj, None if "__getstate__" in own else obj.__dict__)
        if isinstance(state, dict):
            refs += list(state.values())
        return refs

    def _keep_given(self, obj: object, attributes: dict | None) -> None:
        """Note the dict an instance of _attrs holds (None: not its kept attributes)."""
        known = attributes is not None and _WORDS is not None and type(attributes) is dict
        self._slots.append(_dict_slot(obj) if known else 0)
        self._given.append(id(attributes) if known else 0)
        self._given_tags.append(_tag(attributes) if known else 0)  # type: ignore[arg-type]
        self._held.append(attributes)

    def reset(self) -> None:
        # An instance gets a copy of its kept attributes as its __dict__, as pickling's BUILD
        # sets them: no object of the state holds another's __dict__ (see __init__), and a
        # dict's copy is a third cheaper than clearing and refilling it. Most entries are
        # instances, and most are as the last reset left them: told apart by addresses and
        # tags alone (see _WORDS), in loops that load no object of the state.
        words, slots, given, given_tags = _WORDS, self._slots, self._given, self._given_tags
        for i in range(len(slots)):
            d = given[i]
            if d and words[slots[i] >> 3] == d and words[(d + TAG_OFFSET) >> 3] == given_tags[i]:
                continue
            obj, attrs = self._attrs[i]
            attributes = attrs.copy()
            obj.__dict__ = attributes
            self._held[i] = attributes
            if slots[i]:
                given[i], given_tags[i] = id(attributes), _tag(attributes)
        dicts, tags = self._dicts, self._tags
        for i in range(len(dicts)):
            d = dicts[i]
            if d and words[(d + TAG_OFFSET) >> 3] == tags[i]:
                continue
            put, obj, kept = self._entries[i]
            put(obj, kept)
            if d:
                tags[i] = _tag(obj)  # type: ignore[arg-type]


def _own(cls: type) -> set[str]:
    """The names a class and its bases define, but for the builtins' (object's default
    __getstate__ and __reduce_ex__, dict's and list's own)."""
    names: set[str] = set()
    for base in cls.__mro__:
        if base.__module__ != "builtins":
            names.update(vars(base))
    return names


def _put_dict(obj, items) -> None:
    obj.clear()
    obj.update(items)


def _put_set(obj, members) -> None:
    obj.clear()
    obj.update(members)


def _put_list(obj, items) -> None:
    obj[:] = items


def _put_deque(obj, items) -> None:
    obj.clear()
    obj.extend(items)


def _put_bytes(obj, data) -> None:
    if obj != data:  # compared, not rewritten: a write would copy each page it spans
        obj[:] = data


def _set_state(obj, state) -> None:
    obj.__setstate__(dict(state) if isinstance(state, dict) else state)
