"""usetl.importer: imports served from the module region, with no syscall per module.

The monitor places the function's packed code and module-store entries in a
read-only region of guest memory (usetl.abi.archive's MODULES_DEVICE) and
shows the same archives as the directories /code, /m0, /m1, ... `install()`
maps the region once, reads each archive's index from it, and puts a path
hook first in sys.path_hooks: for a sys.path entry inside a mapped archive,
the standard PathFinder then asks a MappedFinder, which resolves packages,
modules, extension modules and namespace portions from the index as
FileFinder does from a directory listing, and a MappedLoader runs each
module's precompiled code object from the mapped pages. sys.path's order,
namespace packages, pkgutil and importlib.invalidate_caches keep their
meaning; entries outside the archives keep the normal path finder.

Module attributes are those a directory import gives: __file__ and
__spec__.origin the .py's path, __spec__.cached its pyc, __path__ the
package's directory. Resources come from the mapping: importlib.resources
(files(), read_binary, read_text, as_file gives the real guest path) and
pkgutil.get_data. Files a package opens by path are the monitor's to serve
(from the same archive); extension modules load through ld.so as usual, the
libraries their wheel bundles loaded by path first where the packer recorded
them (the archive's meta "libraries"), so ld.so does not search for them.

Without the device (the process backend) `install()` does nothing.
"""

import _imp
import io
import json
import marshal
import mmap
import os
import sys
from importlib import machinery
from importlib._bootstrap_external import MAGIC_NUMBER

from usetl.abi import archive as fmt

PYC_HEADER_SIZE = 16
HASH_BASED = 0b01  # PEP 552 flags: bit 0, hash-based (the packer's pycs are unchecked)
_archives = {}  # mount ("/m0") -> MappedArchive
_region = {}  # "view": the mapped region, once mapped
_loaded_libraries = set()  # sonames of the bundled libraries loaded by path


class MappedImportError(ImportError):
    """A mapped archive or one of its pycs is not what this interpreter can run."""


class MappedArchive:
    """One archive in the region: its files by guest path, each directory's names."""

    def __init__(self, mount, view, shadowed=()):
        """`shadowed`: paths other file systems cover (the image's /tmp is the tmpfs)."""
        self.mount = mount
        self.view = view
        try:
            meta, rows = fmt.read_index(view)
        except fmt.ArchiveFormatError as e:
            raise MappedImportError(f"the module archive mounted at {mount} is {e}") from None
        # extension module's guest path -> [(library's guest path, soname)], in load order
        self.libraries = {_join(mount, module): [(_join(mount, path), soname)
                                                  for path, soname in needs]
                          for module, needs in meta.get("libraries", {}).items()}
        self.files = {}  # guest path -> (offset, size), of the files placed in the region
        self.dirs = {}  # guest path -> {name: kind}
        shadowed = frozenset(shadowed)
        below = tuple(s + "/" for s in shadowed)
        for row in rows:
            path = _join(mount, row[fmt.PATH])
            if path in shadowed or path.startswith(below):
                continue
            if row[fmt.KIND] == "dir":
                self.dirs.setdefault(path, {})
            elif row[fmt.KIND] == "file":
                self.files[path] = (row[fmt.OFFSET], row[fmt.SIZE])
            if row[fmt.PATH] != "/":
                parent, _, name = path.rpartition("/")
                self.dirs.setdefault(parent or "/", {})[name] = row[fmt.KIND]
        # What the monitor did not place (shared objects, sources with a pyc) is read by path.
        self.files = {p: at for p, at in self.files.items() if fmt.in_region(p, self.files)}

    def read(self, path):
        """The file's bytes as a view of the mapping (no copy)."""
        offset, size = self.files[path]
        return self.view[offset : offset + size]


def _join(mount, path):
    """The guest path of an archive's path: "/m0" + "/pkg"; the image is mounted at "/"."""
    if mount == "/":
        return path
    return mount if path == "/" else mount + path


def _archive_of(path):
    """The mapped archive holding a guest path, the innermost mount first (None: none)."""
    for mount in sorted(_archives, key=len, reverse=True):
        if path == mount or path.startswith(mount.rstrip("/") + "/"):
            return _archives[mount]
    return None


def _normal(path):
    return os.path.normpath(path) if path.startswith("/") else None


# Suffixes in FileFinder's order: extension modules, then source, then bytecode.
_SUFFIXES = (
    [(s, "extension") for s in machinery.EXTENSION_SUFFIXES]
    + [(s, "source") for s in machinery.SOURCE_SUFFIXES]
    + [(s, "bytecode") for s in machinery.BYTECODE_SUFFIXES]
)


class MappedFinder:
    """The path-entry finder of one directory inside a mapped archive."""

    def __init__(self, mapped, path):
        self.mapped = mapped
        self.path = path
        self.names = mapped.dirs[path]

    def find_spec(self, fullname, target=None):
        tail = fullname.rpartition(".")[2]
        base = f"{self.path.rstrip('/')}/{tail}"
        namespace = False
        if self.names.get(tail) == "dir":
            package = self.mapped.dirs[base]
            for suffix, kind in _SUFFIXES:
                if package.get("__init__" + suffix) == "file":
                    return self._spec(fullname, f"{base}/__init__{suffix}", kind, base)
            namespace = True
        for suffix, kind in _SUFFIXES:
            if self.names.get(tail + suffix) == "file":
                return self._spec(fullname, base + suffix, kind, None)
        if namespace:  # a portion: PathFinder gathers them into the namespace package
            spec = machinery.ModuleSpec(fullname, None)
            spec.submodule_search_locations = [base]
            return spec
        return None

    def _spec(self, fullname, origin, kind, package_dir):
        if kind == "extension":
            libraries = self.mapped.libraries.get(origin)
            loader = (BundledExtensionLoader(fullname, origin, libraries) if libraries
                      else machinery.ExtensionFileLoader(fullname, origin))
        else:
            loader = MappedLoader(fullname, origin, kind, self.mapped)
        spec = machinery.ModuleSpec(fullname, loader, origin=origin,
                                    is_package=package_dir is not None)
        spec.has_location = True
        if package_dir is not None:
            spec.submodule_search_locations = [package_dir]
        if kind != "extension":
            spec.cached = loader.pyc
        return spec

    def invalidate_caches(self):
        pass  # an archive never changes

    def iter_modules(self, prefix=""):
        """(name, is_package) of the modules here, as pkgutil asks FileFinder."""
        seen = set()
        for name, kind in sorted(self.names.items()):
            if kind == "dir":
                entries = self.mapped.dirs.get(f"{self.path}/{name}", {})
                if name.isidentifier() and any(
                    entries.get("__init__" + s) == "file" for s, _ in _SUFFIXES
                ):
                    seen.add(name)
                    yield prefix + name, True
                continue
            for suffix, _ in _SUFFIXES:
                stem = name[: -len(suffix)]
                if name.endswith(suffix) and stem.isidentifier() and stem not in seen:
                    seen.add(stem)
                    if stem != "__init__":
                        yield prefix + stem, False


class BundledExtensionLoader(machinery.ExtensionFileLoader):
    """An extension module whose libraries its archive records (a wheel's bundled ones, the
    image's system ones for lib-dynload): each is loaded by its path first, in that order,
    so ld.so finds it by soname instead of searching for it (the module's RPATH: a failed
    openat and a stat per hwcaps and legacy subdirectory; /etc/ld.so.cache: five syscalls
    on each dlopen that reads it)."""

    def __init__(self, fullname, path, libraries):
        super().__init__(fullname, path)
        self.libraries = libraries

    def create_module(self, spec):
        load_libraries(self.libraries)
        return super().create_module(spec)


def load_libraries(libraries, mode=0):
    """dlopen each (path, soname) in order, unless a library of that soname was loaded so
    already: that one is what ld.so binds the name to (the same library bundled by two
    wheels, or copied into two entries), and a second copy must not be loaded. Stops at
    the first that fails: ld.so's own search and error follow, as without it."""
    import ctypes  # the agent has it imported already

    for path, soname in libraries:
        if soname in _loaded_libraries:
            continue
        try:
            ctypes.CDLL(path, mode=mode)
        except OSError:
            return
        _loaded_libraries.add(soname)


class MappedLoader:
    """Runs a module's code object from the mapped pages: its pyc, else its source."""

    def __init__(self, fullname, origin, kind, mapped):
        self.name = fullname
        self.path = origin
        self.kind = kind
        self.mapped = mapped
        self.pyc = fmt.pyc_of(origin) if kind == "source" else origin

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        exec(self.get_code(module.__name__), module.__dict__)

    def is_package(self, fullname):
        return self.path.rpartition("/")[2].startswith("__init__.")

    def get_filename(self, fullname):
        return self.path

    def get_code(self, fullname):
        if self.pyc in self.mapped.files:
            code = self._unmarshal(self.mapped.read(self.pyc))
            if self.kind == "source":
                _imp._fix_co_filename(code, self.path)
            return code
        # No pyc: the packer could not compile it; compiling raises the SyntaxError here.
        return compile(bytes(self.mapped.read(self.path)), self.path, "exec", dont_inherit=True)

    def _unmarshal(self, pyc):
        magic = bytes(pyc[:4])
        if magic != MAGIC_NUMBER:
            raise MappedImportError(
                f"{self.pyc} holds bytecode of another Python (magic {magic.hex()}, this one "
                f"reads {MAGIC_NUMBER.hex()}): repack the module store entry",
                name=self.name, path=self.pyc,
            )
        flags = int.from_bytes(pyc[4:8], "little")
        if flags & ~0b11 or not flags & HASH_BASED:
            raise MappedImportError(f"{self.pyc} is not a hash-based pyc (flags {flags:#x})",
                                    name=self.name, path=self.pyc)
        try:
            return marshal.loads(pyc[PYC_HEADER_SIZE:])
        except (ValueError, EOFError, TypeError) as e:
            raise MappedImportError(f"{self.pyc} holds bad bytecode: {e}",
                                    name=self.name, path=self.pyc) from None

    def get_source(self, fullname):
        if self.kind != "source":
            return None
        from importlib.util import decode_source

        return decode_source(self.get_data(self.path))

    def get_data(self, path):
        """A file's bytes (pkgutil.get_data): from the mapping when it holds the file."""
        path = _normal(path) or path
        mapped = _archive_of(path)
        if mapped is not None and path in mapped.files:
            return bytes(mapped.read(path))
        with open(path, "rb") as f:
            return f.read()

    def get_resource_reader(self, fullname):
        if not self.is_package(fullname):
            return None
        return MappedResources(traversable_class()(self.path.rpartition("/")[0]))


def traversable_class():
    """The class of files()' paths, made on first use (importlib.resources has imported
    pathlib by then): a pathlib.PosixPath, as a directory import's files() gives, since
    packages call exists(), glob() or stat() on it (pendulum's locales); its listings and
    reads come from the mapping, the rest from the mount."""
    cls = _region.get("traversable")
    if cls is None:
        cls = _region["traversable"] = _make_traversable_class()
    return cls


def _make_traversable_class():
    import pathlib

    class MappedTraversable(pathlib.PosixPath):
        def _mapped_file(self):
            """The mapped archive holding this file, or None."""
            mapped = _archive_of(str(self))
            return mapped if mapped is not None and str(self) in mapped.files else None

        def _kind(self):
            """"dir" or "file" where the mapped index has it, else None: the mount answers
            (what the index lacks may be elsewhere, the image being mounted at /)."""
            mapped = _archive_of(str(self))
            if mapped is None:
                return None
            if str(self) in mapped.dirs:
                return "dir"
            kind = mapped.dirs.get(str(self.parent), {}).get(self.name)
            return kind if kind in ("dir", "file") else None

        def exists(self):
            return self._kind() is not None or super().exists()

        def is_dir(self):
            kind = self._kind()
            return super().is_dir() if kind is None else kind == "dir"

        def is_file(self):
            kind = self._kind()
            return super().is_file() if kind is None else kind == "file"

        def iterdir(self):
            mapped = _archive_of(str(self))
            names = None if mapped is None else mapped.dirs.get(str(self))
            if names is None:
                return super().iterdir()
            return iter([self / name for name in sorted(names)])

        def read_bytes(self):
            mapped = self._mapped_file()
            if mapped is None:  # a shared object, not in the region; or an error
                return super().read_bytes()
            return bytes(mapped.read(str(self)))

        def read_text(self, encoding=None, errors=None):
            with self.open("r", encoding=encoding, errors=errors) as f:
                return f.read()

        def open(self, mode="r", buffering=-1, encoding=None, errors=None, newline=None):
            if mode not in ("r", "rb") or self._mapped_file() is None:
                return super().open(mode, buffering, encoding, errors, newline)
            stream = io.BytesIO(self.read_bytes())
            if mode == "rb":
                return stream
            return io.TextIOWrapper(stream, io.text_encoding(encoding), errors, newline)

    return MappedTraversable


class MappedResources:
    """A package's resource reader: files() for importlib.resources, the older API too."""

    def __init__(self, root):
        self.root = root

    def files(self):
        return self.root

    def open_resource(self, resource):
        return self.root.joinpath(resource).open("rb")

    def resource_path(self, resource):
        path = self.root.joinpath(resource)
        if not path.is_file():
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return str(path)

    def is_resource(self, path):
        return self.root.joinpath(path).is_file()

    def contents(self):
        return [child.name for child in self.root.iterdir()]


def path_hook(path):
    """sys.path_hooks' entry: a MappedFinder for a directory inside a mapped archive."""
    normal = _normal(path) if isinstance(path, str) else None
    mapped = _archive_of(normal) if normal else None
    if mapped is None or normal not in mapped.dirs:
        raise ImportError("not a directory of a mapped archive", path=path)
    return MappedFinder(mapped, normal)


def install(device=fmt.MODULES_DEVICE):
    """Map the module region and serve imports from it; returns the mounts it serves."""
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    try:
        directory = _read_directory(fd)
        if directory["archives"] and "view" not in _region:
            _region["view"] = memoryview(mmap.mmap(fd, directory["size"], prot=mmap.PROT_READ))
    finally:
        os.close(fd)
    for placed in directory["archives"]:
        mount = placed["mount"]
        if mount not in _archives:
            view = _region["view"][placed["offset"] : placed["offset"] + placed["size"]]
            _archives[mount] = MappedArchive(mount, view, directory.get("shadowed", ()))
    if _archives and path_hook not in sys.path_hooks:
        sys.path_hooks.insert(0, path_hook)
    for entry in list(sys.path_importer_cache):
        normal = _normal(entry) if isinstance(entry, str) else None
        mapped = _archive_of(normal) if normal else None
        if mapped is not None and normal in mapped.dirs:
            del sys.path_importer_cache[entry]  # a finder made before the archive was mapped
    return sorted(_archives)


def _read_directory(fd):
    data = b""
    while chunk := os.read(fd, 1 << 16):
        data += chunk
    try:
        directory = json.loads(data)
        for placed in directory["archives"]:
            if not (isinstance(placed["mount"], str) and placed["mount"].startswith("/")):
                raise ValueError(f"bad mount {placed['mount']!r}")
            if placed["offset"] + placed["size"] > directory["size"]:
                raise ValueError(f"{placed['mount']} lies outside the region")
    except (ValueError, KeyError, TypeError) as e:
        raise MappedImportError(f"the module region's directory is unreadable: {e}") from None
    return directory
