"""Learned templates: when the pool's learner asks for a new generation, and what the agent
reports a call imported (the guest's hint, which only names importable modules)."""

import importlib
import sys
import types

from usetl.guest.agent import imported_since
from usetl.platform.learning import ImportLearner


def test_the_same_imports_in_a_row_are_learned_once():
    learner = ImportLearner(3, [])
    assert learner.observe(["a", "a.b"]) is None
    assert learner.observe([]) is None  # a call that imported nothing breaks the streak
    assert [learner.observe(["a", "a.b"]) for _ in range(2)] == [None, None]
    assert learner.observe(["a.b", "a"]) == ["a.b", "a"]  # a set, in the last call's order
    assert learner.observe(["a", "a.b"]) is None  # it is being built
    learner.built(["a.b", "a"])
    assert [learner.observe(["a"]) for _ in range(3)] == [None] * 3  # already in the template
    assert [learner.observe(["a", "c"]) for _ in range(3)] == [None, None, ["a.b", "a", "c"]]


def test_a_set_that_failed_to_build_is_not_tried_again_and_zero_turns_learning_off():
    learner = ImportLearner(2, ["a"])
    assert [learner.observe(["bad"]) for _ in range(2)] == [None, ["a", "bad"]]
    learner.failed(["a", "bad"])
    assert [learner.observe(["bad"]) for _ in range(4)] == [None] * 4
    assert [learner.observe(["bad", "good"]) for _ in range(2)] == [None, ["a", "bad", "good"]]
    off = ImportLearner(0, [])
    assert [off.observe(["x"]) for _ in range(5)] == [None] * 5


def test_the_agent_reports_only_modules_a_template_can_import_by_name(tmp_path, monkeypatch):
    (tmp_path / "written_by_a_call.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    fresh = [name for name in ("colorsys",) if name not in before]  # imports nothing else
    try:
        for name in fresh:
            importlib.import_module(name)
        importlib.import_module("written_by_a_call")  # from /tmp: what a call wrote
        sys.modules["not a name"] = types.ModuleType("not a name")
        sys.modules["an_alias"] = sys.modules["json"]  # its spec names another module
        sys.modules["odd"] = object()  # anything may be put there
        assert imported_since(before) == fresh
    finally:
        for name in set(sys.modules) - before:
            del sys.modules[name]
