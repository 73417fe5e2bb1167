"""The asynchronous runner takes turns between tenants."""

import threading

from usetl.platform.fair import FairRunner
from waiting import wait_until


def test_a_tenant_waits_for_one_turn_of_another_not_for_its_backlog():
    runner = FairRunner(1, "test-fair")
    gate, ran = threading.Event(), []
    try:
        runner.submit("a", lambda: (ran.append("a0"), gate.wait(30)))
        wait_until(lambda: ran == ["a0"], "the first item to start")
        for i in range(1, 5):
            runner.submit("a", ran.append, f"a{i}")
        runner.submit("b", ran.append, "b0")
        gate.set()
        wait_until(lambda: len(ran) == 6, "every item to run")
        assert ran == ["a0", "a1", "b0", "a2", "a3", "a4"]  # FIFO would run b0 last
    finally:
        runner.shutdown()


def test_a_failing_item_does_not_end_a_worker():
    runner = FairRunner(1, "test-fair")
    ran = []
    try:
        runner.submit("a", lambda: 1 / 0)
        runner.submit("a", ran.append, "after")
        wait_until(lambda: ran == ["after"], "the next item to run")
    finally:
        runner.shutdown()
