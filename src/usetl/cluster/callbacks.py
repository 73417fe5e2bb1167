"""Callbacks in a cluster: durable, and each attempt made by one gateway.

The worker that makes an async invocation's record final publishes a CallbackDue to the
work-queue stream USETL_CALLBACKS (its message id makes a repeat, after a crash, a
duplicate) before it acknowledges the invocation. Every gateway pulls from one durable
consumer, so a message is out to one gateway at a time. That gateway makes one attempt
(platform/callbacks.py's `attempt`: the record says whether delivery is pending and due,
and counts the attempts), then acknowledges the message (delivered, or given up) or
NAKs it with the back-off as its delay: the next attempt is any gateway's, after a
restart of all of them too. A gateway that dies mid-attempt leaves the message to be
redelivered after the ack wait; a receiver may then see that attempt again, as on one
host after a crash (delivery is at least once).

The gateways' outbound policy (`usetl gateway --callback-allow`) is checked at submit
and at each attempt, as on one host; every gateway should be given the same one.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import FetchTimeoutError

from usetl.platform.callbacks import Callbacks

from .bus import CALLBACK_DURABLE, CALLBACK_STREAM, PULL_WAIT_S, Bus, keep_in_progress
from .messages import CallbackDue, decode

log = logging.getLogger(__name__)
RETRY_S = 0.5  # after NATS failed us (restarting): the next try


async def send_callbacks(bus: Bus, callbacks: Callbacks, ack_wait_s: float) -> None:
    """For as long as the gateway runs: pull due callbacks, one attempt each, at most the
    callbacks' `senders` at once (an outage of NATS is waited out, never fatal)."""
    free = asyncio.Semaphore(callbacks.config.senders)
    while True:
        try:
            await bus.ensure_callback_consumer(ack_wait_s)
            sub = await bus.js.pull_subscribe_bind(CALLBACK_DURABLE, CALLBACK_STREAM)
            while True:
                await free.acquire()
                msgs = []
                try:
                    msgs = await sub.fetch(1, timeout=PULL_WAIT_S)
                except (FetchTimeoutError, NatsTimeout):
                    pass
                finally:
                    if not msgs:
                        free.release()
                for msg in msgs:
                    asyncio.ensure_future(_attempt(msg, callbacks, ack_wait_s, free))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - NATS restarting: bind and pull again
            log.debug("pulling callbacks", exc_info=True)
            await asyncio.sleep(RETRY_S)


async def _attempt(msg, callbacks: Callbacks, ack_wait_s: float,
                   free: asyncio.Semaphore) -> None:
    keepalive = asyncio.ensure_future(keep_in_progress(msg, ack_wait_s))
    try:
        try:
            due = decode(msg.data, CallbackDue)
        except (msgspec.ValidationError, msgspec.DecodeError):
            log.warning("refused a malformed callback message")
            await msg.term()
            return
        delay = await asyncio.get_running_loop().run_in_executor(
            callbacks.senders, callbacks.attempt, due.id, due.tenant_id)
        if delay is None:
            await msg.ack()
        else:
            await msg.nak(delay=delay)
    except Exception:  # noqa: BLE001 - the message is redelivered after the ack wait
        log.exception("callback attempt")
    finally:
        keepalive.cancel()
        free.release()
