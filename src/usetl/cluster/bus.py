"""NATS JetStream, as a gateway and a worker use it: one connection on its own event loop.

What lives where:
- invocations: the work-queue stream USETL_INVOCATIONS, subject usetl.invoke.TENANT.NAME,
  one durable pull consumer per function (all workers pull from it: a message goes to one);
  message ids (Nats-Msg-Id: the invocation id) make a publish idempotent; the stream
  republishes each message's headers alone on usetl.ring.TENANT.NAME (a worker whose
  pull requests all wait on other functions learns there that one waits for it);
- dead letters: the stream USETL_DEAD, subject usetl.dead.TENANT.NAME;
- callbacks due: the work-queue stream USETL_CALLBACKS, subject usetl.callback.TENANT, one
  durable pull consumer that every gateway pulls from (cluster/callbacks.py);
- membership: the KV bucket usetl_hosts (a key per worker, gone after the TTL unless
  renewed) and usetl_drain (hosts told to take nothing new);
- bundles: the KV bucket usetl_bundles (a version's manifest: the digests of its code and
  module-store entries), usetl_templates (its shipped snapshot's digest and compatibility
  key) and the object store usetl_objects (objects named by digest).

Platform code runs in threads; `Bus.run` hands a coroutine to the loop and waits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from typing import Any

import nats
import uvloop
from nats.js import api
from nats.js.errors import BucketNotFoundError, NotFoundError

from usetl.errors import UsetlError
from usetl.platform.database import redact_url

from .config import ClusterConfig

log = logging.getLogger(__name__)
STREAM, DEAD_STREAM, CALLBACK_STREAM = "USETL_INVOCATIONS", "USETL_DEAD", "USETL_CALLBACKS"
CALLBACK_DURABLE = "callbacks"
HOSTS, DRAIN, BUNDLES, OBJECTS = "usetl_hosts", "usetl_drain", "usetl_bundles", "usetl_objects"
TEMPLATES = "usetl_templates"
BUILD_SUBJECT = "usetl.build"  # a gateway asks any worker to build a version's template
PING_SUBJECT = "usetl.ping"  # any worker answers with its name (a liveness probe)
RING_SUBJECTS = "usetl.ring.>"  # an invocation's headers, republished as it is stored
REPLY_HEADER = "Usetl-Reply"  # where a sync invocation's result goes
ACK_WAIT_S = 4.0  # default: a worker that stops saying "in progress" this long is dead
PULL_WAIT_S = 1.0  # default: a pull request waits this long at the server for a message
MAX_RUNS = 3  # default runs of one invocation; the next delivery goes to the dead letters
DEDUP_WINDOW_S = 600.0  # a message id published again within this is dropped
# The GIL's switch interval in a gateway or worker process: a loop woken by a message waits
# at most this for the GIL behind a platform thread busy in Python (a rollback's memory
# measurement, a record's write), where CPython's default 5 ms is several round trips.
SWITCH_INTERVAL_S = 0.0005
CONNECT_TIMEOUT_S = 30.0


class BusError(UsetlError):
    """NATS could not be reached or refused an operation."""


def invoke_subject(tenant_id: int, name: str) -> str:
    return f"usetl.invoke.{tenant_id}.{name}"


def ring_durable(subject: str) -> str:
    """The consumer of the function a ring (usetl.ring.TENANT.NAME) is for."""
    _, _, tenant_id, name = subject.split(".", 3)
    return consumer_name(int(tenant_id), name)


def dead_subject(tenant_id: int, name: str) -> str:
    return f"usetl.dead.{tenant_id}.{name}"


def callback_subject(tenant_id: int) -> str:
    return f"usetl.callback.{tenant_id}"


def consumer_name(tenant_id: int, name: str) -> str:
    return f"fn_{tenant_id}_{name}"


async def keep_in_progress(msg, ack_wait_s: float) -> None:
    """Tell JetStream a message is still being worked on, well within each ack wait."""
    while True:
        await asyncio.sleep(ack_wait_s / 4)
        try:
            await msg.in_progress()
        except Exception:  # noqa: BLE001 - NATS restarting: the next one may get through
            log.debug("in-progress signal failed", exc_info=True)


class Bus:
    """One NATS connection with JetStream, its streams and buckets made if missing."""

    def __init__(self, config: ClusterConfig, name: str):
        self.config = config
        self.loop = uvloop.new_event_loop()  # as uvicorn's (a gateway's API runs on it)
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"nats-{name}",
                                       daemon=True)
        self.thread.start()
        try:
            self.run(self._connect(name), CONNECT_TIMEOUT_S)
        except Exception as e:
            self._stop_loop()
            raise BusError(f"cannot reach NATS at {redact_url(config.nats_url)}: {e}") from e

    def run(self, coro: Coroutine, timeout: float | None = None) -> Any:
        """Run a coroutine on the bus's loop and wait for its result (from a thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def spawn(self, coro: Coroutine) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def _connect(self, name: str) -> None:
        self.nc = await nats.connect(name=name, **self.config.nats_options())
        self.js = self.nc.jetstream()
        await self._stream(STREAM, ["usetl.invoke.>"], api.RetentionPolicy.WORK_QUEUE,
                           api.RePublish(src="usetl.invoke.>", dest=RING_SUBJECTS,
                                         headers_only=True))
        await self._stream(DEAD_STREAM, ["usetl.dead.>"], api.RetentionPolicy.LIMITS)
        await self._stream(CALLBACK_STREAM, ["usetl.callback.>"],
                           api.RetentionPolicy.WORK_QUEUE)
        # Whoever makes the bucket first sets its TTL; heartbeats follow the bucket's own.
        self.hosts = await self._bucket(HOSTS, ttl=self.config.heartbeat_ttl_s)
        self.heartbeat_ttl_s = (await self.hosts.status()).ttl or self.config.heartbeat_ttl_s
        self.drain = await self._bucket(DRAIN)
        self.bundles = await self._bucket(BUNDLES)
        self.templates = await self._bucket(TEMPLATES)
        try:
            self.objects = await self.js.object_store(OBJECTS)
        except (BucketNotFoundError, NotFoundError):
            self.objects = await self.js.create_object_store(OBJECTS)

    async def _stream(self, name: str, subjects: list[str], retention: api.RetentionPolicy,
                      republish: api.RePublish | None = None) -> None:
        """The stream, made if missing; one an earlier usetl made without its republish
        gains it (its messages stay)."""
        try:
            config = (await self.js.stream_info(name)).config
        except NotFoundError:
            await self.js.add_stream(api.StreamConfig(
                name=name, subjects=subjects, retention=retention,
                storage=api.StorageType.FILE, duplicate_window=DEDUP_WINDOW_S,
                republish=republish))
            return
        if config.republish != republish:
            config.republish = republish
            await self.js.update_stream(config)

    async def _bucket(self, name: str, ttl: float | None = None):
        try:
            return await self.js.key_value(name)
        except (BucketNotFoundError, NotFoundError):
            return await self.js.create_key_value(bucket=name, ttl=ttl, history=1)

    async def ensure_consumer(self, tenant_id: int, name: str, max_runs: int = MAX_RUNS,
                              ack_wait_s: float = ACK_WAIT_S) -> None:
        """The function's durable pull consumer (idempotent: the first deploy's settings
        stay). It delivers a message at most max_runs + 1 times: the last one only to
        dead-letter it."""
        await self._consumer(STREAM, api.ConsumerConfig(
            durable_name=consumer_name(tenant_id, name),
            filter_subject=invoke_subject(tenant_id, name), ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait_s, max_deliver=max_runs + 1, max_ack_pending=-1))

    async def ensure_callback_consumer(self, ack_wait_s: float = ACK_WAIT_S) -> None:
        """The gateways' one consumer of due callbacks: redelivered without end (the
        record counts the attempts), each after its back-off or a gateway's death."""
        await self._consumer(CALLBACK_STREAM, api.ConsumerConfig(
            durable_name=CALLBACK_DURABLE, ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait_s, max_deliver=-1, max_ack_pending=-1))

    async def _consumer(self, stream: str, config: api.ConsumerConfig) -> None:
        try:
            await self.js.consumer_info(stream, config.durable_name)
        except NotFoundError:
            await self.js.add_consumer(stream, config)

    async def delivery_settings(self, durable: str) -> tuple[int, float]:
        """(runs of one message the consumer allows, its ack wait in seconds)."""
        config = (await self.js.consumer_info(STREAM, durable)).config
        return config.max_deliver - 1, config.ack_wait

    async def consumers(self) -> list[str]:
        """The durable names of every function's consumer."""
        return [c.name for c in await self.js.consumers_info(STREAM)]

    def close(self) -> None:
        if self.loop.is_running():
            try:
                self.run(self.nc.close(), 10)
            except Exception:  # noqa: BLE001 - closing: the connection may already be gone
                pass
        self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

