"""The module store: requirements installed once per host per (package, version).

The paper's central module directory. `ModuleStore.install(requirements)`
resolves the requirements with pip (for this interpreter, the one the image
carries), then installs each resolved distribution that is not there yet
with ``pip install --no-deps --target`` into its own content-addressed
directory, ``<root>/<name>-<version>-<hash>``, made read-only. Requirement
lines may carry pip's ``--hash=sha256:...`` options: then every artifact
must match one (pip's hash-checking mode), when resolved and when installed.

Wheels are resolved on the host (installing a wheel runs none of its code).
Where wheels alone do not satisfy the requirements (a pure-Python package
published only as an sdist), pip resolves again in a sandbox and each sdist
is built into a wheel there, without network (packaging.py); the built wheel
is kept by the sdist's hash and installed like the others. A function's
`module_dirs` are the entries of its resolved set; functions that need the
same package share one directory. pip never runs at invocation time.

Wheels with extension modules may need system libraries they do not bundle
(numpy's needs libstdc++). The image holds only what CPython itself needs,
so those libraries, found on this host as ld.so would find them, are copied
into the entry's SYSLIBS directory with a PRELOAD list (dependencies
first): the sandbox loads them before the function is imported, and ld.so
then reuses them by soname.

Each entry is also packed as an archive of the image's format, ``<entry>.usetl``
beside it (`packed`), with an UNCHECKED_HASH pyc for every module: a USF maps
it into its module region and imports from memory (usetl.importer), and its
monitor serves the entry's files from it (libos.archivefs). The archive's meta
records each extension module's bundled libraries in load order
(`bundled_libraries`), which the importer loads by path before the module.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import multiprocessing
import os
import posixpath
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

from usetl.abi.archive import in_region
from usetl.elf import ElfError, ElfFile
from usetl.errors import UsetlError

from .archive import ArchiveWriter, ImageArchive, ImageError
from .build import COMPILE_CHUNK, _can_fork_pool, cache_root
from .inputs import DEFAULT_LIBRARY_DIRS
from .loadorder import ALWAYS_LOADED, load_order
from .packaging import PackagingError, build_wheel, sandboxed_pip, scratch_directory
from .pyc import compile_pyc, pyc_path, source_hash_of_pyc

PIP_TIMEOUT = 600.0
STORE_FORMAT = 3  # part of every entry's digest: a new layout makes new entries
SYSLIBS = ".usetl-syslibs"
BUILT_WHEELS = ".built-wheels"  # wheels built from sdists, by the sdist's sha256
PRELOAD = "preload.txt"
ARCHIVE_SUFFIX = ".usetl"
PACK_FORMAT = 3  # in each packed archive's meta: a new packing makes old archives stale
MODULE_SUFFIXES = tuple(EXTENSION_SUFFIXES)  # extension modules' file names end so


class ModuleStoreError(UsetlError):
    """A requirement could not be resolved or installed; the message carries pip's reason."""


@dataclass(frozen=True)
class Distribution:
    name: str
    version: str
    url: str  # the exact artifact pip resolved (an index URL or a local file)
    digest: str  # the content-addressed key: interpreter, name, version, artifact hash
    sha256: str | None = None  # the artifact's, as the index gave it and pip checked it
    source: bool = False  # an sdist (or a source tree): built into a wheel in the sandbox


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pip_reason(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    return " ".join(errors[:3] or lines[-3:]) or "pip failed without a message"


class ModuleStore:
    def __init__(self, root: Path | None = None, binary_only: bool = False,
                 wheelhouse: Path | None = None):
        """`binary_only`: wheels only, refusing sdists (which are otherwise built in the
        packaging sandbox; no package's build code ever runs in the server's process).
        `wheelhouse`: a directory of distributions to take requirements from instead of the
        package index (pip's --no-index --find-links), for hosts that must not reach it."""
        self.root = Path(root) if root is not None else cache_root() / "modules"
        self.binary_only = binary_only
        self.wheelhouse = Path(wheelhouse).resolve() if wheelhouse is not None else None
        if self.wheelhouse is not None and not self.wheelhouse.is_dir():
            raise ModuleStoreError(f"the wheelhouse {self.wheelhouse} is not a directory")
        self.root.mkdir(parents=True, exist_ok=True)
        # Read by the sandboxes' unprivileged user.
        self.root.chmod(0o755)

    def _sources(self) -> list[str]:
        """pip's options for where packages come from."""
        if self.wheelhouse is None:
            return []
        return ["--no-index", "--find-links", str(self.wheelhouse)]

    def _pip(self, args: list[str]) -> subprocess.CompletedProcess:
        """pip on the host, wheels only."""
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
        args = [*args, "--only-binary", ":all:", *self._sources()]
        try:
            return subprocess.run(
                [sys.executable, "-m", "pip", *args],
                capture_output=True, text=True, timeout=PIP_TIMEOUT, env=env,
            )
        except subprocess.TimeoutExpired as e:
            raise ModuleStoreError(f"pip took longer than {PIP_TIMEOUT:g} s") from e

    def resolve(self, requirements: list[str]) -> list[Distribution]:
        """Every distribution the requirements need (pip's resolver; nothing installed):
        from wheels on the host, else with sdists too, in the packaging sandbox."""
        scratch = scratch_directory()
        try:
            report = scratch / "report.json"
            reqs = scratch / "requirements.txt"
            reqs.write_text("\n".join(requirements) + "\n")
            reqs.chmod(0o644)
            resolve = ["install", "--dry-run", "--ignore-installed", "--quiet",
                       "--report", str(report), "-r", str(reqs)]
            done = self._pip(resolve)
            if done.returncode != 0 and not self.binary_only:
                # Metadata of an sdist comes from its build backend: sandboxed code.
                done = sandboxed_pip([*resolve, "--prefer-binary", "--no-build-isolation",
                                      *self._sources()], scratch, network=True)
            if done.returncode != 0:
                raise ModuleStoreError(
                    f"cannot resolve requirements {requirements}: {_pip_reason(done.stderr)}"
                )
            items = json.loads(report.read_text())["install"]
        except PackagingError as e:
            raise ModuleStoreError(str(e)) from e
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return self._distributions(items)

    def _distributions(self, items: list[dict]) -> list[Distribution]:
        """The resolver report's items as Distributions, each with its content key."""
        tag = f"{sys.implementation.cache_tag}-{sys.platform}-{os.uname().machine}"
        found = []
        for item in items:
            meta, info = item["metadata"], item["download_info"]
            hashes = info.get("archive_info", {}).get("hashes") or {}
            artifact = hashes.get("sha256") or info["url"]
            key = (f"{STORE_FORMAT}\n{tag}\n{_normalise(meta['name'])}\n{meta['version']}\n"
                   f"{artifact}")
            found.append(Distribution(
                name=_normalise(meta["name"]),
                version=meta["version"],
                url=info["url"],
                digest=hashlib.sha256(key.encode()).hexdigest()[:16],
                sha256=hashes.get("sha256"),
                source=not info["url"].split("#", 1)[0].endswith(".whl"),
            ))
        return sorted(found, key=lambda d: d.name)

    def path(self, dist: Distribution) -> Path:
        return self.root / f"{dist.name}-{dist.version}-{dist.digest}"

    def install(self, requirements: list[str],
                progress: Callable[[str, int, int], None] | None = None) -> list[Path]:
        """Directories holding the requirements and their dependencies (installed if missing).

        `progress(phase, done, total)`: phases "resolve", "build" (sdists) and "install".
        """
        if not requirements:
            return []
        report = progress or (lambda phase, done, total: None)
        report("resolve", 0, 1)
        dists = self.resolve(requirements)
        report("resolve", 1, 1)
        missing = [d for d in dists if not self.path(d).is_dir()]
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one pip at a time per store
            sources = [d for d in missing if d.source]
            wheels: dict[Distribution, str] = {}
            for i, dist in enumerate(sources):
                report("build", i, len(sources))
                wheels[dist] = str(self._built(dist))
            if sources:
                report("build", len(sources), len(sources))
            for i, dist in enumerate(missing):
                report("install", i, len(missing))
                if not self.path(dist).is_dir():
                    self._install_one(dist, wheels.get(dist))
            report("install", len(missing), len(missing))
            for i, dist in enumerate(dists):  # entries installed before packing came too
                report("pack", i, len(dists))
                packed(self.path(dist))
            report("pack", len(dists), len(dists))
        return [self.path(d) for d in dists]

    def _built(self, dist: Distribution) -> Path:
        if self.binary_only:
            raise ModuleStoreError(f"{dist.name} {dist.version} has no wheel, and this store "
                                   "takes wheels only")
        try:
            return build_wheel(dist.name, dist.url, dist.sha256, self.root / BUILT_WHEELS,
                               _pip_reason)
        except PackagingError as e:
            raise ModuleStoreError(str(e)) from e

    def _install_one(self, dist: Distribution, wheel: str | None) -> None:
        """Install the distribution's wheel (the index's, hash-checked, or one built here)."""
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        try:
            if wheel is None and dist.sha256 is not None:
                wanted = staging.with_suffix(".txt")
                wanted.write_text(f"{dist.name} @ {dist.url} --hash=sha256:{dist.sha256}\n")
                target = ["--require-hashes", "-r", str(wanted)]
            else:
                target = [wheel or dist.url]
            done = self._pip(["install", "--no-deps", "--no-compile", "--quiet",
                              "--target", str(staging), *target])
            if done.returncode != 0:
                raise ModuleStoreError(
                    f"cannot install {dist.name}=={dist.version}: {_pip_reason(done.stderr)}"
                )
            copy_system_libraries(staging)
            for directory, dirs, files in os.walk(staging):
                for name in files:
                    # Programs a wheel ships (a static ffmpeg) stay executable, for execve.
                    path = os.path.join(directory, name)
                    os.chmod(path, 0o555 if os.lstat(path).st_mode & 0o111 else 0o444)
                for name in dirs:
                    os.chmod(os.path.join(directory, name), 0o555)
            staging.chmod(0o555)
            staging.rename(self.path(dist))
        finally:
            staging.with_suffix(".txt").unlink(missing_ok=True)
            if staging.exists():
                staging.chmod(0o755)
                for directory, dirs, _ in os.walk(staging):
                    for name in dirs:
                        os.chmod(os.path.join(directory, name), 0o755)
                shutil.rmtree(staging)

    def entries(self) -> list[Path]:
        return sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _elf(path: str) -> ElfFile | None:
    try:
        return ElfFile.from_path(path)
    except (ElfError, OSError):
        return None


def _find(name: str, runpath: list[str], origin: str) -> str | None:
    directories = [d.replace("${ORIGIN}", origin).replace("$ORIGIN", origin) for d in runpath]
    for directory in [*directories, *DEFAULT_LIBRARY_DIRS]:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def copy_system_libraries(entry: Path) -> list[str]:
    """Copy the host libraries the entry's ELF files need but do not bundle; returns their names.

    Writes SYSLIBS/PRELOAD, the names in load order (a library after the ones it needs).
    """
    inside = str(entry.resolve()) + os.sep
    wanted: dict[str, str] = {}  # soname -> host path
    edges: dict[str, list[str]] = {}
    queue = [str(p) for p in entry.rglob("*.so*") if p.is_file()]
    seen: set[str] = set()
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        elf = _elf(path)
        if elf is None:
            continue
        for name in elf.needed:
            if name in ALWAYS_LOADED:
                continue
            found = _find(name, elf.runpath, os.path.dirname(path))
            if found is None or os.path.realpath(found).startswith(inside):
                continue  # bundled by the wheel (or missing on the host, as on import there)
            wanted.setdefault(name, found)
            edges.setdefault(name, [])
            owner = os.path.basename(path)
            if owner in wanted:
                edges[owner].append(name)
            queue.append(found)
    if not wanted:
        return []
    order: list[str] = []

    def visit(name: str, stack: tuple[str, ...] = ()) -> None:
        if name in order or name in stack:
            return
        for dep in edges.get(name, []):
            visit(dep, (*stack, name))
        order.append(name)

    for name in sorted(wanted):
        visit(name)
    target = entry / SYSLIBS
    target.mkdir()
    for name in order:
        shutil.copyfile(wanted[name], target / name)
    (target / PRELOAD).write_text("\n".join(order) + "\n")
    return order


def bundled_libraries(entry: Path) -> dict[str, list[list[str]]]:
    """Each extension module's libraries from inside the entry, in load order
    (usetl.image.loadorder), as [archive path, soname]: {"/pkg/_ext.so": [[...], ...]}.
    Libraries from outside it are left to ld.so."""
    root = str(entry.resolve())
    elves: dict[str, ElfFile | None] = {}

    def elf_of(path: str) -> ElfFile | None:
        return elves[path] if path in elves else elves.setdefault(path, _elf(path))

    def inside(name: str, search: list[str]) -> str | None:
        found = _find(name, search, root)
        real = os.path.realpath(found) if found else ""
        return real if real.startswith(root + os.sep) else None

    found = {}
    for path in sorted(entry.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.name.endswith(MODULE_SUFFIXES):
            order = load_order(str(path.resolve()), inside, elf_of)
            if order:
                found["/" + path.relative_to(entry).as_posix()] = [
                    [library[len(root):], soname] for library, soname in order]
    return found


def archive_path(directory: Path) -> Path:
    """Where `packed` puts a directory's archive: beside it, named after it."""
    directory = Path(directory)
    return directory.with_name(directory.name + ARCHIVE_SUFFIX)


def packed(directory: Path) -> Path:
    """The directory's archive (written first if missing or stale): its tree, with pycs.

    Paths in it are relative to the directory ("/pkg/__init__.py"). Existing
    __pycache__ files are left out: each module gets the UNCHECKED_HASH pyc the
    image's stdlib has, compiled here (a module that does not compile has none,
    and is compiled from source at import, as CPython would).
    """
    target = archive_path(directory)
    if _is_current(target):
        return target
    temp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(temp, "wb") as out:
            writer = ArchiveWriter(out)
            _pack_tree(Path(directory), writer)
            writer.finish({"pack_format": PACK_FORMAT, "cache_tag": sys.implementation.cache_tag,
                           "packed_from": str(directory),
                           "libraries": bundled_libraries(Path(directory))})
        os.chmod(temp, 0o444)
        os.replace(temp, target)
    except OSError as e:
        raise ModuleStoreError(f"cannot pack {directory}: {e}") from None
    finally:
        temp.unlink(missing_ok=True)
    return target


def _is_current(archive: Path) -> bool:
    try:
        with ImageArchive.open(archive) as opened:
            return (opened.meta.get("pack_format") == PACK_FORMAT
                    and opened.meta.get("cache_tag") == sys.implementation.cache_tag)
    except ImageError:
        return False


def _pack_tree(root: Path, writer: ArchiveWriter) -> None:
    """Pack the tree: first the files the module region holds (pycs, sources without one,
    data), then those it leaves out (sources with a pyc, shared objects), so that what the
    region holds is dense and fills whole huge pages (ModuleRegion.place)."""
    pycs = _compile_tree(root)
    region_pycs = {pyc_path(path) for path in pycs}
    info = root.stat()
    writer.add_dir("/", info.st_mode, info.st_mtime_ns)
    left_out = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        relative = os.path.relpath(directory, root)
        base = "" if relative == "." else "/" + relative
        for name in dirs:
            info = os.lstat(os.path.join(directory, name))
            if stat.S_ISLNK(info.st_mode):
                writer.add_symlink(f"{base}/{name}", os.readlink(os.path.join(directory, name)),
                                   info.st_mtime_ns)
            else:
                writer.add_dir(f"{base}/{name}", info.st_mode, info.st_mtime_ns)
        for name in sorted(files):
            host_path, path = os.path.join(directory, name), f"{base}/{name}"
            if path in pycs:
                _pack_pyc(path, pycs[path], os.lstat(host_path).st_mtime_ns, writer)
            if in_region(path, region_pycs):
                _pack_file(host_path, path, writer, pycs)
            else:
                left_out.append((host_path, path))
    for host_path, path in left_out:
        _pack_file(host_path, path, writer, pycs)


def _compile_tree(root: Path) -> dict[str, bytes]:
    """The pycs of the tree's modules, by archive path, compiled on every core where safe."""
    jobs = []
    for directory, dirs, files in os.walk(root):  # as _pack_tree walks it
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            host_path = os.path.join(directory, name)
            if name.endswith(".py") and stat.S_ISREG(os.lstat(host_path).st_mode):
                jobs.append(("/" + os.path.relpath(host_path, root), host_path))
    if _can_fork_pool(len(jobs)):
        with ProcessPoolExecutor(mp_context=multiprocessing.get_context("fork")) as pool:
            results = list(pool.map(_compile_one, jobs, chunksize=COMPILE_CHUNK))
    else:
        results = [_compile_one(job) for job in jobs]
    return {path: pyc for (path, _), pyc in zip(jobs, results, strict=True) if pyc is not None}


def _compile_one(job: tuple[str, str]) -> bytes | None:
    """A module's pyc (runs in a pool worker); None if it does not compile."""
    path, host_path = job
    with open(host_path, "rb") as f:
        data = f.read()
    try:
        return compile_pyc(data, path)
    except (SyntaxError, ValueError):
        return None


def _pack_file(host_path: str, path: str, writer: ArchiveWriter,
               pycs: dict[str, bytes]) -> None:
    info = os.lstat(host_path)
    if stat.S_ISLNK(info.st_mode):
        writer.add_symlink(path, os.readlink(host_path), info.st_mtime_ns)
        return
    if not stat.S_ISREG(info.st_mode):
        return  # a FIFO or socket in a wheel's tree is nothing a guest could read
    with open(host_path, "rb") as f:
        data = f.read()
    pyc = pycs.get(path)
    if pyc is not None and importlib.util.source_hash(data) != source_hash_of_pyc(pyc):
        raise ModuleStoreError(f"{host_path} changed while it was packed")
    writer.add_file(path, data, info.st_mode, info.st_mtime_ns)


def _pack_pyc(path: str, pyc: bytes, mtime: int, writer: ArchiveWriter) -> None:
    """The pyc of the module at `path`, in its __pycache__, with its source's `mtime`."""
    cache = posixpath.dirname(pyc_path(path))
    if cache not in writer:
        writer.add_dir(cache, stat.S_IFDIR | 0o555, mtime)
    writer.add_file(pyc_path(path), pyc, stat.S_IFREG | 0o444, mtime)
