"""The KVM backend: HyperFork templates and clones as the platform's templates and instances.

Per (guest memory, URL allow-list) one base template is started (CPython in a
USF, paused in its agent's wait); a function template is a clone of it that
ran the function's load request with the code and the module-store entries,
packed as archives, mounted read-only (/code, /m0, /m1, ...) and placed in its
module region, and froze again. An instance is a
clone of that, warmed before it is handed out; after an invocation it is
rolled back to the function template's exact memory (HyperFork restores the
pages it wrote), so it can be reused with nothing left from the last invocation.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path
from typing import Any

from usetl import abi
from usetl.etl.broker import Broker
from usetl.hyperfork import HyperForkError, ProtocolError, Template
from usetl.hyperfork.protocol import WarmUp
from usetl.image.modstore import PRELOAD, SYSLIBS, ModuleStoreError, packed
from usetl.invocation import GUEST_ENDED, SANDBOX_ERROR, InvocationResult, invocation_context
from usetl.libos.children import ProcessSlots
from usetl.libos.handoff import HandOff
from usetl.procmem import descendants_private_bytes, process_memory, resident_bytes
from usetl.usf import UsfConfig

from .backend import (
    WARMUP_REQUEST_ID,
    BackendError,
    FunctionLoadError,
    FunctionSpec,
    RollbackImpossible,
)

ISOLATION = (
    "kvm backend: every instance is its own KVM virtual machine (a HyperFork clone) with no "
    "guest kernel, network or disk; I/O only through the ETL API under the function's URL policy, "
    "carried out by the host's egress broker (the monitor's jail has no network)"
)
ENTRY = "/usetl_entry.py"
# A pipeline stage's clone that handed files on makes the next hand-off's memory file after
# its reply (huge pages: up to a second of CPU where memory is fragmented), then rolls back:
# that runs at this nice value, so that the later stages running now get the CPU first. Set
# on the clone's main thread by the server, back to 0 before its next request, and only
# where the server may set it back (root). Other instances' rollbacks keep nice 0: slowed,
# they would hold back the invocations waiting for them.
BACKGROUND_NICE = 10
CAN_RENICE = os.geteuid() == 0


def entry_source(spec: FunctionSpec, module_mounts: list[str]) -> str:
    """The load request's module: set the environment and sys.path, import the handler.

    System libraries the module store copied next to a package (numpy's libstdc++) are
    loaded first, so that ld.so finds them by soname when the package's extensions load.
    """
    module, func = abi.split_handler(spec.handler)
    preload = []
    for host_dir, mount in zip(spec.module_dirs, module_mounts, strict=True):
        order = Path(host_dir) / SYSLIBS / PRELOAD
        if order.is_file():
            preload += [f"{mount}/{SYSLIBS}/{name}" for name in order.read_text().split()]
    # Named by their sonames; the importer loads each soname once (a second entry's copy
    # of libstdc++ is not loaded again), as it does a wheel's bundled libraries.
    libraries = (
        "from usetl import importer\n"
        f"importer.load_libraries({[(lib, lib.rsplit('/', 1)[1]) for lib in preload]!r}, "
        "os.RTLD_GLOBAL)\n"
    ) if preload else ""
    path = ["/code", *module_mounts]
    syslibs = sorted({lib.rsplit("/", 1)[0] for lib in preload})
    return (
        "import os, sys\n"
        # One thread, as the USF has (BLAS libraries would try one per core).
        "os.environ.update(OPENBLAS_NUM_THREADS='1', OMP_NUM_THREADS='1')\n"
        f"os.environ.update({spec.env!r})\n"
        f"sys.path[:0] = {path!r}\n"
        # Child interpreters (subprocess of sys.executable, joblib's workers) find the code,
        # its requirements and their system libraries too, as the function's own does.
        f"{_prepend_env('PYTHONPATH', path)}{_prepend_env('LD_LIBRARY_PATH', syslibs)}"
        f"{libraries}"
        "os.chdir('/code')\n"
        f"from {module} import {func} as handler\n"
    )


def function_mounts(spec: FunctionSpec) -> tuple[dict[str, str], list[str]]:
    """The packed archives of a function's code and requirements by mount name (imported
    from the module region, usetl.importer), and its requirements' guest paths, in order.
    Raises ModuleStoreError if one cannot be packed."""
    mounts = {"code": str(packed(spec.code_dir))}
    for i, directory in enumerate(spec.module_dirs):
        mounts[f"m{i}"] = str(packed(directory))
    return mounts, [f"/{name}" for name in mounts if name != "code"]


def _prepend_env(name: str, dirs: list[str]) -> str:
    """Source that puts `dirs` first in the search-path variable `name` (none: nothing)."""
    if not dirs:
        return ""
    return (f"os.environ[{name!r}] = ':'.join(filter(None, [{':'.join(dirs)!r}, "
            f"os.environ.get({name!r})]))\n")


class KvmInstance:
    def __init__(self, clone: Any):
        self.clone = clone
        self.instance_id = clone.instance
        self.closed = False
        self.kept: HandOff | None = None
        self.niced = False  # its main thread runs at BACKGROUND_NICE
        self.rolling_back = False  # its last invoke() started the rollback

    def own_bytes(self) -> int | None:
        try:
            return self.clone.memory_bytes()
        except OSError:  # the clone's process is gone
            return None

    def resident_bytes(self) -> int | None:
        try:
            return resident_bytes(self.clone.pid)
        except OSError:
            return None

    def memory(self) -> dict[str, int] | None:
        try:
            return {"own": self.clone.memory_bytes(), **process_memory([self.clone.pid])}
        except OSError:  # the clone's process is gone
            return None

    def children_bytes(self) -> int:
        return 0 if self.closed else descendants_private_bytes(self.clone.pid)

    def invoke(self, event: Any, context: dict, timeout: float, files: HandOff | None = None,
               keep_files: bool = False, slots: ProcessSlots | None = None,
               rollback: bool = False) -> InvocationResult:
        self._starting()
        try:
            if files is None and not keep_files:
                result = self.clone.invoke(event, context, timeout, slots, rollback)
                self.rolling_back = rollback
            else:
                result, self.kept = self.clone.call_stage(event, context, timeout, files,
                                                          keep_files, slots)
                if keep_files:
                    self._nice(BACKGROUND_NICE)
        except HyperForkError as e:
            return self._broken(e)
        return self._served(result)

    async def invoke_async(self, event: Any, context: dict, timeout: float,
                           slots: ProcessSlots | None = None,
                           rollback: bool = False) -> InvocationResult:
        self._starting()
        try:
            result = await self.clone.invoke_async(event, context, timeout, slots, rollback)
        except HyperForkError as e:
            return self._broken(e)
        except asyncio.CancelledError:
            self.clone.kill()  # its reply will not be read: it cannot serve again
            self.close()
            raise
        return self._served(result)

    def _starting(self) -> None:
        """Before a call: a closed instance refuses it; one niced behind its last call's
        after-work runs at full priority again."""
        if self.closed:
            raise BackendError("this instance is closed")
        if self.niced:
            self._nice(0)

    def _broken(self, e: HyperForkError) -> InvocationResult:
        """A clone that broke the protocol or went away cannot serve again."""
        self.close()
        return InvocationResult.failed(SANDBOX_ERROR, str(e))

    def _served(self, result: InvocationResult) -> InvocationResult:
        if result.error is not None and result.error.type in GUEST_ENDED:
            self.close()
        return result

    def take_files(self) -> HandOff | None:
        kept, self.kept = self.kept, None
        return kept

    def _nice(self, value: int) -> None:
        if CAN_RENICE:
            try:
                os.setpriority(os.PRIO_PROCESS, self.clone.pid, value)
                self.niced = value != 0
            except OSError:  # the clone's process is gone: its next request says so
                pass

    def rollback(self) -> None:
        if self.closed:
            raise RollbackImpossible("the instance's guest ended")
        started, self.rolling_back = self.rolling_back, False
        try:
            if started:
                self.clone.rolled_back()
            else:
                self.clone.rollback()
        except HyperForkError as e:
            self.close()
            raise RollbackImpossible(f"rollback failed: {e}") from e

    async def rolled_back_async(self) -> None:
        if self.closed:
            raise RollbackImpossible("the instance's guest ended")
        try:
            await self.clone.rolled_back_async()
        except HyperForkError as e:
            self.close()
            raise RollbackImpossible(f"rollback failed: {e}") from e
        except asyncio.CancelledError:
            self.clone.kill()
            self.close()
            raise

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.clone.close()


class KvmTemplate:
    def __init__(self, template: Template):
        self.template = template
        self.warmup = template.info.warmup
        self.memory_bytes = template.memory_bytes()  # read once: the template is frozen
        self.lock = threading.Lock()  # a Template's channel carries one request at a time

    def fork(self) -> KvmInstance:
        try:
            with self.lock:
                return KvmInstance(self.template.fork(warm=True))
        except HyperForkError as e:
            raise BackendError(f"cannot clone the function's template: {e}") from e

    def save(self, directory: Path) -> None:
        with self.lock:
            self.template.save(directory)

    def close(self) -> None:
        with self.lock:
            self.template.close()


class KvmBackend:
    name = "kvm"
    isolation = ISOLATION
    # A new clone's own memory (KvmInstance.memory()["own"]) until it is measured: 8 clones
    # of a small function's template owned 8.75 MiB (median; 11.8 at most) once forked and
    # warmed, 8.94 MiB after a call and a rollback (2-core AMD host, PVM, no KSM; 1.7 MiB
    # was the bare prototype's). The pool uses the most it measured of the function's own.
    instance_bytes = 9 << 20

    def __init__(self, image: Path | None = None, merge_pages: bool = False,
                 huge_heap: bool = False):
        self.image = image
        self.merge_pages = merge_pages  # UsfConfig.merge_pages, for every template
        self.huge_heap = huge_heap  # UsfConfig.huge_heap, likewise
        # This host's egress broker: every jailed instance's network I/O, under its function's
        # policy. Started with the first template, restarted if it dies, closed with us.
        self.broker = Broker()
        self.bases: dict[tuple[int, tuple[str, ...], float], Template] = {}
        self.base_bytes: dict[tuple[int, tuple[str, ...], float], int] = {}
        self.lock = threading.Lock()

    def _base(self, spec: FunctionSpec) -> Template:
        """The base template for the spec's memory and policy (called with the lock held)."""
        key = (spec.memory_mib, tuple(spec.allow), spec.etl_timeout_s)
        base = self.bases.get(key)
        if base is None:
            config = UsfConfig(mem_mib=spec.memory_mib, allow=spec.allow,
                               etl_timeout=spec.etl_timeout_s, merge_pages=self.merge_pages,
                               huge_heap=self.huge_heap)
            try:
                base = Template.start(self.image, config=config, broker=self.broker)
            except HyperForkError as e:
                raise BackendError(f"cannot start a USF: {e}") from e
            self.bases[key] = base
            self.base_bytes[key] = base.memory_bytes()  # frozen: read once
        return base

    def overhead_bytes(self) -> int:
        """The base USFs (one per memory size and allow-list), which function templates share."""
        # Not under self.lock, which a template's start holds for seconds; a copy is enough.
        return sum(list(self.base_bytes.values()))

    def template(self, spec: FunctionSpec) -> KvmTemplate:
        try:
            mounts, module_mounts = function_mounts(spec)
        except ModuleStoreError as e:
            raise BackendError(str(e)) from e
        request = {"kind": abi.LOAD, "source": entry_source(spec, module_mounts),
                   "filename": ENTRY, "handler": "handler", "imports": spec.learned}
        warmup = None
        if spec.warmup is not None:
            context = invocation_context(spec.memory_mib, spec.timeout_s, WARMUP_REQUEST_ID)
            warmup = WarmUp(json.loads(spec.warmup), context)
        try:
            with self.lock:
                template = self._base(spec).load_function(request, mounts=mounts, warmup=warmup)
        except HyperForkError as e:
            if e.error is None or isinstance(e, ProtocolError):
                raise BackendError(f"cannot load the function: {e}") from e
            raise FunctionLoadError(e.error) from e
        return KvmTemplate(template)

    def restore(self, spec: FunctionSpec, directory: Path) -> KvmTemplate:
        try:
            return KvmTemplate(Template.load(directory, broker=self.broker))
        except HyperForkError as e:
            raise BackendError(f"cannot restore the snapshot in {directory}: {e}") from e

    def prepare_restore(self) -> None:
        try:
            Template.prepare_load()
        except HyperForkError as e:
            raise BackendError(f"cannot start the snapshot loader: {e}") from e

    def close(self) -> None:
        with self.lock:
            bases, self.bases = list(self.bases.values()), {}
            self.base_bytes = {}
        for base in bases:
            base.close()
        self.broker.close()
