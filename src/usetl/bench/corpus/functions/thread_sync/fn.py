"""threading's primitives with timeouts: Timer, Condition.wait_for, Barrier, Semaphore and
Lock acquire timeouts, Event.wait, thread-locals, and deep recursion on a bigger stack."""

import sys
import threading
import time


def deep(n):
    return 0 if n == 0 else 1 + deep(n - 1)


def timers_and_conditions():
    fired = threading.Event()
    timer = threading.Timer(0.05, fired.set)
    timer.start()
    timer_ok = fired.wait(10)
    cancelled = threading.Timer(5, fired.clear)
    cancelled.start()
    cancelled.cancel()
    cond, items = threading.Condition(), []

    def produce():
        for i in range(5):
            with cond:
                items.append(i)
                cond.notify_all()

    threading.Thread(target=produce).start()
    with cond:
        filled = cond.wait_for(lambda: len(items) == 5, timeout=10)
        waited = cond.wait(timeout=0.05)
    return {"timer": timer_ok, "cancelled_kept": fired.is_set(), "filled": filled,
            "waited": waited}


def barriers_and_locks():
    barrier = threading.Barrier(3, timeout=10)
    passed = []
    workers = [threading.Thread(target=lambda: passed.append(barrier.wait())) for _ in range(3)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    broken = threading.Barrier(2, timeout=0.05)
    try:
        broken.wait()
        barrier_timed_out = False
    except threading.BrokenBarrierError:
        barrier_timed_out = True
    sem = threading.Semaphore(1)
    sem.acquire()
    started = time.monotonic()
    sem_got = sem.acquire(timeout=0.1)
    sem_waited = time.monotonic() - started >= 0.09
    lock = threading.Lock()
    lock.acquire()
    return {"barrier": sorted(passed), "barrier_timed_out": barrier_timed_out,
            "sem": [sem_got, sem_waited], "lock": lock.acquire(timeout=0.05)}


def handler(event, context):
    local, seen = threading.local(), []

    def use_local(i):
        local.value = i
        time.sleep(0.01)
        seen.append(local.value == i)

    ts = [threading.Thread(target=use_local, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    sys.setrecursionlimit(event["depth"] + 100)
    threading.stack_size(64 << 20)
    depth = []
    big = threading.Thread(target=lambda: depth.append(deep(event["depth"])))
    big.start()
    big.join()
    threading.stack_size(0)
    return {**timers_and_conditions(), **barriers_and_locks(), "locals": seen, "depth": depth}
