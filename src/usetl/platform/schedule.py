"""Schedules: a function invoked on a cron expression with a fixed event (OpenFaaS's
cron-connector, EventBridge's schedules).

Cron expressions are croniter's, in UTC: five fields (minute hour day-of-month month
day-of-week), or six with seconds first (`*/10 * * * * *`: every ten seconds), or a macro
(`@hourly`, `@daily`, ...). Each tick is one ordinary asynchronous invocation of the
function's live version, whose record's `trigger` names the schedule and the tick.

Once per tick, whatever the number of servers sharing the registry: every scheduler reads
the schedules that are due and takes a tick with a conditional update of the schedule's
`next_tick` in the same transaction that queues the invocation (registry.claim_tick), so
one scheduler wins each tick; the invocation's id is derived from the schedule and the
tick, so a tick cannot become two invocations either.

Missed ticks (the server was down, or stalled, past one or more ticks): the latest missed
tick fires once, as soon as a scheduler runs again, and the older ones are skipped (the
trigger's `skipped_since` says from when). A schedule never fires a burst of catch-up runs.

A tick obeys the function's limits as an async call does: where `concurrency` + `queue`
invocations of it wait already, the tick is refused (`queue_full`, the code a caller gets),
no invocation is queued, and the schedule keeps what became of its last tick
(`last_outcome`) and a count of refused ticks: a slow function is not buried under its own
schedule's backlog.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from croniter import CroniterError, croniter

from usetl.errors import UsetlError

from .registry import Registry, Schedule, Tick

log = logging.getLogger(__name__)
POLL_S = 1.0  # how often a scheduler looks at the registry when no tick is nearer
FIELDS = (5, 6)  # minutes resolution, or seconds first
MAX_LENGTH = 256


class CronError(UsetlError):
    """A cron expression that cannot be scheduled (the message says why)."""


def _cron(expression: str, start: float) -> croniter:
    if len(expression) > MAX_LENGTH:
        raise CronError(f"a cron expression is at most {MAX_LENGTH} characters")
    fields = expression.split()
    if not expression.startswith("@") and len(fields) not in FIELDS:
        raise CronError(f"cron expression {expression!r} has {len(fields)} fields; expected 5 "
                        "(minute hour day month weekday) or 6 (seconds first)")
    try:
        return croniter(expression, start, second_at_beginning=True)
    except (CroniterError, ValueError, KeyError) as e:
        raise CronError(f"cron expression {expression!r} is not valid: {e}") from e


def next_tick(expression: str, after: float) -> float:
    """The first tick strictly after `after` (Unix time); CronError if there is none."""
    try:
        return _cron(expression, math.floor(after)).get_next(float)
    except (CroniterError, ValueError) as e:  # e.g. "0 0 31 2 *" never comes
        raise CronError(f"cron expression {expression!r} never fires: {e}") from e


def latest_tick(expression: str, now: float) -> float:
    """The latest tick at or before `now`."""
    return _cron(expression, math.floor(now) + 1).get_prev(float)


class Scheduler:
    """Fires the due ticks of every schedule in the registry, each through `submit`.

    submit(schedule, tick) hears of each tick this scheduler took: it runs the invocation
    queued for it, or notes why it was refused. clock gives the current Unix time (a test
    drives it; the loop also wakes on wake()).
    """

    def __init__(self, registry: Registry, submit: Callable[[Schedule, Tick], None],
                 clock: Callable[[], float] = time.time, poll_s: float = POLL_S):
        self.registry = registry
        self.submit = submit
        self.clock = clock
        self.poll_s = poll_s
        self.woken = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="usetl-scheduler", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def wake(self) -> None:
        """Look at the schedules now (one was added, or the clock moved)."""
        self.woken.set()

    def close(self) -> None:
        self.stopping.set()
        self.woken.set()
        if self.thread.is_alive():
            self.thread.join()

    def run_due(self) -> list[Tick]:
        """Fire each schedule's due tick that this scheduler wins; those ticks."""
        now = self.clock()
        fired = []
        for schedule in self.registry.due_schedules(now):
            tick = self._fire(schedule, now)
            if tick is not None:
                self.submit(schedule, tick)
                fired.append(tick)
        return fired

    def _fire(self, schedule: Schedule, now: float) -> Tick | None:
        tick = latest_tick(schedule.cron, now)
        trigger = {"kind": "schedule", "schedule": schedule.id, "cron": schedule.cron,
                   "tick": tick,
                   "skipped_since": schedule.next_tick if tick > schedule.next_tick else None}
        return self.registry.claim_tick(schedule, tick, next_tick(schedule.cron, now), trigger)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            self.woken.clear()  # before the round: a wake() during it brings another
            wait = self.poll_s
            try:
                self.run_due()
                upcoming = self.registry.next_tick()
                if upcoming is not None:
                    wait = min(wait, max(0.0, upcoming - self.clock()))
            except Exception:  # noqa: BLE001 - a failed round (a busy database) is retried
                log.exception("the scheduler's round failed")
            self.woken.wait(wait)
