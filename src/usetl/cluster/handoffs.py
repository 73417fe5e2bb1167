"""Pipeline hand-offs between hosts.

The files a stage kept stay in the memory file of the worker that ran it (held here, by
id, until the pipeline releases them or HOLD_S passes); the gateway running the pipeline
carries only their reference (HandOffRef) to the next stage's invocation. A next stage
that lands on the same host maps that memory file as it would on one host: nothing is
copied. One on another host asks the holder (usetl.handoff.fetch.HOST), which puts the
files' bytes in the object store under their digest; the fetcher checks the digest,
copies them into a memory file of its own (counted in the stage's copied_bytes); the
holder deletes the object when the hand-off is released.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import uuid

from usetl.libos.handoff import HandOff, HandOffError, new_memory_file

from . import bundles
from .bus import Bus
from .messages import HandOffRef

log = logging.getLogger(__name__)
HOLD_S = 3600.0  # a hand-off no pipeline released (its gateway died) is dropped after this
FETCH_TIMEOUT_S = 120.0  # the holder packs and stores up to a region's worth of files


def fetch_subject(host: str) -> str:
    return f"usetl.handoff.fetch.{host}"


def release_subject(host: str) -> str:
    return f"usetl.handoff.release.{host}"


class HeldFiles:
    """A stage's kept files as a gateway's pipeline holds them: the reference, released
    (the holder closes them) by close()."""

    def __init__(self, bus: Bus, ref: HandOffRef):
        self.bus = bus
        self.ref: HandOffRef | None = ref
        self.files = ref.files

    def close(self) -> None:
        ref, self.ref = self.ref, None
        if ref is None:
            return
        try:
            self.bus.run(self.bus.nc.publish(release_subject(ref.host), ref.id.encode()), 10)
        except Exception:  # noqa: BLE001 - NATS away: the holder drops it after HOLD_S
            log.warning("could not release hand-off %s on %s", ref.id, ref.host, exc_info=True)


class HandOffHolder:
    """A worker's side: the hand-offs it holds, served to the other hosts' stages."""

    def __init__(self, bus: Bus, host: str):
        self.bus = bus
        self.host = host
        self.held: dict[str, HandOff] = {}
        self.shipped: dict[str, str] = {}  # hand-off id -> its object's digest
        self.lock = threading.Lock()

    async def subscribe(self) -> None:
        await self.bus.nc.subscribe(fetch_subject(self.host), cb=self._on_fetch)
        await self.bus.nc.subscribe(release_subject(self.host), cb=self._on_release)

    def hold(self, kept: HandOff) -> HandOffRef:
        """Keep a stage's files here until released; their reference."""
        ref = HandOffRef(self.host, uuid.uuid4().hex, kept.files)
        with self.lock:
            self.held[ref.id] = kept
        self.bus.loop.call_soon_threadsafe(self.bus.loop.call_later, HOLD_S, self.release,
                                           ref.id)
        return ref

    def release(self, handoff_id: str) -> None:
        with self.lock:
            kept = self.held.pop(handoff_id, None)
            digest = self.shipped.pop(handoff_id, None)
        if kept is not None:
            kept.close()
        if digest is not None:
            self.bus.spawn(bundles.delete(self.bus, digest))

    def take(self, ref: HandOffRef) -> tuple[HandOff, bool]:
        """The files for a stage: held here (mapped as they are), or fetched from their
        holder; and whether they are the caller's to close."""
        if ref.host == self.host:
            with self.lock:
                held = self.held.get(ref.id)
            if held is None:
                raise HandOffError(f"the previous stage's files ({ref.id}) were released")
            return held, False
        return self._fetch(ref), True

    def _fetch(self, ref: HandOffRef) -> HandOff:
        try:
            reply = self.bus.run(self.bus.nc.request(fetch_subject(ref.host), ref.id.encode(),
                                                     timeout=FETCH_TIMEOUT_S))
        except Exception as e:  # noqa: BLE001 - no holder (it died), or NATS away
            raise HandOffError(f"host {ref.host} did not hand over the previous stage's "
                               f"files: {e}") from e
        answer = json.loads(reply.data)
        if "error" in answer:
            raise HandOffError(f"host {ref.host}: {answer['error']}")
        try:
            data = self.bus.run(bundles.fetch(self.bus, answer["digest"]))
        except bundles.BundleError as e:
            raise HandOffError(str(e)) from e
        fd = new_memory_file(ref.files.size)
        try:
            os.pwrite(fd, data, 0)
        except OSError as e:
            os.close(fd)
            raise HandOffError(f"cannot copy the previous stage's files: {e.strerror}") from e
        handoff = HandOff.sealed(fd, ref.files)
        handoff.copied_bytes = len(data)
        return handoff

    async def _on_fetch(self, msg) -> None:
        handoff_id = msg.data.decode(errors="replace")
        with self.lock:
            held = self.held.get(handoff_id)
        if held is None:
            await msg.respond(json.dumps({"error": "no such hand-off here"}).encode())
            return
        try:
            end = max((f.offset + f.size for f in held.files.files), default=0)
            data = await asyncio.to_thread(os.pread, held.fd, end, 0)  # not the free rest
            digest = await bundles.upload(self.bus, data)
        except Exception as e:  # noqa: BLE001 - released meanwhile (fd closed), or NATS away
            await msg.respond(json.dumps({"error": f"{type(e).__name__}: {e}"}).encode())
            return
        with self.lock:
            self.shipped[handoff_id] = digest
        await msg.respond(json.dumps({"digest": digest}).encode())

    async def _on_release(self, msg) -> None:
        await asyncio.to_thread(self.release, msg.data.decode(errors="replace"))

    def close(self) -> None:
        with self.lock:
            held, self.held = list(self.held.values()), {}
        for kept in held:
            kept.close()

