"""A version's files between hosts: its code bundle, module-store entries and template
snapshots as content-addressed objects (named by SHA-256) in the JetStream object store.

The deploying gateway packs and uploads them and writes the version's manifest (each
object's digest) to the usetl_bundles bucket. A worker that lacks them fetches each
object, checks its bytes against the manifest's digest (nothing fetched is trusted
without that check), and unpacks it with tarfile's "data" filter (no absolute paths,
no `..`, no devices) into a staging directory renamed into place. A sparse file (a
snapshot's guest memory) travels as its data parts only, their offsets in the member's
PAX header, and is unpacked sparse again.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import msgspec
from nats.js import api
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE, OBJ_STREAM_TEMPLATE

from usetl.errors import UsetlError
from usetl.vm.memory import data_ranges

from .bus import OBJECTS, Bus


class BundleError(UsetlError):
    """A version's files could not be fetched, or failed their digest check."""


log = logging.getLogger(__name__)
FETCH_TIMEOUT_S = 120.0  # one object, however large, or the fetch is refused
EXTENTS = "usetl.extents"  # PAX header of a sparse member: [[offset, length], ...]
SPARSE_SIZE = "usetl.size"
CHUNK_BYTES = 1 << 20  # an object's chunks (nats-py's default, 128 KiB, is 8x the messages)
FETCH_BATCH = 16  # chunks per pull request: within a subscription's 64 MiB of pending bytes
OBJECTS_STREAM = OBJ_STREAM_TEMPLATE.format(bucket=OBJECTS)


class Manifest(msgspec.Struct, frozen=True):
    code: str  # digest of the code bundle
    modules: dict[str, str]  # module-store entry (directory name) -> digest


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def pack(directory: Path) -> bytes:
    """A tar of the directory, the same bytes for the same files (sorted, no times or
    owners), so that a digest names the content."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(directory.rglob("*")):
            info = tar.gettarinfo(str(path), str(path.relative_to(directory)))
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path.is_file() and not path.is_symlink():
                _add_file(tar, info, path)
            else:
                tar.addfile(info)
    return out.getvalue()


def _add_file(tar: tarfile.TarFile, info: tarfile.TarInfo, path: Path) -> None:
    with open(path, "rb") as f:
        extents = data_ranges(f.fileno(), info.size)
        if sum(length for _, length in extents) == info.size:
            f.seek(0)  # data_ranges moved the offset
            tar.addfile(info, f)
            return
        data = b"".join(os.pread(f.fileno(), length, off) for off, length in extents)
    info.pax_headers = {EXTENTS: json.dumps(extents), SPARSE_SIZE: str(info.size)}
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _extract(data: bytes, staging: Path) -> None:
    """Every member of the tar through the "data" filter; sparse ones written back as
    sparse files, straight from `data` (a snapshot's tens of MiB not copied again)."""
    view = memoryview(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            member = tarfile.data_filter(member, str(staging))
            if EXTENTS not in member.pax_headers:
                tar.extract(member, staging, filter="fully_trusted")  # filtered just above
                continue
            size = int(member.pax_headers[SPARSE_SIZE])
            extents = json.loads(member.pax_headers[EXTENTS])
            if not (all(0 <= off and 0 <= length and off + length <= size
                        for off, length in extents)
                    and sum(length for _, length in extents) == member.size):
                raise tarfile.TarError(f"{member.name}: data parts outside the file")
            _write_sparse(staging / member.name, member.mode, size, extents,
                          view[member.offset_data:member.offset_data + member.size])


def _write_sparse(path: Path, mode: int, size: int, extents: list, parts: memoryview) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size)
        at = 0
        for off, length in extents:
            os.pwrite(fd, parts[at:at + length], off)
            at += length
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _object_name(digest: str) -> str:
    return digest.replace(":", "_")


async def upload(bus: Bus, data: bytes) -> str:
    """Store the bytes under their digest (once: a digest already there is the same bytes)."""
    digest = digest_of(data)
    name = _object_name(digest)
    try:
        await bus.objects.get_info(name)
    except Exception:  # noqa: BLE001 - any miss (not found, deleted) means upload
        chunk = min(CHUNK_BYTES, bus.nc.max_payload)  # a chunk is one message
        await bus.objects.put(name, data, api.ObjectMeta(
            name=name, options=api.ObjectMetaOptions(max_chunk_size=chunk)))
    return digest


async def delete(bus: Bus, digest: str) -> None:
    """Drop an object no one needs any more (gone already is fine)."""
    try:
        await bus.objects.delete(_object_name(digest))
    except Exception:  # noqa: BLE001 - deleted before (the same bytes shipped twice)
        log.debug("object %s already gone", digest)


async def upload_version(bus: Bus, key: str, code_dir: Path, module_dirs: list[Path]) -> Manifest:
    manifest = Manifest(
        code=await upload(bus, pack(code_dir)),
        modules={d.name: await upload(bus, pack(d)) for d in module_dirs})
    await bus.bundles.put(key, msgspec.json.encode(manifest))
    return manifest


async def manifest(bus: Bus, key: str) -> Manifest:
    try:
        entry = await bus.bundles.get(key)
    except Exception as e:  # noqa: BLE001 - a missing key is the one failure that matters
        raise BundleError(f"no manifest for {key} in the cluster ({e})") from e
    return msgspec.json.decode(entry.value, type=Manifest)


async def fetch(bus: Bus, digest: str) -> bytes:
    """The object's bytes, refused unless they hash to `digest`."""
    try:
        data = await asyncio.wait_for(_read(bus, _object_name(digest)), FETCH_TIMEOUT_S)
    except Exception as e:  # noqa: BLE001 - not there, NATS gone, chunks missing
        raise BundleError(f"cannot fetch {digest}: {e}") from e
    if digest_of(data) != digest:
        raise BundleError(f"object {digest} failed its digest check (got {digest_of(data)})")
    return data


async def _read(bus: Bus, name: str) -> bytes:
    """An object's chunks in stream order, pulled a batch at a time and joined once
    (nats-py's get() pushes them through a flow-controlled consumer and appends each to a
    bytes object: quadratic, seconds for a snapshot's tens of MiB)."""
    info = await bus.objects.get_info(name)
    chunks: list[bytes] = []
    if info.chunks:
        sub = await bus.js.pull_subscribe(
            OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=OBJECTS, obj=info.nuid),
            stream=OBJECTS_STREAM, config=api.ConsumerConfig(ack_policy=api.AckPolicy.NONE))
        try:
            while len(chunks) < info.chunks:
                chunks += [msg.data for msg in await sub.fetch(
                    min(FETCH_BATCH, info.chunks - len(chunks)), timeout=FETCH_TIMEOUT_S)]
        finally:
            await sub.unsubscribe()
    data = b"".join(chunks)  # one copy
    if len(data) != info.size:
        raise BundleError(f"{len(data)} bytes in its chunks, its record says {info.size}")
    return data


async def materialise(bus: Bus, digest: str, target: Path) -> Path:
    """`target` holding the object's files, fetched and checked if it is not there yet."""
    if target.is_dir():
        return target
    data = await fetch(bus, digest)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=target.parent))
    try:
        _extract(data, staging)
        for directory, _, _ in os.walk(staging):
            os.chmod(directory, 0o755)  # the sandboxes' unprivileged user reads it
        os.rename(staging, target)
    except (OSError, tarfile.TarError, ValueError, TypeError) as e:  # a malformed object
        shutil.rmtree(staging, ignore_errors=True)
        if not target.is_dir():  # else another invocation unpacked it meanwhile
            raise BundleError(f"cannot unpack {digest}: {e}") from e
    return target
