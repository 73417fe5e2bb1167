"""Packing a directory as an archive, and the guest's importer reading one from memory.

The importer (usetl.guest.importer, usetl.importer in the guest) runs here in the
test's own interpreter over an archive's bytes, as the guest runs it over the
module region; tests/integration/test_importer.py runs it in a USF.
"""

import importlib
import importlib.resources
import pathlib
import pkgutil
import sys

import pytest

from usetl.abi.archive import in_region
from usetl.guest import importer
from usetl.image.archive import ImageArchive
from usetl.image.modstore import archive_path, packed
from usetl.image.pyc import pyc_path

MOUNT = "/usetl-test-mapped"


def make_tree(root):
    pkg = root / "mapdemo"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "data").mkdir()
    (pkg / "__init__.py").write_text("VALUE = 41\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "leaf.py").write_text("def boom():\n    raise ValueError('from leaf')\n")
    (pkg / "data" / "table.json").write_text('{"rows": 3}')
    (pkg / "broken.py").write_text("def f(:\n")
    (root / "mapns" / "part").mkdir(parents=True)  # a namespace package's portion
    (root / "mapns" / "part" / "one.py").write_text("ONE = 1\n")
    return root


@pytest.fixture
def mapped(tmp_path):
    """The packed tree served at MOUNT from its bytes, as in the guest; undone afterwards."""
    archive = packed(make_tree(tmp_path / "tree"))
    importer._archives[MOUNT] = importer.MappedArchive(MOUNT, memoryview(archive.read_bytes()))
    sys.path_hooks.insert(0, importer.path_hook)
    sys.path.insert(0, MOUNT)
    yield archive
    sys.path.remove(MOUNT)
    sys.path_hooks.remove(importer.path_hook)
    del importer._archives[MOUNT]
    for name in [n for n in sys.modules if n.split(".")[0] in ("mapdemo", "mapns")]:
        del sys.modules[name]
    for entry in [e for e in sys.path_importer_cache if str(e).startswith(MOUNT)]:
        del sys.path_importer_cache[entry]


def test_packing_adds_an_unchecked_pyc_per_module_and_is_done_once(tmp_path):
    tree = make_tree(tmp_path / "tree")
    archive = packed(tree)
    assert archive == archive_path(tree) == tmp_path / "tree.usetl"
    with ImageArchive.open(archive) as opened:
        pyc = opened.lookup(pyc_path("/mapdemo/__init__.py"))
        assert pyc is not None
        assert bytes(opened.read(pyc, 4, 4)) == (1).to_bytes(4, "little")  # unchecked hash
        assert opened.lookup(pyc_path("/mapdemo/broken.py")) is None  # does not compile
        assert opened.lookup("/mapdemo/data/table.json").size == 11
    mtime = archive.stat().st_mtime_ns
    assert packed(tree) == archive and archive.stat().st_mtime_ns == mtime


def test_what_the_module_region_holds_is_packed_before_what_it_leaves_out(tmp_path):
    tree = make_tree(tmp_path / "tree")
    (tree / "mapdemo" / "_speedups.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    with ImageArchive.open(packed(tree)) as opened:
        files = {e.path: e for e in opened.entries() if e.kind == "file"}
    held = [e.offset for p, e in files.items() if in_region(p, files)]
    left_out = [e.offset for p, e in files.items() if not in_region(p, files)]
    assert "/mapdemo/broken.py" in files and in_region("/mapdemo/broken.py", files)  # no pyc
    assert len(left_out) == 5  # the four sources with a pyc and the shared object
    assert max(held) < min(left_out)


def test_a_mapped_package_has_a_directory_imports_attributes(mapped):
    mod = importlib.import_module("mapdemo")
    assert mod.VALUE == 41
    assert isinstance(mod.__spec__.loader, importer.MappedLoader)
    assert mod.__file__ == mod.__spec__.origin == f"{MOUNT}/mapdemo/__init__.py"
    assert mod.__spec__.cached == pyc_path(f"{MOUNT}/mapdemo/__init__.py")
    assert list(mod.__path__) == [f"{MOUNT}/mapdemo"]
    assert mod.__spec__.submodule_search_locations == [f"{MOUNT}/mapdemo"]
    leaf = importlib.import_module("mapdemo.sub.leaf")
    assert leaf.__spec__.submodule_search_locations is None
    with pytest.raises(ValueError) as raised:
        leaf.boom()
    # The code object names the module's guest path, not the path it was packed under.
    frame = raised.value.__traceback__.tb_next.tb_frame
    assert frame.f_code.co_filename == f"{MOUNT}/mapdemo/sub/leaf.py"
    names = {name for _, name, _ in pkgutil.iter_modules(mod.__path__)}
    assert names == {"sub", "broken"}
    with pytest.raises(SyntaxError):  # no pyc: compiled from the source, which is broken
        importlib.import_module("mapdemo.broken")


@pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning")
def test_resources_are_read_from_the_mapping(mapped):
    files = importlib.resources.files("mapdemo")
    table = files / "data" / "table.json"
    assert isinstance(table, importer.traversable_class())
    # A directory import's files() is a pathlib.Path: packages call exists() and glob() on it.
    assert isinstance(table, pathlib.Path) and table.exists() and files.is_dir()
    assert not (files / "missing.txt").exists()
    assert table.read_text() == '{"rows": 3}' and table.is_file()
    assert str(table) == f"{MOUNT}/mapdemo/data/table.json"
    assert sorted(p.name for p in files.iterdir()) == [
        "__init__.py", "__pycache__", "broken.py", "data", "sub"]
    assert importlib.resources.read_binary("mapdemo", "broken.py") == b"def f(:\n"
    assert pkgutil.get_data("mapdemo", "data/table.json") == b'{"rows": 3}'
    with importlib.resources.as_file(table) as path:
        assert str(path) == f"{MOUNT}/mapdemo/data/table.json"  # the guest's own path
    with pytest.raises(FileNotFoundError):
        (files / "missing.txt").read_bytes()


def test_a_namespace_portion_in_an_archive_joins_its_package(mapped, tmp_path):
    other = tmp_path / "elsewhere" / "mapns" / "other"
    other.mkdir(parents=True)
    (other / "two.py").write_text("TWO = 2\n")
    sys.path.append(str(tmp_path / "elsewhere"))  # a directory: the normal path finder's
    try:
        ns = importlib.import_module("mapns")
        assert ns.__file__ is None
        assert list(ns.__path__) == [f"{MOUNT}/mapns", str(tmp_path / "elsewhere" / "mapns")]
        assert importlib.import_module("mapns.part.one").ONE == 1
        two = importlib.import_module("mapns.other.two")
        assert two.TWO == 2 and not isinstance(two.__spec__.loader, importer.MappedLoader)
    finally:
        sys.path.remove(str(tmp_path / "elsewhere"))


def test_a_corrupt_index_is_a_clear_import_error(tmp_path):
    data = bytearray(packed(make_tree(tmp_path / "tree")).read_bytes())
    data[-60] ^= 0xFF  # a byte of the trailer's checksum
    with pytest.raises(importer.MappedImportError, match="checksum mismatch"):
        importer.MappedArchive("/m0", memoryview(bytes(data)))
    with pytest.raises(importer.MappedImportError, match="truncated"):
        importer.MappedArchive("/m0", memoryview(bytes(data[:100])))


def test_bytecode_of_another_python_is_a_clear_import_error(mapped):
    archive = importer._archives[MOUNT]
    offset, _ = archive.files[pyc_path(f"{MOUNT}/mapdemo/__init__.py")]
    data = bytearray(archive.view)
    data[offset : offset + 2] = b"\x00\x00"
    archive.view = memoryview(bytes(data))
    with pytest.raises(importer.MappedImportError, match="bytecode of another Python") as e:
        importlib.import_module("mapdemo")
    assert e.value.name == "mapdemo"
