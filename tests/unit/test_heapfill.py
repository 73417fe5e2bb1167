"""heapfill: a template's free pool blocks taken before it forks."""

from usetl.hyperfork import heapfill


def test_filling_takes_the_free_blocks_of_partly_used_pools():
    held = [bytes(40 + i % 200) for i in range(20000)]
    del held[::2]  # half their blocks freed, all over their pools
    before = sum(free for _, free in heapfill.free_blocks())
    taken = heapfill.fill_free_blocks()
    after = sum(free for _, free in heapfill.free_blocks())
    assert taken >= before // 2
    assert after < before // 4
