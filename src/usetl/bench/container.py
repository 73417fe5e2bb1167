"""A runc container holding the image's CPython: the container baselines.

The rootfs is the baked image's own files (the same interpreter, libraries
and stdlib a USF runs), extracted once per image digest under
``<cache>/bench/rootfs/<digest>``. Containers run with every namespace
(user, pid, network, ipc, uts, mount, cgroup) and a read-only rootfs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from usetl.bench.errors import BenchError
from usetl.image import ImageArchive, cache_root


class ContainerError(BenchError):
    """runc is missing or a container could not run."""


def runc_path() -> str:
    path = shutil.which("runc")
    if path is None:
        raise ContainerError("runc is not installed (apt-get install -y runc; `make setup` does)")
    return path


def rootfs_for(image: ImageArchive) -> Path:
    """The image's files as a directory tree, extracted once and reused."""
    digest = image.meta["digest"][:12]
    root = cache_root() / "bench" / "rootfs" / digest
    if (root / ".complete").exists():
        return root
    tmp = root.with_name(f"{digest}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for entry in image.entries():
        target = tmp / entry.path.lstrip("/")
        if entry.kind == "dir":
            target.mkdir(parents=True, exist_ok=True)
        elif entry.kind == "symlink":
            target.parent.mkdir(parents=True, exist_ok=True)
            assert entry.target is not None
            target.symlink_to(entry.target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(image.read(entry, 0, entry.size))
            target.chmod(entry.mode & 0o7777)
    for mount_point in ("proc", "dev", "tmp"):
        (tmp / mount_point).mkdir(exist_ok=True)
    (tmp / ".complete").touch()
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


def _config(rootfs: Path, args: list[str]) -> dict:
    ids = [{"containerID": 0, "hostID": 0, "size": 65536}]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/bin:/bin", "HOME=/tmp"],
            "cwd": "/tmp",
            "capabilities": {k: [] for k in ("bounding", "effective", "permitted", "ambient")},
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": "bench",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "mode=755", "size=1024k"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "size=65536k"]},
        ],
        "linux": {
            "uidMappings": ids,
            "gidMappings": ids,
            "namespaces": [{"type": t} for t in
                           ("user", "pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
        },
    }


class Container:
    """One container: `run()` runs it to exit; `start()` keeps it running on pipes."""

    def __init__(self, image: ImageArchive, args: list[str]):
        self.runc = runc_path()
        self.id = f"usetl-bench-{uuid.uuid4().hex[:12]}"
        self.bundle = cache_root() / "bench" / "bundles" / self.id
        self.bundle.mkdir(parents=True)
        config = _config(rootfs_for(image), [image.meta["executable"], *args])
        (self.bundle / "config.json").write_text(json.dumps(config))
        self.proc: subprocess.Popen[bytes] | None = None

    def run(self) -> bytes:
        """Create, start and wait for the container; its stdout."""
        done = subprocess.run(
            [self.runc, "run", "--bundle", str(self.bundle), self.id],
            capture_output=True, stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise ContainerError(
                f"runc run exited {done.returncode}: {done.stderr.decode(errors='replace')[-500:]}"
            )
        return done.stdout

    def start(self) -> subprocess.Popen[bytes]:
        self.proc = subprocess.Popen(
            [self.runc, "run", "--bundle", str(self.bundle), self.id],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        return self.proc

    def init_pid(self) -> int:
        """The host pid of the container's first process."""
        state = subprocess.run([self.runc, "state", self.id], capture_output=True, check=True)
        return int(json.loads(state.stdout)["pid"])

    def close(self) -> None:
        if self.proc is not None:
            subprocess.run([self.runc, "kill", self.id, "KILL"], capture_output=True)
            self.proc.wait()
            self.proc = None
        subprocess.run([self.runc, "delete", "--force", self.id], capture_output=True)
        shutil.rmtree(self.bundle, ignore_errors=True)

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
