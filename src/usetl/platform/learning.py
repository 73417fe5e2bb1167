"""Learned templates: what a function's invocations import lazily goes into its next template.

A template is frozen after the function's module ran (or after its warm-up), and every
invocation is rolled back to it, so a module the handler imports on its first call is
imported again on every call. Each invoke reply names the modules the call put in
sys.modules (usetl.abi's "imported"): the guest's word, checked on receipt as a bounded list
of module names, and used for one thing only, choosing what that function's own template
imports. When `stable_after` invocations in a row report the same set, the pool builds the
next generation of the template with those modules imported after the function's module,
off the request path, and swaps it in as a deploy swaps a version (pool.py). Only module
names are learned: no event, result or memory of an invocation reaches a template. A set
whose build failed is not tried again; the failure is kept for `usetl ls` and the API.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from usetl.invocation import ErrorInfo

# Invocations in a row that must report the same imports before a new generation is built
# (PoolConfig.learn_after; `usetl serve --learn-after`; 0 turns learning off).
LEARN_AFTER = 5


@dataclass
class Generation:
    """A function version's template generation, as the registry keeps and `usetl ls` shows."""

    number: int = 1
    modules: list[str] = field(default_factory=list)  # what it imports beyond the function
    error: ErrorInfo | None = None  # why building the next generation failed, if it did


class ImportLearner:
    """Counts the imports invocations report; says when the next generation is due.

    Not thread-safe: the pool calls it under its lock.
    """

    def __init__(self, stable_after: int, learned: list[str]):
        self.stable_after = stable_after
        self.learned = list(learned)
        self.last: frozenset[str] = frozenset()
        self.streak = 0
        self.building = False
        self.refused: set[frozenset[str]] = set()  # sets whose template failed to build

    def observe(self, imported: list[str]) -> list[str] | None:
        """One invocation's imports; the next generation's modules when they are due, else None.

        An invocation that imported nothing new breaks a streak.
        """
        if self.stable_after <= 0 or self.building:
            return None
        new = [name for name in imported if name not in self.learned]
        seen = frozenset(new)
        if seen and seen == self.last:
            self.streak += 1
        else:
            self.last, self.streak = seen, 1 if seen else 0
        if self.streak < self.stable_after or seen in self.refused:
            return None
        self.building = True
        return self.learned + new

    def built(self, modules: list[str]) -> None:
        """The generation importing `modules` serves now."""
        self.learned = list(modules)
        self.building = False
        self.last, self.streak = frozenset(), 0

    def failed(self, modules: list[str]) -> None:
        """The generation importing `modules` could not be built: the old one serves on."""
        self.refused.add(frozenset(modules) - frozenset(self.learned))
        self.building = False
        self.last, self.streak = frozenset(), 0
