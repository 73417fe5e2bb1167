"""The guest's memory paths that imports use: CPython's arenas from the vDSO, file and
anonymous mappings (what they read, what writes to them change, what munmap leaves)."""

import pytest

from usetl.usf import UsfConfig, start_usf

pytestmark = pytest.mark.kvm

FUNCTION = """
import mmap, sys

def deep(n):
    return 0 if n == 0 else 1 + deep(n - 1)

def handler(event, context):
    if event["kind"] == "deep":
        from usetl import arenas
        return {"sum": sum(deep(event["depth"]) for _ in range(event["times"])),
                "installed": arenas.install()}
    if event["kind"] == "anon":
        first = mmap.mmap(-1, 1 << 16)
        first[:5] = b"dirty"
        first.close()  # munmap
        again = mmap.mmap(-1, 1 << 16)
        return {"zero": again[:5] == bytes(5)}
"""


@pytest.fixture(scope="module")
def usf(image):
    usf = start_usf(image, UsfConfig(trace=True))  # trace: syscalls counted by name
    try:
        r = usf.load_function("handler", source=FUNCTION, filename="/tmp/fn.py", timeout=120)
        assert r.ok, (r.error, r.stderr)
        yield usf
    finally:
        usf.close()


def call_counting(usf, event):
    """The call's value and its syscalls by name."""
    stats = usf.kernel.stats
    before = dict(stats.by_name)
    r = usf.call(event, timeout=60)
    assert r.ok, (r.error, r.stderr)
    return r.value, {n: c - before.get(n, 0) for n, c in stats.by_name.items()
                     if c != before.get(n, 0)}


def test_frame_stack_chunks_are_reused_without_mmap_or_munmap(usf):
    # Each call goes a few chunks (16 KiB) deep and returns: with munmap and mmap that
    # is two exits per chunk per call; from the vDSO's free lists, none once warm.
    call_counting(usf, {"kind": "deep", "depth": 400, "times": 1})
    times = 100
    value, calls = call_counting(usf, {"kind": "deep", "depth": 400, "times": times})
    assert value == {"sum": 400 * times, "installed": True}
    assert calls.get("mmap", 0) + calls.get("munmap", 0) < times // 10, calls


def test_anonymous_memory_reads_zero_again_after_munmap(usf):
    value, _ = call_counting(usf, {"kind": "anon"})
    assert value == {"zero": True}
