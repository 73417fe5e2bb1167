"""Imports from the module region in a USF: attributes, resources, no syscall per module."""

import json

import pytest

from usetl.image.modstore import packed
from usetl.usf import UsfConfig, UsfError, start_usf

pytestmark = pytest.mark.kvm

FLAT_MODULES = 20
PATH_SYSCALLS = ("stat", "lstat", "newfstatat", "statx", "open", "openat", "access",
                 "readlink", "getdents64", "fstat")

FUNCTION = """
import importlib, importlib.resources, json, pkgutil, sys, traceback

def facts():
    import mapdemo, mapdemo.sub.leaf, mapns.part.one, plainmod
    table = importlib.resources.files("mapdemo") / "data" / "table.json"
    try:
        mapdemo.sub.leaf.boom()
    except ValueError as e:
        where = traceback.extract_tb(e.__traceback__)[-1]
    with open(str(table)) as f:
        by_path = f.read()
    return {
        "file": mapdemo.__file__, "origin": mapdemo.__spec__.origin,
        "cached": mapdemo.__spec__.cached, "path": list(mapdemo.__path__),
        "locations": mapdemo.__spec__.submodule_search_locations,
        "loader": type(mapdemo.__spec__.loader).__name__,
        "table": table.read_text(), "by_path": by_path,
        # a directory import's files() is a pathlib.Path: what a package calls on it works
        "path_api": [table.exists(), table.parent.is_dir(), table.suffix, table.stat().st_size,
                     sorted(p.name for p in table.parent.glob("*.json")),
                     (table.parent / "missing").exists()],
        "get_data": pkgutil.get_data("mapdemo", "data/table.json").decode(),
        "init": importlib.resources.files("mapdemo").joinpath("__init__.py").read_bytes().decode(),
        "traceback": [where.filename, where.line],
        "namespace": list(sys.modules["mapns"].__path__),
        "plain_loader": type(plainmod.__spec__.loader).__name__, "plain_file": plainmod.__file__,
    }

def handler(event, context):
    if event == "facts":
        return facts()
    if event == "stdlib":
        sys.path.remove("/d0")  # a directory before the stdlib: its FileFinder stats it
        import colorsys
        return [type(colorsys.__spec__.loader).__name__, colorsys.__file__]
    for i in range(event):
        importlib.import_module(f"mapdemo.flat{i}")
    return sum(sys.modules[f"mapdemo.flat{i}"].N for i in range(event))
"""


def make_trees(root):
    pkg = root / "one" / "mapdemo"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "data").mkdir()
    (pkg / "__init__.py").write_text("VALUE = 41\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "leaf.py").write_text("def boom():\n    raise ValueError('from leaf')\n")
    (pkg / "data" / "table.json").write_text('{"rows": 3}')
    for i in range(FLAT_MODULES):
        (pkg / f"flat{i}.py").write_text(f"N = {i}\n")
    (root / "two" / "mapns" / "part").mkdir(parents=True)
    (root / "two" / "mapns" / "part" / "one.py").write_text("ONE = 1\n")
    (root / "plain").mkdir()
    (root / "plain" / "plainmod.py").write_text("X = 1\n")
    return packed(root / "one"), packed(root / "two"), root / "plain"


@pytest.fixture(scope="module")
def loaded(image, tmp_path_factory):
    one, two, plain = make_trees(tmp_path_factory.mktemp("importer"))
    usf = start_usf(image, UsfConfig(trace=True))  # trace: syscalls counted by name
    try:
        usf.mount("m0", str(one))
        usf.mount("m1", str(two))
        usf.mount("d0", str(plain))  # a directory: not in the region
        r = usf.load_function("handler", source=FUNCTION, filename="/tmp/fn.py",
                              sys_path=["/m0", "/m1", "/d0"], timeout=120)
        assert r.ok, (r.error, r.stderr)
        yield usf
    finally:
        usf.close()


def call(usf, event):
    r = usf.call(event, timeout=60)
    assert r.ok, (r.error, r.stderr)
    return r.value


def test_an_importer_loaded_package_has_file_spec_and_resources(loaded):
    facts = call(loaded, "facts")
    assert facts["file"] == facts["origin"] == "/m0/mapdemo/__init__.py"
    assert facts["cached"] == "/m0/mapdemo/__pycache__/__init__.cpython-311.pyc"
    assert facts["path"] == facts["locations"] == ["/m0/mapdemo"]
    assert facts["loader"] == "MappedLoader"
    assert facts["table"] == facts["by_path"] == facts["get_data"] == '{"rows": 3}'
    assert facts["init"] == "VALUE = 41\n"
    assert facts["path_api"] == [True, True, ".json", 11, ["table.json"], False]
    # The traceback names the guest path and shows the line (linecache reads /m0).
    assert facts["traceback"] == ["/m0/mapdemo/sub/leaf.py", "raise ValueError('from leaf')"]
    assert facts["namespace"] == ["/m1/mapns"]
    # Not in the region: the normal path finder, from the host directory.
    assert facts["plain_loader"] == "SourceFileLoader"
    assert facts["plain_file"] == "/d0/plainmod.py"


def test_packed_modules_import_with_no_stat_or_open(loaded):
    stats = loaded.kernel.stats
    before, count = dict(stats.by_name), stats.count
    assert call(loaded, FLAT_MODULES) == sum(range(FLAT_MODULES))
    calls = {n: c - before.get(n, 0) for n, c in stats.by_name.items()}
    assert {n: calls[n] for n in PATH_SYSCALLS if calls.get(n)} == {}
    # The call's own few (the agent's channel), not one per module.
    assert stats.count - count < FLAT_MODULES, calls


def test_the_stdlib_is_imported_from_the_image_in_the_region(loaded):
    stats = loaded.kernel.stats
    before = dict(stats.by_name)
    loader, file = call(loaded, "stdlib")
    assert loader == "MappedLoader" and file.endswith("/python3.11/colorsys.py"), file
    calls = {n: c - before.get(n, 0) for n, c in stats.by_name.items()}
    assert {n: calls[n] for n in PATH_SYSCALLS if calls.get(n)} == {}


def test_a_damaged_archive_is_refused_at_mount_with_a_clear_error(loaded, tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "m.py").write_text("M = 1\n")
    bad = packed(tmp_path / "bad")
    bad.chmod(0o644)
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(UsfError, match="cannot mount .*bad.usetl at /m9: .*no trailer"):
        loaded.mount("m9", str(bad))
    assert "m9" not in loaded.kernel.ns.mounts
    assert json.loads(loaded.modules.directory())["archives"][-1]["mount"] == "/m1"
