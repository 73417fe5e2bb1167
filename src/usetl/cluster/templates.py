"""Function templates between hosts: a worker that builds one saves its snapshot (the
existing snapshot format), ships it as a content-addressed object and records it under
the version's key and the template's generation in the usetl_templates bucket with the
builder's compatibility key.

A worker that lacks the template restores that snapshot when its own compatibility key
is the same and the object passes its digest check (and the snapshot its own checksums);
otherwise, or when anything about it is refused, it builds the template locally from the
code bundle, and ships its own.

Learned generations (platform/learning.py) travel the same way. The host that learned
one ships it and claims its number in the bucket (a create: the first host wins) before
the registry names it, so a host that reads the registry's generation finds it shipped:
a host without the template fetches that generation, and one serving an older one (or
another host's losing claim) fetches it and swaps it in (worker.py's discovery), rather
than serving the old one or learning it again. With another compatibility key it builds
that generation here, with the learned modules the registry names.

The compatibility key covers what a restored snapshot depends on: the usetl version, the
snapshot format version, the CPython build (its version and its executable's bytes), the
CPU features the XSAVE layout and glibc's choice of code depend on, and the kernel.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from nats.js.errors import KeyWrongLastSequenceError

import usetl
from usetl.hyperfork.snapshot import VERSION as SNAPSHOT_VERSION
from usetl.platform.backend import BackendError, FunctionSpec, FunctionTemplate

from . import bundles

if TYPE_CHECKING:
    from .worker import WorkerPlatform

log = logging.getLogger(__name__)
FETCHED, BUILT, REBUILT = "fetched", "built", "rebuilt"  # how a host got a template
# CPU flags that change the XSAVE area's layout or the code glibc and CPython pick.
XSAVE_FLAGS = ("fpu", "sse", "sse2", "ssse3", "sse4_1", "sse4_2", "avx", "avx2", "fma",
               "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "xsave", "xsaveopt",
               "xsavec", "xsaves", "pku", "ospke", "amx_tile", "amx_bf16", "amx_int8", "mpx")


class TemplateManifest(msgspec.Struct, frozen=True):
    compat: str  # the builder's compatibility key
    snapshot: str | None  # digest of the packed snapshot directory (None: build it, the
    # builder's backend has no snapshots)
    host: str  # who built it
    generation: int = 1
    learned: list[str] = msgspec.field(default_factory=list)  # the generation's modules


def manifest_key(key: str, generation: int) -> str:
    return f"{key}.g{generation}"


def compatibility_fields() -> dict:
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":", 1)[1].split() for line in f
                      if line.startswith("flags")), [])
    return {
        "usetl": usetl.__version__, "snapshot_format": SNAPSHOT_VERSION,
        "python": sys.version, "python_executable": _file_digest(sys.executable),
        "cpu": sorted(set(flags) & set(XSAVE_FLAGS)), "kernel": os.uname().release,
        "machine": platform.machine(),
    }


@functools.cache
def compatibility_key() -> str:
    canonical = json.dumps(compatibility_fields(), sort_keys=True).encode()
    return hashlib.sha256(canonical).hexdigest()[:32]


def _file_digest(path: str) -> str:
    with open(os.path.realpath(path), "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def obtain(platform_: WorkerPlatform, spec: FunctionSpec) -> tuple[FunctionTemplate, str]:
    """The version's template on this host, and how it came: fetched, built, or rebuilt
    (a shipped one was there and was refused)."""
    bus = platform_.bus
    manifest = bus.run(_manifest(bus, spec.key, spec.generation))
    how = BUILT
    if (manifest is not None and manifest.snapshot is not None
            and manifest.compat == compatibility_key()):
        try:
            return _restore(platform_, spec, manifest), FETCHED
        except (bundles.BundleError, BackendError, NotImplementedError) as e:
            log.warning("refused the shipped template of %s generation %d (%s); building it "
                        "here", spec.key, spec.generation, e)
            how = REBUILT
    template = platform_.pool.start_template(spec)
    platform_.executor.submit(ship, platform_, spec, template)
    return template, how


async def _manifest(bus, key: str, generation: int = 1) -> TemplateManifest | None:
    try:
        entry = await bus.templates.get(manifest_key(key, generation))
        return msgspec.json.decode(entry.value, type=TemplateManifest)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None  # an unreadable one counts as none: build here, ship a good one
    except Exception:  # noqa: BLE001 - not there (or the bucket unreachable): build here
        return None


def _restore(platform_: WorkerPlatform, spec: FunctionSpec,
             manifest: TemplateManifest) -> FunctionTemplate:
    target = platform_.state_dir / "fetched" / manifest.snapshot.replace(":", "_")
    directory = platform_.bus.run(bundles.materialise(platform_.bus, manifest.snapshot, target))
    try:
        return platform_.backend.restore(spec, directory)
    except BackendError:
        shutil.rmtree(directory, ignore_errors=True)  # its checksums failed: never again
        raise


def ship(platform_: WorkerPlatform, spec: FunctionSpec, template: FunctionTemplate) -> bool:
    """Save, pack and upload the template's snapshot and record it for its generation; a
    learned one only if no host claimed that generation first. Whether it was recorded
    (best effort, off the request path: the template serves here whether or not)."""
    bus = platform_.bus
    directory = Path(tempfile.mkdtemp(prefix=".ship-", dir=platform_.state_dir))
    try:
        try:
            template.save(directory)
            digest = bus.run(bundles.upload(bus, bundles.pack(directory)))
        except NotImplementedError:
            digest = None  # a backend without snapshots (processes): every host builds
        if digest is None and spec.generation == 1:
            return False  # each host builds the first from the bundle anyway
        manifest = msgspec.json.encode(TemplateManifest(
            compatibility_key(), digest, platform_.host, spec.generation, spec.learned))
        name = manifest_key(spec.key, spec.generation)
        if spec.generation == 1:  # a good one replaces one that was refused
            bus.run(bus.templates.put(name, manifest))
        else:
            bus.run(bus.templates.create(name, manifest))
        return True
    except KeyWrongLastSequenceError:
        return False  # another host claimed this generation first
    except Exception:  # noqa: BLE001 - the template serves here whether or not it ships
        log.exception("could not ship the template of %s", spec.key)
        return False
    finally:
        shutil.rmtree(directory, ignore_errors=True)
