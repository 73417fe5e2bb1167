"""A shell's warm-up is cut into runs of pages, so that a claim waits for one run at most."""

from usetl.hyperfork.worker import _page_runs
from usetl.vm.memory import PAGE_SIZE

P = PAGE_SIZE


def test_runs_hold_every_page_once_and_at_most_the_run_size():
    spans = [(0, 5 * P), (10 * P, 11 * P), (20 * P, 27 * P)]
    runs = _page_runs(spans, 4)
    assert [sum(end - start for start, end in run) // P for run in runs] == [4, 4, 4, 1]
    assert [s for run in runs for s in run] == [
        (0, 4 * P), (4 * P, 5 * P), (10 * P, 11 * P), (20 * P, 22 * P), (22 * P, 26 * P),
        (26 * P, 27 * P)]


def test_no_spans_make_no_runs():
    assert _page_runs([], 64) == []
