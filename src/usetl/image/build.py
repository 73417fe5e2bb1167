"""Baking the default image into the cache, and finding baked images.

Cache layout: ``<cache>/images/<digest>/image.usetl``, where ``<cache>`` is
the ``cache_dir`` argument, else $USETL_CACHE, else ~/.cache/usetl, and the
digest names the build's inputs (see inputs.plan_digest). An image is
written to a temporary file in its own directory, synced and renamed into
place, so an interrupted build never leaves a file that looks valid.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import multiprocessing
import os
import posixpath
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.util import source_hash
from pathlib import Path
from typing import BinaryIO

from usetl.abi.archive import in_region

from .archive import ArchiveWriter, ImageArchive, ImageError
from .inputs import DIR_MODE, FILE_MODE, ImagePlan, guest_sources, plan_image
from .pyc import compile_pyc, pyc_path, source_hash_of_pyc

log = logging.getLogger(__name__)

CACHE_ENV = "USETL_CACHE"
IMAGE_FILE_NAME = "image.usetl"
IMAGES_DIR_NAME = "images"
GUEST_LIB_DIR_NAME = "guest-lib"
TEMP_PREFIX = f".{IMAGE_FILE_NAME}.tmp-"
LOCK_FILE_NAME = ".lock"

# progress(phase, done, total): phase "compile" counts modules, "write" bytes.
ProgressFn = Callable[[str, int, int], None]

# (guest path of a .py, host path to read it from, or its bytes if generated)
CompileJob = tuple[str, str | None, bytes | None]

# Below this many modules a process pool costs more than it saves.
POOL_THRESHOLD = 200
COMPILE_CHUNK = 16


def cache_root(cache_dir: Path | None = None) -> Path:
    """The cache directory: the argument, else $USETL_CACHE, else ~/.cache/usetl."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    return Path.home() / ".cache" / "usetl"


def image_path(cache_dir: Path | None, digest: str) -> Path:
    """Where the image with this digest lives in the cache."""
    return cache_root(cache_dir) / IMAGES_DIR_NAME / digest / IMAGE_FILE_NAME


def current_digest() -> str:
    """The digest of the image the host's current files would make."""
    return plan_image().digest


def build_image(
    cache_dir: Path | None = None,
    progress: ProgressFn | None = None,
    force: bool = False,
) -> Path:
    """Bake the default image into the cache, unless an intact one exists; return its path."""
    plan = plan_image()
    target = image_path(cache_dir, plan.digest)
    if not force and _is_intact(target):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ImageError(
            f"cannot create {target.parent}: {e.strerror}; choose another cache with "
            f"--cache or ${CACHE_ENV}"
        ) from None
    with _build_lock(target.parent):
        # Another process may have finished the same image while we waited.
        if not force and _is_intact(target):
            return target
        _remove_stale_temp_files(target.parent)
        _write_atomically(plan, target, progress)
    return target


def default_image(cache_dir: Path | None = None, progress: ProgressFn | None = None) -> Path:
    """The image for the host's current interpreter, baked first if needed."""
    return build_image(cache_dir, progress)


def guest_lib(cache_dir: Path | None = None) -> Path:
    """A directory holding the guest runtime as the ``usetl`` package, as the image has it.

    The process backend's sandbox puts it on sys.path. Named by a digest of its
    contents and written once, atomically; world-readable, for a sandbox that
    runs as another uid.
    """
    files = {relative: source.read_bytes() for relative, source in guest_sources().items()}
    files["__init__.py"] = b""
    h = hashlib.sha256()
    for relative in sorted(files):
        h.update(f"{relative}\0{hashlib.sha256(files[relative]).hexdigest()}\n".encode())
    root = cache_root(cache_dir) / GUEST_LIB_DIR_NAME / h.hexdigest()
    if root.is_dir():
        return root
    temp = root.with_name(f".{root.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    for relative, data in files.items():
        path = temp / "usetl" / relative
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o644)
    for directory in (temp, temp / "usetl", temp / "usetl" / "abi"):
        directory.chmod(0o755)
    try:
        temp.rename(root)
    except OSError:
        if not root.is_dir():
            raise
        shutil.rmtree(temp)  # another process wrote the same contents first
    return root


@dataclass(frozen=True)
class ImageInfo:
    """A baked image found in the cache; ``problem`` says why it cannot be opened."""

    path: Path
    digest: str
    archive_size: int
    created: str = ""
    python_version: str = ""
    file_count: int = 0
    problem: str | None = None


def list_images(cache_dir: Path | None = None) -> list[ImageInfo]:
    """Every image in the cache, newest first; damaged ones carry a ``problem``."""
    images_dir = cache_root(cache_dir) / IMAGES_DIR_NAME
    if not images_dir.is_dir():
        return []
    infos = []
    for path in images_dir.glob(f"*/{IMAGE_FILE_NAME}"):
        digest = path.parent.name
        size = path.stat().st_size
        try:
            archive = ImageArchive.open(path)
        except ImageError as e:
            infos.append(ImageInfo(path, digest, size, problem=str(e)))
            continue
        with archive:
            infos.append(
                ImageInfo(
                    path,
                    digest,
                    size,
                    created=str(archive.meta.get("created", "")),
                    python_version=str(archive.meta.get("python_version", "")),
                    file_count=archive.file_count,
                )
            )
    infos.sort(key=lambda i: (i.created, i.digest), reverse=True)
    return infos


def _is_intact(path: Path) -> bool:
    try:
        ImageArchive.open(path).close()
    except ImageError as e:
        if path.exists():
            log.warning("rebuilding %s: %s", path, e)
        return False
    return True


@contextlib.contextmanager
def _build_lock(directory: Path) -> Iterator[None]:
    """Serialize builds of one digest, so parallel `usetl vm run`s bake it once."""
    with open(directory / LOCK_FILE_NAME, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _remove_stale_temp_files(directory: Path) -> None:
    """Leftovers of interrupted builds (we hold the lock, so nobody is writing them)."""
    for stale in directory.glob(f"{TEMP_PREFIX}*"):
        stale.unlink(missing_ok=True)


def _write_atomically(plan: ImagePlan, target: Path, progress: ProgressFn | None) -> None:
    temp = target.with_name(f"{TEMP_PREFIX}{os.getpid()}")
    try:
        with open(temp, "wb") as out:
            _write_image(plan, out, progress)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o444)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    directory_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def _write_image(plan: ImagePlan, out: BinaryIO, progress: ProgressFn | None) -> None:
    started = time.monotonic()
    pycs = _compile_all(plan, progress)
    writer = ArchiveWriter(out)
    for path, entry in plan.entries.items():
        if entry.kind == "dir":
            writer.add_dir(path, entry.mode, entry.mtime)
        elif entry.kind == "symlink":
            writer.add_symlink(path, entry.target or "", entry.mtime)
    pyc_files = {pyc_path(source): source for source in pycs}
    for pyc in pyc_files:
        cache_dir = posixpath.dirname(pyc)
        if cache_dir not in writer:
            writer.add_dir(cache_dir, DIR_MODE, plan.entries[posixpath.dirname(cache_dir)].mtime)

    host_files = {p: e for p, e in plan.entries.items() if e.kind == "file"}
    total = sum(e.size for e in host_files.values()) + sum(map(len, pycs.values()))
    written = 0
    _report(progress, "write", 0, total)
    # What the module region holds first, what it leaves out after (modstore._pack_tree).
    files = {*host_files, *pyc_files}
    for path in sorted(files, key=lambda p: (not in_region(p, files), p)):
        if path in pyc_files:
            source = pyc_files[path]
            data = pycs[source]
            writer.add_file(path, data, FILE_MODE, plan.entries[source].mtime)
        else:
            entry = host_files[path]
            data = entry.data if entry.data is not None else _read_host_file(entry.source or path)
            # The guest never checks UNCHECKED_HASH pycs: a source that changed
            # since it was compiled would otherwise run old code silently.
            stale_pyc = path in pycs and source_hash_of_pyc(pycs[path]) != source_hash(data)
            if len(data) != entry.size or stale_pyc:
                raise ImageError(
                    f"{entry.source or path} changed while baking the image; run again"
                )
            writer.add_file(path, data, entry.mode, entry.mtime)
        written += len(data)
        _report(progress, "write", written, total)
    meta = plan.meta()
    meta["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    writer.finish(meta)
    log.info("baked image %s in %.1f s", plan.digest[:12], time.monotonic() - started)


def _read_host_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ImageError(f"cannot read {path} while baking the image: {e.strerror}") from None


def _compile_all(plan: ImagePlan, progress: ProgressFn | None) -> dict[str, bytes]:
    """pyc bytes for every .py in the plan that compiles, keyed by the .py's guest path."""
    jobs: list[CompileJob] = []
    for path in plan.sources_to_compile():
        entry = plan.entries[path]
        jobs.append((path, entry.source, entry.data))
    _report(progress, "compile", 0, len(jobs))
    if _can_fork_pool(len(jobs)):
        with ProcessPoolExecutor(mp_context=multiprocessing.get_context("fork")) as pool:
            results = pool.map(_compile_job, jobs, chunksize=COMPILE_CHUNK)
            pycs = _collect(jobs, results, progress)
    else:
        pycs = _collect(jobs, map(_compile_job, jobs), progress)
    return pycs


def _can_fork_pool(job_count: int) -> bool:
    """Whether compiling in forked workers is worth it and safe.

    Fork, because spawn and forkserver re-import the caller's __main__, which
    deadlocks on the build lock when the caller has no main guard. Only from a
    single-threaded process, because a fork taken while another thread holds
    a lock (logging's, say, in `usetl serve`) can hang the child.
    """
    return (
        job_count >= POOL_THRESHOLD and (os.cpu_count() or 1) > 1 and threading.active_count() == 1
    )


def _collect(
    jobs: list[CompileJob], results: Iterable[bytes | None], progress: ProgressFn | None
) -> dict[str, bytes]:
    pycs = {}
    for done, ((path, _, _), pyc) in enumerate(zip(jobs, results, strict=True), start=1):
        if pyc is not None:
            pycs[path] = pyc
        _report(progress, "compile", done, len(jobs))
    return pycs


def _compile_job(job: CompileJob) -> bytes | None:
    """Compile one module (runs in a pool worker); None if it does not compile."""
    path, source, data = job
    if data is None:
        with open(source or path, "rb") as f:
            data = f.read()
    try:
        return compile_pyc(data, path)
    except (SyntaxError, ValueError) as e:
        log.warning("%s does not compile (%s); left without a pyc", path, e)
        return None


def _report(progress: ProgressFn | None, phase: str, done: int, total: int) -> None:
    if progress is not None:
        progress(phase, done, total)
