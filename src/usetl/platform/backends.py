"""Choosing the backend: KVM where /dev/kvm is usable, processes only when asked or when it is not.
"""

from __future__ import annotations

import os
from pathlib import Path

from .backend import Backend, BackendError


def kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def choose_backend(name: str | None, hide: list[Path], merge_pages: bool = False,
                   huge_heap: bool = False) -> Backend:
    """The backend `name` ("kvm" or "process"); by default kvm if /dev/kvm is usable.

    The process backend is never chosen silently where /dev/kvm works: its
    isolation is weaker, so it takes an explicit choice there. merge_pages and huge_heap
    are the KVM backend's (UsfConfig's).
    """
    if name is None:
        name = "kvm" if kvm_usable() else "process"
    if name == "process":
        if merge_pages or huge_heap:
            raise BackendError("merging idle clones' pages and huge heaps are for the KVM "
                               "backend")
        from .process_backend import ProcessBackend

        return ProcessBackend(hide=hide)
    if name == "kvm":
        if not kvm_usable():
            raise BackendError("/dev/kvm is missing or not accessible; use --backend process")
        try:
            from .kvm_backend import KvmBackend
        except ImportError as e:
            raise BackendError(
                f"the KVM backend is not available in this build ({e}); "
                "use --backend process (weaker isolation)"
            ) from e
        return KvmBackend(merge_pages=merge_pages, huge_heap=huge_heap)
    raise BackendError(f"unknown backend {name!r} (kvm or process)")
