"""The module store with real pip: a local package built in tmp_path, no network needed."""

import textwrap

import pytest

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
