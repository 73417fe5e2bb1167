"""InPlace: a rollback gives each object of a monitor state its captured contents back."""

import pickle
from collections import OrderedDict

import pytest

from usetl.hyperfork.monitor_state import InPlace


class Holder:
    pass


def test_reset_gives_the_same_objects_their_captured_contents_back():
    inner, root = Holder(), Holder()
    inner.items = [1]
    inner.table = {"a": 1}
    root.inner = inner
    kept = InPlace(root, {})
    items, table = inner.items, inner.table
    inner.items.append(2)
    inner.table["b"] = 2
    inner.added = True
    root.inner = None
    kept.reset()
    assert root.inner is inner and inner.items is items and inner.table is table
    assert inner.items == [1] and inner.table == {"a": 1} and not hasattr(inner, "added")


def test_a_state_that_reaches_an_objects_dict_as_a_dict_is_refused():
    owner, other, root = Holder(), Holder(), Holder()
    owner.x = 1
    other.attributes = owner.__dict__
    root.both = [owner, other]
    with pytest.raises(pickle.PicklingError, match="__dict__ of a Holder"):
        InPlace(root, {})


def test_reset_leaves_unchanged_objects_as_they_are_and_puts_changed_ones_back():
    still, changed, root = Holder(), Holder(), Holder()
    still.value, changed.value = "kept", "kept"
    root.table = {"n": 1}
    root.parts = [still, changed]
    kept = InPlace(root, {})
    attributes, table = still.__dict__, root.table
    changed.value = "new"
    kept.reset()
    assert still.__dict__ is attributes and changed.value == "kept"
    root.table["n"] = 2
    root.table["n"] = 1  # the same object back: the same contents
    kept.reset()
    assert root.table is table and root.table == {"n": 1}
    changed.value = "again"
    del root.table["n"]
    kept.reset()
    assert changed.value == "kept" and root.table == {"n": 1}


def test_reset_undoes_a_reordering_and_a_rewritten_buffer():
    root = Holder()
    root.order = OrderedDict(a=1, b=2)
    root.buffer = bytearray(b"abc")
    kept = InPlace(root, {})
    root.order.move_to_end("a")
    root.buffer[0] = ord("x")
    kept.reset()
    assert list(root.order) == ["a", "b"] and root.buffer == b"abc"
