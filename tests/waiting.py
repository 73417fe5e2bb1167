"""Waiting on state instead of sleeping for a guessed time (imported by the tests)."""

import time
from collections.abc import Callable

POLL_S = 0.02


def wait_until(condition: Callable[[], object], what: str, timeout: float = 120.0):
    """Poll until condition() is true and return its value; the timeout only guards a hang."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"still waiting, after {timeout:g} s, for {what}"
        time.sleep(POLL_S)
    return value
