"""Schedules on a real registry file with real scheduler loops, driven by a test clock.

The clock is the scheduler's only view of time here, so a test moves it past a tick and
checks what fired, instead of waiting for minutes; the loops are the real ones (their own
threads, their own connections to the SQLite file), woken after each move.
"""

import threading

import pytest

from usetl.platform.registry import Registry, Schedule, Tick
from usetl.platform.schedule import CronError, Scheduler, latest_tick, next_tick
from waiting import wait_until

VERSION = dict(
    handler="fn.py:handler", requirements=[], module_dirs=[], code_dir="/c", memory_mib=128,
    timeout_s=5.0, concurrency=4, queue=30, allow=[], env={},
)
T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC, on a whole minute


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Fired:
    """What the schedulers submitted: (tenant id, invocation id), in order, and the ticks
    they refused."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items: list[tuple[int, str]] = []
        self.refused: list[Tick] = []

    def __call__(self, schedule: Schedule, tick: Tick) -> None:
        with self.lock:
            if tick.invocation is None:
                self.refused.append(tick)
            else:
                self.items.append((schedule.tenant_id, tick.invocation))


@pytest.fixture
def registry(registry_where):
    r = Registry(registry_where)
    yield r
    r.close()


@pytest.fixture
def tenant(registry):
    tenant, _ = registry.add_tenant("alice")
    registry.add_version(tenant.id, "etl", **VERSION)
    return tenant


def test_cron_ticks_in_utc_with_optional_seconds():
    assert next_tick("0 * * * *", T0) == T0 + 3600  # strictly after
    assert next_tick("0 * * * *", T0 - 0.5) == T0
    assert latest_tick("0 * * * *", T0) == T0  # at or before
    assert latest_tick("0 * * * *", T0 + 3599.9) == T0
    assert next_tick("*/10 * * * * *", T0 + 1) == T0 + 10  # six fields: seconds first
    assert next_tick("@hourly", T0) == T0 + 3600
    assert next_tick("30 8 * * *", T0) == T0 + 1800  # 08:30 UTC
    for bad, why in [("61 * * * *", "not valid"), ("* * * *", "4 fields"),
                     ("* * * * * * *", "7 fields"), ("every minute", "2 fields"),
                     ("0 0 31 2 *", "never fires"), ("", "0 fields"),
                     ("*" + " " * 300 + "* * * *", "at most 256")]:
        with pytest.raises(CronError, match=why):
            next_tick(bad, T0)


def test_a_tick_fires_on_time_once_and_missed_ticks_fire_the_latest_once(registry, tenant):
    clock, fired = Clock(T0 - 0.5), Fired()
    scheduler = Scheduler(registry, fired, clock)
    schedule = registry.add_schedule(tenant.id, "etl", "* * * * *", {"n": 1},
                                     next_tick("* * * * *", clock()))
    assert schedule.next_tick == T0
    assert scheduler.run_due() == []  # half a second early
    clock.now = T0
    [first] = [t.invocation for t in scheduler.run_due()]
    assert scheduler.run_due() == []  # the same tick, asked again: nothing
    record = registry.invocation(tenant.id, first)
    assert (record["mode"], record["status"]) == ("async", "queued")
    assert record["trigger"] == {"kind": "schedule", "schedule": schedule.id,
                                 "cron": "* * * * *", "tick": T0, "skipped_since": None}
    assert registry.queued_invocation(first).event == {"n": 1}
    clock.now = T0 + 5 * 60 + 30  # down for five ticks
    [late] = [t.invocation for t in scheduler.run_due()]
    assert registry.invocation(tenant.id, late)["trigger"]["tick"] == T0 + 300
    assert registry.invocation(tenant.id, late)["trigger"]["skipped_since"] == T0 + 60
    assert scheduler.run_due() == []
    [after] = registry.schedules(tenant.id)
    assert (after.last_tick, after.next_tick) == (T0 + 300, T0 + 360)
    assert fired.items == [(tenant.id, first), (tenant.id, late)]


def test_two_schedulers_on_one_registry_fire_each_tick_once(registry_where, registry, tenant):
    clock, fired = Clock(T0 - 1), Fired()
    other = Registry(registry_where)  # a second server's own connection
    schedule = registry.add_schedule(tenant.id, "etl", "* * * * * *", None,
                                     next_tick("* * * * * *", clock()))
    schedulers = [Scheduler(registry, fired, clock), Scheduler(other, fired, clock)]
    for s in schedulers:
        s.start()
    try:
        for second in range(1, 21):
            clock.now = T0 + second - 1
            for s in schedulers:
                s.wake()
            wait_until(lambda: registry.schedules(tenant.id)[0].last_tick == clock.now,
                       f"tick {second} to fire")
        # Both at once on the next tick, from a standing start: one wins.
        clock.now = T0 + 20
        barrier = threading.Barrier(2)
        won = []

        def race(s: Scheduler) -> None:
            barrier.wait()
            won.extend(s.run_due())

        racers = [threading.Thread(target=race, args=(s,)) for s in schedulers]
        for t in racers:
            t.start()
        for t in racers:
            t.join()
    finally:
        for s in schedulers:
            s.close()
        other.close()
    assert len(won) <= 1  # the loops may have taken it first
    ticks = [registry.invocation(tenant.id, i)["trigger"]["tick"] for _, i in fired.items]
    assert sorted(ticks) == [T0 + s for s in range(21)]  # every tick, each once
    assert {registry.invocation(tenant.id, i)["trigger"]["schedule"]
            for _, i in fired.items} == {schedule.id}


def test_a_deleted_function_takes_its_schedules_with_it(registry, tenant):
    registry.add_schedule(tenant.id, "etl", "@daily", None, T0)
    registry.delete_function(tenant.id, "etl")
    assert registry.schedules(tenant.id) == []


def test_a_tick_obeys_the_functions_queue_limit_and_the_schedule_says_why(registry, tenant):
    """concurrency 2 + queue 2: four ticks may wait, as four async calls may; the fifth is
    refused as the fifth call would be (queue_full), and the next tick after one of them
    started is queued again."""
    registry.add_version(tenant.id, "narrow", **{**VERSION, "concurrency": 2, "queue": 2})
    clock, fired = Clock(T0 - 1), Fired()
    scheduler = Scheduler(registry, fired, clock)
    schedule = registry.add_schedule(tenant.id, "narrow", "* * * * * *", None,
                                     next_tick("* * * * * *", clock()))
    for second in range(4):
        clock.now = T0 + second
        [tick] = scheduler.run_due()
        assert tick.refused is None
    assert registry.queued_count(tenant.id, "narrow") == 4
    clock.now = T0 + 4
    [refused] = scheduler.run_due()
    assert refused.invocation is None and refused.refused["code"] == "queue_full"
    assert "4 invocations waiting" in refused.refused["message"]
    assert registry.queued_count(tenant.id, "narrow") == 4  # nothing more was queued
    [after] = registry.schedules(tenant.id)
    assert after.public()["last_outcome"] == {"tick": T0 + 4, "refused": refused.refused}
    assert (after.refused_ticks, after.last_tick, after.next_tick) == (1, T0 + 4, T0 + 5)
    registry.set_running(fired.items[0][1])  # one of them starts: room for one
    clock.now = T0 + 5
    [queued] = scheduler.run_due()
    assert queued.refused is None and registry.queued_count(tenant.id, "narrow") == 4
    [after] = registry.schedules(tenant.id)
    assert after.last_outcome == {"tick": T0 + 5, "invocation": queued.invocation}
    assert after.refused_ticks == 1
    assert [t.tick for t in fired.refused] == [T0 + 4] and len(fired.items) == 5
    assert schedule.id == after.id
