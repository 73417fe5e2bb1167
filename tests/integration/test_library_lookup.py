"""How libraries are found in a USF: a wheel's bundled ones loaded by path before its
extension module (no RPATH search), the others through the image's ld.so.cache.

Two entries built here with gcc as auditwheel lays a wheel out: extension modules
with an RPATH into a `.libs` directory of hash-named libraries, each with its
soname. ld.so searches a new RPATH directory's hwcaps and legacy subdirectories
(a failed openat and a stat each, every one a VM exit) unless the library it
needs is loaded already; the packer records each module's libraries in load
order and the importer loads them first.
"""

import errno
import shutil
import subprocess
import sysconfig
from importlib.machinery import EXTENSION_SUFFIXES

import pytest

from usetl.image import ImageArchive
from usetl.image.modstore import packed
from usetl.usf import UsfConfig, start_usf

pytestmark = [pytest.mark.kvm,
              pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")]

SUFFIX = EXTENSION_SUFFIXES[0]
LEAF, MID = "libleaf-0a1b2c3d.so.1", "libmid-4e5f6a7b.so.1"
MODULE = """#include <Python.h>
int %(call)s(void);
static PyObject *value(PyObject *self, PyObject *args) { return PyLong_FromLong(%(call)s()); }
static PyMethodDef methods[] = {{"value", value, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "%(name)s", NULL, -1, methods};
PyMODINIT_FUNC PyInit_%(name)s(void) { return PyModule_Create(&def); }
"""
FUNCTION = """
def handler(event, context):
    import demo.core._ext, other._ext2
    with open("/proc/self/maps") as f:
        leaves = sorted({line.split()[-1] for line in f if "libleaf" in line})
    return {"values": [demo.core._ext.value(), other._ext2.value()], "leaves": leaves,
            "loader": type(demo.core._ext.__spec__.loader).__name__}
"""


def gcc(out, source, *flags):
    src = out.with_name(out.name + ".c")
    src.write_text(source)
    done = subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-Wl,--disable-new-dtags", "-o",
                           str(out), str(src), *flags], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    src.unlink()


def make_entries(root):
    """Entry one: demo/core/_ext needs libmid, which needs libleaf (both in bundled.libs);
    libmid has no RPATH of its own and finds libleaf through _ext's, as ld.so lets it
    (scipy's libgfortran finds its libquadmath so). Entry two: other/_ext2 needs its own
    copy of libleaf, the same soname."""
    libs = root / "one" / "bundled.libs"
    libs.mkdir(parents=True)
    gcc(libs / LEAF, "int leaf(void) { return 40; }\n", f"-Wl,-soname,{LEAF}")
    gcc(libs / MID, "int leaf(void);\nint mid(void) { return leaf() + 1; }\n",
        f"-Wl,-soname,{MID}", f"-L{libs}", f"-l:{LEAF}")
    package = root / "one" / "demo" / "core"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package.parent / "__init__.py").write_text("")
    include = f"-I{sysconfig.get_paths()['include']}"
    gcc(package / f"_ext{SUFFIX}", MODULE % {"call": "mid", "name": "_ext"},
        include, f"-L{libs}", f"-l:{MID}", "-Wl,-rpath,$ORIGIN/../../bundled.libs")
    other = root / "two" / "other.libs"
    other.mkdir(parents=True)
    shutil.copy(libs / LEAF, other / LEAF)
    (root / "two" / "other").mkdir()
    (root / "two" / "other" / "__init__.py").write_text("")
    gcc(root / "two" / "other" / f"_ext2{SUFFIX}", MODULE % {"call": "leaf", "name": "_ext2"},
        include, f"-L{other}", f"-l:{LEAF}", "-Wl,-rpath,$ORIGIN/../other.libs")
    return packed(root / "one"), packed(root / "two")


def test_the_packer_records_each_modules_bundled_libraries_in_load_order(tmp_path):
    one, two = make_entries(tmp_path)
    with ImageArchive.open(one) as archive:
        assert archive.meta["libraries"] == {
            f"/demo/core/_ext{SUFFIX}": [[f"/bundled.libs/{LEAF}", LEAF],
                                         [f"/bundled.libs/{MID}", MID]],
        }
    with ImageArchive.open(two) as archive:
        assert archive.meta["libraries"] == {
            f"/other/_ext2{SUFFIX}": [[f"/other.libs/{LEAF}", LEAF]],
        }


def test_bundled_libraries_load_by_path_with_no_search_and_one_copy_per_soname(image, tmp_path):
    one, two = make_entries(tmp_path)
    usf = start_usf(image, UsfConfig(trace=True))
    try:
        usf.mount("m0", str(one))
        usf.mount("m1", str(two))
        r = usf.load_function("handler", source=FUNCTION, filename="/tmp/fn.py",
                              sys_path=["/m0", "/m1"], timeout=120)
        assert r.ok, (r.error, r.stderr)
        traced = len(usf.kernel.trace)
        r = usf.call({}, timeout=60)
        assert r.ok, (r.error, r.stderr)
        misses = [(t.name, t.args[1]) for t in usf.kernel.trace[traced:]
                  if t.name in ("openat", "newfstatat") and t.result == -errno.ENOENT]
    finally:
        usf.close()
    assert r.value["values"] == [41, 40]
    # ld.so bound other/_ext2's libleaf to the one loaded already, as it does by soname.
    assert r.value["leaves"] == [f"/m0/bundled.libs/{LEAF}"]
    assert misses == []  # without the preload: ld.so's probes of both RPATH directories
    assert r.value["loader"] == "BundledExtensionLoader"


def test_ctypes_find_library_reads_the_images_cache_through_ldconfig(image):
    """`ldconfig -p` runs as a child program and lists only libraries the guest has."""
    code = """
import ctypes, ctypes.util, os, subprocess
out = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True).stdout
paths = [line.rpartition(" => ")[2] for line in out.splitlines()[1:]]
print(ctypes.util.find_library("c"), ctypes.CDLL(ctypes.util.find_library("m")).cos is not None,
      len(paths) > 10, all(os.path.isfile(p) for p in paths))
"""
    usf = start_usf(image, UsfConfig())
    try:
        r = usf.run_code(code, timeout=120)
    finally:
        usf.close()
    assert r.ok, (r.error, r.stderr)
    assert r.stdout.split() == ["libc.so.6", "True", "True", "True"]


def test_the_images_extension_modules_load_their_system_libraries_by_path(image, tmp_path):
    """_lzma needs liblzma: loaded by path first, ld.so neither tries the interpreter's
    RUNPATH (a failed openat) nor reads /etc/ld.so.cache for it (five syscalls)."""
    source = """
import sys
def handler(event, context):
    fresh = "_lzma" not in sys.modules
    import _lzma
    return [fresh, type(_lzma.__spec__.loader).__name__, _lzma.LZMACompressor is not None]
"""
    (tmp_path / "code").mkdir()
    usf = start_usf(image, UsfConfig(trace=True))
    try:
        usf.mount("code", str(packed(tmp_path / "code")))  # the image goes in the region too
        r = usf.load_function("handler", source=source, filename="/tmp/fn.py", timeout=120)
        assert r.ok, (r.error, r.stderr)
        traced = len(usf.kernel.trace)
        r = usf.call({}, timeout=60)
        assert r.ok, (r.error, r.stderr)
        calls = usf.kernel.trace[traced:]
    finally:
        usf.close()
    assert r.value == [True, "BundledExtensionLoader", True]
    assert [t.name for t in calls if t.result == -errno.ENOENT] == []
    assert sum(t.name == "openat" for t in calls) == 2  # liblzma and _lzma, nothing else
