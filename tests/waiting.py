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


def live_children(pid: int) -> set[int]:
    """The child processes of `pid` that have not ended (to wait on a process being made)."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        kids = {int(p) for p in f.read().split()}
    return {p for p in kids if not ended(p)}


SYS_RECVMSG = 47


def waits_for_a_message(pid: int) -> bool:
    """Is process `pid` blocked in recvmsg (a shell waiting for the Fork that claims it, once
    it has made itself: /proc/PID/syscall names the call a blocked process is in)?"""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            return f.read().split()[0] == str(SYS_RECVMSG)
    except (FileNotFoundError, IndexError):
        return False


def ended(pid: int) -> bool:
    """Has process `pid` exited (gone, or a zombie)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in "ZX"
    except FileNotFoundError:
        return True
