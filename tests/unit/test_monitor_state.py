"""InPlace: a rollback gives each object of a monitor state its captured contents back."""

import pickle

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
