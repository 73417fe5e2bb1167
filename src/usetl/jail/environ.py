"""An empty environment and only the process's own file descriptors."""

from __future__ import annotations

import os

# What a template process is started with (all it needs of the server's environment);
# USETL_TEST_HOOKS is set by tests only (see hyperfork/worker.py).
PASSED_VARIABLES = ("PYTHONPATH", "USETL_LOG", "USETL_TEST_HOOKS")


def spawn_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a new template process: the few variables it needs, no more."""
    env = {name: os.environ[name] for name in PASSED_VARIABLES if name in os.environ}
    env.update(extra or {})
    return env


def clear_environment() -> None:
    os.environ.clear()


def close_inherited(keep: set[int]) -> list[int]:
    """Close every descriptor but `keep` (reads /proc/self/fd, so before the root changes)."""
    closed = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                continue  # the directory's own descriptor, gone once listed
            closed.append(fd)
    return closed
