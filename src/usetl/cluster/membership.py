"""Which workers are up: each puts its state in the usetl_hosts bucket BEATS_PER_TTL
times per the bucket's TTL, and JetStream drops a key not renewed within it, so a
worker that stops (crashed, cut off) leaves `usetl host ls` on its own. A host named
in the usetl_drain bucket finishes what it runs and pulls nothing new; it watches its
key there and beats at once when told (and again once its last pull request is over),
so a drain shows in `host ls` without waiting for the next beat.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from typing import TYPE_CHECKING

from nats.js.errors import KeyNotFoundError, NoKeysError

from usetl.errors import UsetlError

from .bus import Bus

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger(__name__)
BEATS_PER_TTL = 5  # a host leaves only after this many beats in a row are lost or late
HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class MembershipError(UsetlError):
    """A host name that cannot be a member (or is not one)."""


def check_host_name(name: str) -> str:
    if not HOST_NAME.match(name):
        raise MembershipError(f"host name {name!r} must be 1-63 of A-Z, a-z, 0-9, '.', '-', '_'")
    return name


def free_memory_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def pool_state(worker: Worker) -> dict:
    """What a heartbeat says of the host's memory and templates (read in a thread: the
    pool's lock may be held a while, a template being built or evicted)."""
    warm, generations = worker.platform.template_state()
    return {"free_memory_bytes": free_memory_bytes(), "warm": warm,
            "templates": dict(worker.platform.origins),  # key -> fetched, built or rebuilt
            "generations": generations}


def host_state(worker: Worker, pool: dict) -> dict:
    return {
        "host": worker.name, "slots": worker.slots, "running": worker.running,
        "fetching": worker.fetching, **pool, "draining": worker.draining,
        "heartbeat": time.time(),
    }


async def draining(bus: Bus, name: str) -> bool:
    try:
        await bus.drain.get(name)
    except KeyNotFoundError:
        return False
    return True


async def heartbeat(worker: Worker) -> None:
    """For as long as the worker runs: one that stopped at a NATS restart would leave its
    host silently out of `host ls` and deaf to drains. A beat never waits for the pool's
    part of the state (it sends the last one read): waiting, a beat could come later than
    the TTL on a busy host (its pool's lock held), which then left `host ls` while up.
    `worker.beat_now` (set by a change of its drain key or of its pull requests) brings
    the next beat forward; the beats themselves read the drain key, should a watch miss."""
    pool = {"free_memory_bytes": free_memory_bytes(), "warm": [], "templates": {},
            "generations": {}}
    reading: asyncio.Future | None = None
    watching = asyncio.ensure_future(_watch_drain(worker))
    try:
        while True:
            worker.beat_now.clear()
            try:
                if reading is None or reading.done():
                    if reading is not None and reading.exception() is None:
                        pool = reading.result()
                    reading = asyncio.ensure_future(asyncio.to_thread(pool_state, worker))
                worker.draining = await draining(worker.bus, worker.name)
                await worker.bus.hosts.put(worker.name,
                                           json.dumps(host_state(worker, pool)).encode())
            except Exception:  # noqa: BLE001 - NATS restarting: the next beat gets through
                log.debug("heartbeat failed", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.beat_now.wait(),
                                       worker.bus.heartbeat_ttl_s / BEATS_PER_TTL)
    finally:
        watching.cancel()


async def _watch_drain(worker: Worker) -> None:
    """Beat at once when this host's drain key is written or deleted."""
    while True:
        try:
            async for _ in await worker.bus.drain.watch(worker.name):
                worker.beat_now.set()
        except Exception:  # noqa: BLE001 - NATS restarting: the beats read the key meanwhile
            log.debug("drain watch failed", exc_info=True)
        await asyncio.sleep(worker.bus.heartbeat_ttl_s / BEATS_PER_TTL)


async def hosts(bus: Bus) -> list[dict]:
    """Every worker whose heartbeat is within the TTL, by name."""
    try:
        names = await bus.hosts.keys()
    except NoKeysError:
        return []
    found = []
    for name in sorted(names):
        try:
            found.append(json.loads((await bus.hosts.get(name)).value))
        except KeyNotFoundError:
            continue  # its TTL ran out between the listing and the read
    return found


async def drain(bus: Bus, name: str, undo: bool = False) -> None:
    check_host_name(name)
    if undo:
        await bus.drain.delete(name)
    else:
        await bus.drain.put(name, b"drain")
