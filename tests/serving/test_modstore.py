"""The module store with real pip: a local package built in tmp_path, no network needed."""

import textwrap

import pytest
from sandbox_files import write_wheel

from usetl.image.modstore import ModuleStore, ModuleStoreError


def make_package(root, name, version, body):
    src = root / name / "src" / name
    src.mkdir(parents=True)
    (root / name / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{name}"
        version = "{version}"
    """))
    (src / "__init__.py").write_text(body)
    return root / name


def test_installed_once_shared_and_read_only(tmp_path):
    pkg = make_package(tmp_path, "tinypkg", "1.2.3", "def double(x):\n    return 2 * x\n")
    store = ModuleStore(tmp_path / "store", binary_only=False)  # a local source tree
    first = store.install([str(pkg)])
    assert [p.name.rsplit("-", 1)[0] for p in first] == ["tinypkg-1.2.3"]
    assert (first[0] / "tinypkg" / "__init__.py").read_text().startswith("def double")
    mtime = first[0].stat().st_mtime_ns
    assert store.install([str(pkg)]) == first  # a second function: the same entry
    assert first[0].stat().st_mtime_ns == mtime
    assert store.entries() == first
    assert not (first[0].stat().st_mode & 0o222)
    assert not ((first[0] / "tinypkg" / "__init__.py").stat().st_mode & 0o222)


def test_a_requirement_that_cannot_be_installed_says_why(tmp_path):
    store = ModuleStore(tmp_path / "store")
    with pytest.raises(ModuleStoreError, match="Invalid requirement"):
        store.install([str(tmp_path / "no-such-package")])
    assert store.entries() == []


def test_a_wheelhouse_is_the_only_source_of_requirements(tmp_path):
    wheels = tmp_path / "wheels"
    write_wheel(wheels, "tinydep", "0.1", {"tinydep.py": "BASE = 40\n"})
    write_wheel(wheels, "tinyuse", "2.0", {"tinyuse/__init__.py": "from tinydep import BASE\n"},
                requires=("tinydep>=0.1",))
    store = ModuleStore(tmp_path / "store", wheelhouse=wheels)
    entries = store.install(["tinyuse"])
    assert [p.name.rsplit("-", 1)[0] for p in entries] == ["tinydep-0.1", "tinyuse-2.0"]
    assert (entries[0] / "tinydep.py").read_text() == "BASE = 40\n"
    assert store.install(["tinyuse==2.0"]) == entries  # installed once
    # The index has numpy; the wheelhouse does not, and nothing else is searched.
    with pytest.raises(ModuleStoreError, match="No matching distribution found for numpy"):
        store.install(["numpy"])
    with pytest.raises(ModuleStoreError, match="not a directory"):
        ModuleStore(tmp_path / "store", wheelhouse=tmp_path / "no-such-dir")
