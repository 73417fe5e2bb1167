"""Packages that are not wheels: pip's source steps, run in a sandbox.

A pure-Python package published only as an sdist needs its build backend's
code run twice: once for its metadata (while pip resolves) and once to build
a wheel. Neither runs in the server's own process or with its privileges:

- resolving runs pip in new mount, PID, IPC and UTS namespaces as uid 65534
  with no capabilities and no new privileges, with the network (it reads the
  package index), in a scratch directory of its own;
- building runs ``pip wheel --no-deps --no-build-isolation --no-index`` the
  same way and, in addition, in a new network namespace with no interfaces:
  the build sees its sdist (copied into the scratch directory) and the
  server's interpreter with its build backends (setuptools and wheel, from
  pyproject.toml), and nothing it could reach or download. Without build
  isolation it cannot fetch other backends: an sdist that needs one fails
  with pip's reason.

Why not the process backend's sandbox (platform/zygote.py): a zygote forks a
loaded *function* and speaks the agent protocol; pip is a program, so a
fresh set of namespaces around one pip process is the simpler confinement of
the same kind. Where the server is not root, an unprivileged user namespace
gives the same namespaces but keeps the server's uid.

Only pure-Python wheels are accepted from a build (an extension module would
need a compiler in the sandbox and libraries the image does not carry). The
built wheel is kept by the sdist's sha256, so a package is built once per
host; the module store then installs it like any wheel.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

from usetl.errors import UsetlError

NOBODY = 65534
BUILD_TIMEOUT = 600.0
FETCH_CHUNK = 1 << 20
HOMES = ("/root", "/home")
# Run as root in the new mount namespace, before the drop to uid 65534: the homes (the
# server's state, caches and tokens) and any directory the sandbox's user could not pass
# on the way to the interpreter ($USETL_HIDE) become empty tmpfs, except the interpreter's
# own directories ($USETL_SHOW, one a line), shown again read-only where they were.
HIDE_HOMES = r"""set -e
IFS='
'
mount --make-rprivate /
i=0
for p in $USETL_SHOW; do
    mkdir "$USETL_STASH/$i"; mount --bind "$p" "$USETL_STASH/$i"; i=$((i+1))
done
for dir in $USETL_HIDE; do mount -t tmpfs -o mode=755,size=1m usetl-hidden "$dir"; done
i=0
for p in $USETL_SHOW; do
    mkdir -p "$p"; mount --move "$USETL_STASH/$i" "$p"; mount -o remount,bind,ro "$p"
    i=$((i+1))
done
unset USETL_SHOW USETL_STASH USETL_HIDE
exec "$@"
"""


class PackagingError(UsetlError):
    """A source distribution could not be fetched, resolved or built."""


def _confine(network: bool) -> list[str]:
    """The command prefix that runs a program in the sandbox."""
    spaces = ["--mount", "--pid", "--mount-proc", "--ipc", "--uts", "--fork", "--kill-child"]
    if not network:
        spaces.append("--net")
    if os.geteuid() != 0:
        return ["unshare", "--user", "--map-current-user", *spaces]
    return ["unshare", *spaces, "sh", "-c", HIDE_HOMES, "usetl-sandbox",
            "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]


def _interpreter_dirs() -> list[str]:
    """The interpreter's installation and environment (a venv), as real paths."""
    return list(dict.fromkeys(os.path.realpath(p) for p in (sys.base_prefix, sys.prefix)))


def _hidden() -> list[str]:
    """What the sandbox sees as empty: the homes, and above the interpreter's directories
    the outermost one the sandbox's user may not pass (a checkout in a private directory)."""
    hidden = [home for home in HOMES if os.path.isdir(home)]
    for path in _interpreter_dirs():
        if any(path.startswith(h + "/") for h in hidden):
            continue
        parts = path.split("/")
        for n in range(2, len(parts)):
            above = "/".join(parts[:n])
            if not os.stat(above).st_mode & 0o001:
                hidden.append(above)
                break
    return hidden


def _shown_again(hidden: list[str]) -> list[str]:
    """The interpreter's directories that lie in a hidden one."""
    return [path for path in _interpreter_dirs()
            if any(path.startswith(h + "/") for h in hidden)]


def scratch_directory() -> Path:
    """A directory the sandbox's user owns, for its inputs and outputs (in the system's
    temporary directory: the server's own directories are not the sandbox's to reach)."""
    scratch = Path(tempfile.mkdtemp(prefix="usetl-sandbox-"))
    if os.geteuid() == 0:
        os.chown(scratch, NOBODY, NOBODY)
    scratch.chmod(0o755)
    return scratch


def sandboxed_pip(args: list[str], scratch: Path, network: bool,
                  timeout: float = BUILD_TIMEOUT) -> subprocess.CompletedProcess:
    """`python -m pip ARGS` in the sandbox, in `scratch`, with pip's own settings only."""
    env = {name: value for name, value in os.environ.items() if name.startswith("PIP_")}
    env.update(HOME=str(scratch), PATH="/usr/sbin:/usr/bin:/sbin:/bin", PIP_NO_INPUT="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_CACHE_DIR="1", LANG="C.UTF-8")
    stash = scratch / ".mounts"
    stash.mkdir()
    hidden = _hidden()
    env.update(USETL_SHOW="\n".join(_shown_again(hidden)), USETL_STASH=str(stash),
               USETL_HIDE="\n".join(hidden))
    try:
        return subprocess.run([*_confine(network), sys.executable, "-m", "pip", *args],
                              cwd=scratch, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise PackagingError(f"pip in the sandbox took longer than {timeout:g} s") from e
    except OSError as e:
        raise PackagingError(f"cannot start the packaging sandbox: {e}") from e


def fetch(url: str, sha256: str | None, target: Path) -> None:
    """Download a distribution's bytes (no code runs) and check them against its hash."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=BUILD_TIMEOUT) as source, \
                open(target, "wb") as out:
            while chunk := source.read(FETCH_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except OSError as e:
        raise PackagingError(f"cannot download {url}: {e}") from e
    if sha256 is not None and digest.hexdigest() != sha256:
        raise PackagingError(f"{url} does not match its sha256 {sha256} "
                             f"(got {digest.hexdigest()})")


def build_wheel(name: str, url: str, sha256: str | None, cache: Path,
                reason: Callable[[str], str]) -> Path:
    """The pure-Python wheel built from the sdist (or source tree) at `url`; built once.

    `reason(stderr)` gives pip's reason for a failure in one line.
    """
    built = cache / (sha256 or hashlib.sha256(url.encode()).hexdigest())
    wheels = sorted(built.glob("*.whl")) if built.is_dir() else []
    if wheels:
        return wheels[0]
    cache.mkdir(parents=True, exist_ok=True)
    scratch = scratch_directory()
    try:
        source = _source_copy(url, sha256, scratch)
        out = scratch / "wheels"
        out.mkdir()
        if os.geteuid() == 0:
            os.chown(out, NOBODY, NOBODY)
        done = sandboxed_pip(["wheel", "--no-deps", "--no-build-isolation", "--no-index",
                              "--quiet", "--wheel-dir", str(out), str(source)],
                             scratch, network=False)
        wheels = sorted(out.glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise PackagingError(f"cannot build {name} from its source in the sandbox (no "
                                 f"network): {reason(done.stderr)}")
        if not wheels[0].name.endswith("-none-any.whl"):
            raise PackagingError(f"{name}'s source builds {wheels[0].name}, which is not "
                                 "pure Python; only pure-Python sdists are built at deploy "
                                 "time (publish a wheel for this platform)")
        staged = Path(tempfile.mkdtemp(prefix=".built-", dir=cache))
        shutil.move(str(wheels[0]), staged / wheels[0].name)
        staged.rename(built)
        return built / wheels[0].name
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _source_copy(url: str, sha256: str | None, scratch: Path) -> Path:
    """The source where the sandbox's user can read it: an archive fetched, a tree copied."""
    if url.startswith("file://"):
        local = Path(urllib.request.url2pathname(url.removeprefix("file://")))
        if local.is_dir():
            tree = scratch / "source"
            shutil.copytree(local, tree, ignore=shutil.ignore_patterns("build", "*.egg-info"))
            if os.geteuid() == 0:
                for directory, _, files in os.walk(tree):
                    os.chown(directory, NOBODY, NOBODY)
                    for file in files:
                        os.chown(os.path.join(directory, file), NOBODY, NOBODY)
            return tree
    file_name = url.split("#", 1)[0].rsplit("/", 1)[-1]
    archive = scratch / Path(urllib.request.url2pathname(file_name)).name
    fetch(url, sha256, archive)
    archive.chmod(0o644)
    return archive
