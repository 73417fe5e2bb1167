"""The image layer: baking the host's CPython, the archive format, the cache, the CLI."""

from __future__ import annotations

import argparse
import importlib.util
import marshal
import os
import posixpath
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from usetl.errors import UsetlError
from usetl.image import (
    GUEST_AGENT,
    ImageArchive,
    ImageError,
    build_image,
    cache_root,
    default_image,
    ldcache,
    list_images,
)
from usetl.image.archive import FORMAT_VERSION, HEADER, TRAILER, ArchiveWriter
from usetl.image.inputs import PYTHON_NAMES, guest_package_dir, host_executable
from usetl.image.pyc import pyc_path
from usetl.libos.fs import ImageNode, Namespace

STDLIB = os.path.dirname(os.__file__)
EXCLUDED_NAMES = {"tkinter", "test", "tests", "idlelib", "ensurepip", "turtledemo", "site-packages"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("usetl-cache")


@pytest.fixture(scope="module")
def image(cache: Path) -> Path:
    """The default image, baked once for this module (a second or two)."""
    return build_image(cache)


@pytest.fixture(scope="module")
def archive(image: Path) -> ImageArchive:
    return ImageArchive.open(image)


def host_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


def image_bytes(archive: ImageArchive, path: str) -> bytes:
    """A file's bytes as the guest reads them: its path walked by the guest's resolver."""
    ns = Namespace(archive, 0, {}, archive.meta["executable"])
    node = ns.resolve(path).node
    assert isinstance(node, ImageNode), path
    return bytes(node.read_at(0, node.size))


def find_by_name(archive: ImageArchive, name: str) -> list[str]:
    return [e.path for e in archive.entries() if posixpath.basename(e.path) == name]


# --- contents ---------------------------------------------------------------


def test_image_lives_in_the_cache_under_its_digest(cache: Path, image: Path, archive):
    assert image == cache / "images" / archive.digest / "image.usetl"
    assert len(archive.digest) == 64


def test_executable_is_the_hosts_real_interpreter_byte_for_byte(archive: ImageArchive):
    executable = archive.meta["executable"]
    assert executable == host_executable() == os.path.realpath(executable)
    assert archive.lookup(executable).kind == "file"
    assert image_bytes(archive, executable) == host_bytes(executable)
    assert archive.lookup(executable).mode & 0o111


def test_dynamic_loader_is_reachable_through_its_pt_interp_path(archive: ImageArchive):
    interpreter = archive.meta["interpreter"]
    assert interpreter.startswith("/")
    # Reached by following the image's own symlinks, as the guest resolver will.
    assert image_bytes(archive, interpreter) == host_bytes(os.path.realpath(interpreter))


@pytest.mark.parametrize("library", ["libc.so.6", "libm.so.6"])
def test_system_libraries_are_byte_identical(archive: ImageArchive, library: str):
    paths = find_by_name(archive, library)
    assert paths, f"{library} missing"
    for path in paths:
        assert image_bytes(archive, path) == host_bytes(path)


def test_libpython_is_in_the_image_if_the_interpreter_is_shared(archive: ImageArchive):
    libpython = [e.path for e in archive.entries() if "libpython3" in posixpath.basename(e.path)]
    if not any("libpython" in name for name in _needed(host_executable())):
        pytest.skip("this interpreter links libpython statically")
    assert libpython
    for path in libpython:
        assert image_bytes(archive, path) == host_bytes(path)


def _needed(path: str) -> list[str]:
    from usetl.elf import ElfFile

    return ElfFile.from_path(path).needed


def test_extension_modules_and_their_libraries_are_in(archive: ImageArchive):
    lib_dynload = archive.meta["lib_dynload"]
    names = archive.listdir(lib_dynload)
    for module in ("_json", "_decimal", "zlib", "_ssl", "math"):
        assert any(n.startswith(module + ".") for n in names), module
    zlib_module = next(n for n in names if n.startswith("zlib."))
    for library in _needed(posixpath.join(lib_dynload, zlib_module)):
        assert find_by_name(archive, library), library


def test_stdlib_module_has_source_and_unchecked_hash_pyc(archive: ImageArchive):
    source_path = posixpath.join(archive.meta["stdlib"], "json", "__init__.py")
    source = image_bytes(archive, source_path)
    assert source == host_bytes(source_path)
    pyc = image_bytes(archive, pyc_path(source_path))
    assert pyc_path(source_path).endswith("json/__pycache__/__init__.cpython-311.pyc")
    assert pyc[:4] == importlib.util.MAGIC_NUMBER
    flags = struct.unpack("<I", pyc[4:8])[0]
    assert flags == 0b01  # hash-based, unchecked
    assert pyc[8:16] == importlib.util.source_hash(source)
    code = marshal.loads(pyc[16:])
    assert code.co_filename == source_path


def test_every_pyc_is_unchecked_hash_and_has_its_source(archive: ImageArchive):
    pycs = [e for e in archive.entries() if e.path.endswith(".pyc")]
    assert len(pycs) > 500
    for entry in pycs:
        header = bytes(archive.read(entry, 0, 8))
        assert header[4:8] == b"\x01\x00\x00\x00", entry.path
        cache_dir, name = posixpath.split(entry.path)
        source = posixpath.join(posixpath.dirname(cache_dir), name.split(".")[0] + ".py")
        assert archive.lookup(source) is not None, entry.path


def test_trimmed_parts_of_the_stdlib_are_left_out(archive: ImageArchive):
    stdlib = archive.meta["stdlib"]
    for entry in archive.entries():
        if entry.path.startswith(stdlib + "/"):
            parts = entry.path[len(stdlib) + 1 :].split("/")
            assert not EXCLUDED_NAMES & set(parts), entry.path
            assert not parts[0].startswith("config-"), entry.path
    dynload = archive.listdir(archive.meta["lib_dynload"])
    for prefix in ("_test", "_tkinter", "xxlimited", "_xxtestfuzz", "_ctypes_test"):
        assert not [n for n in dynload if n.startswith(prefix)], prefix


def test_guest_package_is_at_usetl_lib(archive: ImageArchive):
    assert archive.meta["agent"] == GUEST_AGENT == "/usetl/lib/usetl/agent.py"
    assert archive.meta["guest_lib"] == "/usetl/lib"
    assert image_bytes(archive, GUEST_AGENT) == (guest_package_dir() / "agent.py").read_bytes()
    assert image_bytes(archive, "/usetl/lib/usetl/__init__.py") == b""
    assert archive.lookup(pyc_path(GUEST_AGENT)) is not None
    for source in guest_package_dir().glob("*.py"):
        assert archive.lookup(f"/usetl/lib/usetl/{source.name}") is not None


def test_tree_is_consistent(archive: ImageArchive):
    root = archive.lookup("/")
    assert root is not None and root.kind == "dir"
    for entry in archive.entries():
        if entry.path != "/":
            parent = archive.lookup(posixpath.dirname(entry.path))
            assert parent is not None and parent.kind == "dir", entry.path
            assert posixpath.basename(entry.path) in archive.listdir(parent.path)
        if entry.kind == "file":
            assert entry.offset % 4096 == 0
        if entry.kind == "symlink":
            assert entry.target and entry.size == len(os.fsencode(entry.target))


def test_symlinks_are_recorded_as_the_host_has_them(archive: ImageArchive):
    for entry in archive.entries():
        if entry.kind == "symlink" and entry.path not in PYTHON_NAMES:
            assert os.path.islink(entry.path)
            # or, for a tool that is an alternatives link, straight to what it reaches
            assert entry.target in (os.readlink(entry.path), os.path.realpath(entry.path))


def test_python3_and_python_on_the_guests_path_are_the_interpreter(archive: ImageArchive):
    for name in PYTHON_NAMES:
        entry = archive.lookup(name)
        assert entry is not None and entry.kind == "symlink"
        assert entry.target == archive.meta["executable"]


def test_meta_describes_the_image(archive: ImageArchive):
    meta = archive.meta
    assert meta["format"] == FORMAT_VERSION
    assert meta["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert meta["stdlib"] == os.path.realpath(STDLIB)
    assert meta["digest"] == archive.digest
    assert meta["created"]
    assert archive.file_count == sum(1 for e in archive.entries() if e.kind == "file")


# --- reader -----------------------------------------------------------------


def test_read_is_clipped_to_the_file(archive: ImageArchive):
    entry = archive.lookup(GUEST_AGENT)
    whole = bytes(archive.read(entry, 0, entry.size + 1000))
    assert len(whole) == entry.size
    assert bytes(archive.read(entry, 5, 10)) == whole[5:15]
    assert bytes(archive.read(entry, entry.size + 10, 10)) == b""


def test_lookup_normalizes_but_does_not_follow_symlinks(archive: ImageArchive):
    interpreter = archive.meta["interpreter"]
    assert archive.lookup(os.path.realpath(interpreter)).kind == "file"
    if os.path.realpath(interpreter) != interpreter:
        # A symlink on the way (/lib64, or the name itself) is not followed.
        entry = archive.lookup(interpreter)
        assert entry is None or entry.kind == "symlink"
    assert archive.lookup("/usetl//lib/./usetl") == archive.lookup("/usetl/lib/usetl")


def test_listdir_errors_carry_linux_errnos(tmp_path: Path):
    path = tmp_path / "small.usetl"
    with open(path, "wb") as out:
        writer = ArchiveWriter(out)
        writer.add_dir("/", 0o755, 0)
        writer.add_file("/f", b"x", 0o644, 0)
        writer.add_symlink("/loop", "/loop", 0)
        writer.finish({"digest": "d"})
    with ImageArchive.open(path) as small:
        assert small.lookup("/loop").kind == "symlink"
        assert small.listdir("/") == ["f", "loop"]
        with pytest.raises(NotADirectoryError):
            small.listdir("/f")
        with pytest.raises(FileNotFoundError):
            small.listdir("/nope")


# --- cache ------------------------------------------------------------------


def test_second_build_is_a_cache_hit(cache: Path, image: Path):
    before = image.stat()
    assert build_image(cache) == image
    assert default_image(cache) == image
    after = image.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not list(image.parent.glob(".image.usetl.tmp-*"))


def test_cache_dir_comes_from_argument_then_environment(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("USETL_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("USETL_CACHE")
    assert cache_root() == Path.home() / ".cache" / "usetl"


def test_damaged_cached_image_is_rebuilt(tmp_path: Path, image: Path):
    cache = tmp_path / "cache"
    target = cache / "images" / image.parent.name / "image.usetl"
    target.parent.mkdir(parents=True)
    target.write_bytes(image.read_bytes()[: 3 * 4096])
    (target.parent / ".image.usetl.tmp-12345").write_bytes(b"left by a killed build")
    assert build_image(cache) == target
    with ImageArchive.open(target) as rebuilt:
        assert rebuilt.digest == image.parent.name
    assert not list(target.parent.glob(".image.usetl.tmp-*"))


def test_list_images_reports_good_and_damaged(tmp_path: Path, image: Path):
    cache = tmp_path / "cache"
    good = cache / "images" / "a" / "image.usetl"
    bad = cache / "images" / "b" / "image.usetl"
    good.parent.mkdir(parents=True)
    bad.parent.mkdir(parents=True)
    shutil.copy(image, good)
    bad.write_bytes(b"not an image")
    infos = {info.digest: info for info in list_images(cache)}
    assert infos["a"].problem is None and infos["a"].python_version
    assert infos["a"].file_count > 1000
    assert infos["b"].problem is not None


# --- damaged archives -------------------------------------------------------


@pytest.fixture
def copy_of_image(tmp_path: Path, image: Path) -> Path:
    copy = tmp_path / "image.usetl"
    shutil.copy(image, copy)
    copy.chmod(0o644)
    return copy


def _flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_flipped_index_byte_is_refused(copy_of_image: Path):
    size = copy_of_image.stat().st_size
    with open(copy_of_image, "rb") as f:
        f.seek(size - TRAILER.size)
        index_offset, index_length, _, _ = TRAILER.unpack(f.read(TRAILER.size))
    _flip_byte(copy_of_image, index_offset + index_length // 2)
    with pytest.raises(ImageError, match="checksum"):
        ImageArchive.open(copy_of_image)


def test_truncated_image_is_refused(copy_of_image: Path):
    with open(copy_of_image, "r+b") as f:
        f.truncate(copy_of_image.stat().st_size - 100)
    with pytest.raises(ImageError, match="truncated"):
        ImageArchive.open(copy_of_image)
    with open(copy_of_image, "r+b") as f:
        f.truncate(10)
    with pytest.raises(ImageError, match="truncated"):
        ImageArchive.open(copy_of_image)


def test_other_format_version_is_refused(copy_of_image: Path):
    with open(copy_of_image, "r+b") as f:
        f.write(HEADER.pack(b"USETLIMG", FORMAT_VERSION + 1, 0))
    with pytest.raises(ImageError, match="format version"):
        ImageArchive.open(copy_of_image)


def test_wrong_magic_is_refused(copy_of_image: Path):
    _flip_byte(copy_of_image, 0)
    with pytest.raises(ImageError, match="not a usetl image"):
        ImageArchive.open(copy_of_image)


def test_missing_image_is_a_usetl_error(tmp_path: Path):
    with pytest.raises(ImageError, match="does not exist") as missing:
        ImageArchive.open(tmp_path / "nothing.usetl")
    assert isinstance(missing.value, UsetlError)
    assert "\n" not in str(missing.value)


# --- CLI --------------------------------------------------------------------


def _run_cli(*argv: str) -> int:
    # Imported here: usetl.cli also imports the vm command group, which the
    # image tests do not need.
    from usetl.cli import image as image_cli

    parser = argparse.ArgumentParser()
    image_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_cli_build_and_ls(cache: Path, image: Path, capsys: pytest.CaptureFixture[str]):
    assert _run_cli("image", "build", "--cache", str(cache)) == 0
    out = capsys.readouterr().out
    assert str(image) in out and image.parent.name in out and "cached" in out
    assert _run_cli("image", "ls", "--cache", str(cache), "--files", "3") == 0
    out = capsys.readouterr().out
    assert image.parent.name[:12] in out and "*" in out
    assert "libpython" in out or "libc" in out


LDCONFIG = shutil.which("ldconfig") or "/sbin/ldconfig"
needs_ld_cache = pytest.mark.skipif(
    not (os.path.isfile("/etc/ld.so.cache") and os.access(LDCONFIG, os.X_OK)),
    reason="no /etc/ld.so.cache and ldconfig on this host")


@needs_ld_cache
def test_ld_cache_lists_the_hosts_entries_for_the_libraries_it_carries(archive: ImageArchive):
    """What ld.so and `ldconfig -p` read: the host's cache less what the image lacks, every
    path reaching a file of the image, libc's among them."""
    entries = ldcache.read_entries(image_bytes(archive, "/etc/ld.so.cache"))
    host = ldcache.read_entries(host_bytes("/etc/ld.so.cache"))
    assert entries and set(entries) <= set(host)
    ns = Namespace(archive, 0, {}, archive.meta["executable"])
    for _, _, path in entries:
        assert isinstance(ns.resolve(path).node, ImageNode), path
    assert any(soname == "libc.so.6" for _, soname, _ in entries)
    assert image_bytes(archive, "/sbin/ldconfig") == host_bytes(LDCONFIG)


@needs_ld_cache
def test_ld_cache_written_is_what_ldconfig_reads_in_ldconfigs_order(tmp_path: Path):
    host = ldcache.read_entries(host_bytes("/etc/ld.so.cache"))
    written = tmp_path / "ld.so.cache"
    written.write_bytes(ldcache.cache_bytes(list(reversed(host))))
    assert ldcache.read_entries(written.read_bytes()) == host  # ld.so's search order

    def listing(*extra: str) -> list[str]:
        out = subprocess.run([LDCONFIG, "-p", *extra], capture_output=True, text=True).stdout
        return [line for line in out.splitlines()[1:] if line.startswith("\t")]

    assert listing("-C", str(written)) == listing()


@pytest.mark.parametrize("a, b", [("libz.so.1", "libz.so.10"), ("libc.so.6", "libcrypt.so.1"),
                                  ("libfoo.so", "libfoo2.so"), ("libx.so", "libx.so.1"),
                                  ("lib9.so", "lib10.so")])
def test_libcmp_orders_digit_runs_as_numbers_as_glibc_does(a: str, b: str):
    assert ldcache.libcmp(a, b) < 0 < ldcache.libcmp(b, a)
    assert ldcache.libcmp(a, a) == 0
