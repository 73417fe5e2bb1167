"""Layers depend one way and no modules import each other in a circle.

Walks every module under src/usetl with `ast` (no imports are executed):
an import may reach its own layer or a lower one, never a higher one, and
the graph of imports that run (those under `if TYPE_CHECKING:` are type
hints only) has no cycle. Code that runs inside the guest (guest/, which
the process sandbox runs too, examples and the benchmark's ETL functions)
imports the guest's `usetl` package, not the host's, and is left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import usetl

SRC = Path(usetl.__file__).resolve().parent
GUEST_SIDE = ("usetl.guest", "usetl.api.examples", "usetl.bench.etl_functions")

# Lowest first; a unit is a top-level package or module of usetl.
LAYERS = [
    {"errors", "abi"},
    {"hostmm", "procmem", "elf", "invocation", "etl"},
    {"kvm", "image"},
    {"vm"},
    {"libos"},
    {"usf"},
    {"jail", "hyperfork"},
    {"platform"},
    {"api", "cluster"},
    {"bench", "cli", "__main__"},
]
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = ("usetl", *path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if not name.startswith(GUEST_SIDE):
            found[name] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported module, runs at import time or call time) for each usetl import in `path`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    hints = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
             and _is_type_checking(node) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            # `from pkg import mod` imports the module pkg.mod where there is one.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        else:
            continue
        out += [(t, id(node) not in hints) for t in targets if t.split(".")[0] == "usetl"]
    return out


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "usetl"


def _graph() -> dict[str, list[tuple[str, bool]]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_every_unit_has_a_layer():
    units = {_unit(name) for name in _modules()} - {"usetl"}
    assert units <= set(RANK), f"give these a layer in LAYERS: {sorted(units - set(RANK))}"


def test_no_import_reaches_a_higher_layer():
    upward = []
    for name, imports in _graph().items():
        for target, _ in imports:
            a, b = _unit(name), _unit(target)
            if b in RANK and a in RANK and RANK[b] > RANK[a]:
                upward.append(f"{name} -> {target}")
    assert upward == []


def test_no_import_cycles():
    graph = {name: {t for t, runs in imports if runs and t != name}
             for name, imports in _graph().items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_walk_sees_imports():
    """The checks above would pass vacuously if the walk found nothing."""
    graph = _graph()
    assert any(t == "usetl.libos.kernel" for t, _ in graph["usetl.usf.running"])
    assert any(t.startswith("usetl.kvm") for t, _ in graph["usetl.vm.machine"])
