"""Running the platform: `serve()` starts the backend, the platform and uvicorn in one process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from usetl.image.modstore import ModuleStore
from usetl.platform.backends import choose_backend
from usetl.platform.callbacks import CallbackConfig
from usetl.platform.learning import LEARN_AFTER
from usetl.platform.pool import PoolConfig
from usetl.platform.registry import ADMIN_TOKEN_FILE, RegistryError, state_root
from usetl.platform.service import Platform

from .app import create_app

log = logging.getLogger(__name__)
ADMIN = "admin"
GRACEFUL_SHUTDOWN_S = 20.0

def ensure_admin(platform: Platform) -> str | None:
    """Create the admin tenant on first start; returns its token then (saved 0600), else None."""
    if any(t.admin for t in platform.registry.tenants()):
        return None
    try:
        _, token = platform.registry.add_tenant(ADMIN, admin=True)
    except RegistryError:  # another gateway, starting at the same time, made it
        return None
    path = platform.state_dir / ADMIN_TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    backend_name: str | None = None,
    state_dir: Path | None = None,
    module_dir: Path | None = None,
    wheelhouse: Path | None = None,
    memory_budget_mib: int = 4096,
    idle_s: float = 60.0,
    callbacks: CallbackConfig | None = None,
    learn_after: int = LEARN_AFTER,
    announce: Callable[[str], None] = print,
    merge_pages: bool = False,
    huge_heap: bool = False,
) -> None:
    state = state_root(state_dir)
    modules = ModuleStore(module_dir, wheelhouse=wheelhouse)
    backend = choose_backend(backend_name, hide=[state, modules.root.parent],
                             merge_pages=merge_pages, huge_heap=huge_heap)
    platform = Platform(
        backend, state, modules,
        PoolConfig(memory_budget_bytes=memory_budget_mib << 20, idle_s=idle_s,
                   learn_after=learn_after),
        callbacks=callbacks,
    )
    token = ensure_admin(platform)
    announce(f"usetl: backend {backend.name}: {backend.isolation}")
    if backend.name != "kvm":
        announce("usetl: WARNING: isolation is weaker than with KVM (the process backend)")
    announce(f"usetl: state in {state}, modules in {modules.root}")
    if platform.recovered["requeued"] or platform.recovered["interrupted"]:
        announce(f"usetl: recovered async invocations: {platform.recovered['requeued']} "
                 f"re-queued, {platform.recovered['interrupted']} interrupted")
    if token is not None:
        announce(f"usetl: admin token (saved in {state / ADMIN_TOKEN_FILE}): {token}")
    else:
        announce(f"usetl: admin token in {state / ADMIN_TOKEN_FILE}")
    announce(f"usetl: serving on http://{host}:{port} (API docs at /docs)")
    run_api(platform, host, port)


def server_config(app: Any, host: str, port: int) -> uvicorn.Config:
    """The server stack the API runs on (the benchmark's ceiling runs on the same)."""
    # A stop waits this long for invocations in flight, then cuts them off. Nothing reads a
    # client's address: no X-Forwarded-* middleware on every request.
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                          proxy_headers=False, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)


def run_api(platform: Platform, host: str, port: int,
            loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Serve the platform's HTTP API until stopped (SIGINT, SIGTERM), then close it; on
    `loop`, running in another thread (a gateway's NATS loop, so that a sync call's
    request and its messages are served on one thread), instead of a new one here."""
    app = create_app(platform, close_on_shutdown=loop is None)
    server = uvicorn.Server(server_config(app, host, port))
    try:
        if loop is None:
            server.run()
        else:  # uvicorn listens for signals only on the main thread (and re-raises none)
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, server.handle_exit)
            asyncio.run_coroutine_threadsafe(server.serve(), loop).result()
    finally:
        platform.close()
