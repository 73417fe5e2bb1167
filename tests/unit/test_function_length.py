"""No function in src/ is longer than about a screen (60 lines, decorators excluded).

A function that outgrows it is split into named steps; the allow-list holds
the ones being split in other branches, each with its length when it was
listed, and goes down to nothing.
"""

import ast
from pathlib import Path

import usetl

LIMIT = 60
SRC = Path(usetl.__file__).parent
# "path relative to src/usetl:function" -> its length when listed (it may only shrink).
ALLOWED: dict[str, int] = {}


def function_lengths() -> dict[str, int]:
    lengths = {}
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                key = f"{path.relative_to(SRC).as_posix()}:{node.name}"
                lengths[key] = max(lengths.get(key, 0), node.end_lineno - node.lineno + 1)
    return lengths


def test_no_function_is_over_the_limit():
    lengths = function_lengths()
    too_long = {k: n for k, n in lengths.items() if n > ALLOWED.get(k, LIMIT)}
    assert not too_long, f"functions over {LIMIT} lines (split them): {too_long}"


def test_the_allow_list_holds_only_functions_still_over_the_limit():
    lengths = function_lengths()
    stale = [k for k in ALLOWED if lengths.get(k, 0) <= LIMIT]
    assert not stale, f"no longer over {LIMIT} lines: remove them from ALLOWED: {stale}"
