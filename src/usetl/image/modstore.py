"""The module store: requirements installed once per host per (package, version).

The paper's central module directory. `ModuleStore.install(requirements)`
resolves the requirements with pip (for this interpreter, the one the image
carries), then installs each resolved distribution that is not there yet
with ``pip install --no-deps --target`` into its own content-addressed
directory, ``<root>/<name>-<version>-<hash>``, made read-only. A function's
`module_dirs` are the entries of its resolved set; functions that need the
same package share one directory. pip never runs at invocation time.

Wheels with extension modules may need system libraries they do not bundle
(numpy's needs libstdc++). The image holds only what CPython itself needs,
so those libraries, found on this host as ld.so would find them, are copied
into the entry's SYSLIBS directory with a PRELOAD list (dependencies
first): the sandbox loads them before the function is imported, and ld.so
then reuses them by soname.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from usetl.elf import ElfError, ElfFile
from usetl.errors import UsetlError

from .build import cache_root
from .inputs import DEFAULT_LIBRARY_DIRS

PIP_TIMEOUT = 600.0
STORE_FORMAT = 3  # part of every entry's digest: a new layout makes new entries
SYSLIBS = ".usetl-syslibs"
PRELOAD = "preload.txt"
# Libraries every CPython process has loaded already (a second copy must not be loaded).
ALWAYS_LOADED = frozenset({"libc.so.6", "libm.so.6", "ld-linux-x86-64.so.2"})


class ModuleStoreError(UsetlError):
    """A requirement could not be resolved or installed; the message carries pip's reason."""


@dataclass(frozen=True)
class Distribution:
    name: str
    version: str
    url: str  # the exact artifact pip resolved (an index URL or a local file)
    digest: str  # the content-addressed key: interpreter, name, version, artifact hash


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pip_reason(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    return " ".join(errors[:3] or lines[-3:]) or "pip failed without a message"


class ModuleStore:
    def __init__(self, root: Path | None = None, binary_only: bool = True,
                 wheelhouse: Path | None = None):
        """`binary_only`: wheels only, so that installing never runs a package's build code
        on the host (a source distribution's setup.py would run as the server's user).
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

    def _pip(self, args: list[str]) -> subprocess.CompletedProcess:
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
        if self.binary_only:
            args = [*args, "--only-binary", ":all:"]
        if self.wheelhouse is not None:
            args = [*args, "--no-index", "--find-links", str(self.wheelhouse)]
        try:
            return subprocess.run(
                [sys.executable, "-m", "pip", *args],
                capture_output=True, text=True, timeout=PIP_TIMEOUT, env=env,
            )
        except subprocess.TimeoutExpired as e:
            raise ModuleStoreError(f"pip took longer than {PIP_TIMEOUT:g} s") from e

    def resolve(self, requirements: list[str]) -> list[Distribution]:
        """Every distribution the requirements need (pip's resolver; nothing installed)."""
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "report.json"
            reqs = Path(tmp) / "requirements.txt"
            reqs.write_text("\n".join(requirements) + "\n")
            done = self._pip(["install", "--dry-run", "--ignore-installed", "--quiet",
                              "--report", str(report), "-r", str(reqs)])
            if done.returncode != 0:
                raise ModuleStoreError(
                    f"cannot resolve requirements {requirements}: {_pip_reason(done.stderr)}"
                )
            items = json.loads(report.read_text())["install"]
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
            ))
        return sorted(found, key=lambda d: d.name)

    def path(self, dist: Distribution) -> Path:
        return self.root / f"{dist.name}-{dist.version}-{dist.digest}"

    def install(self, requirements: list[str]) -> list[Path]:
        """Directories holding the requirements and their dependencies (installed if missing)."""
        if not requirements:
            return []
        dists = self.resolve(requirements)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one pip at a time per store
            for dist in dists:
                if not self.path(dist).is_dir():
                    self._install_one(dist)
        return [self.path(d) for d in dists]

    def _install_one(self, dist: Distribution) -> None:
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        try:
            done = self._pip(["install", "--no-deps", "--no-compile", "--quiet",
                              "--target", str(staging), dist.url])
            if done.returncode != 0:
                raise ModuleStoreError(
                    f"cannot install {dist.name}=={dist.version}: {_pip_reason(done.stderr)}"
                )
            copy_system_libraries(staging)
            for directory, dirs, files in os.walk(staging):
                for name in files:
                    os.chmod(os.path.join(directory, name), 0o444)
                for name in dirs:
                    os.chmod(os.path.join(directory, name), 0o555)
            staging.chmod(0o555)
            staging.rename(self.path(dist))
        finally:
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
