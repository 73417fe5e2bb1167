"""Scheduling calls batch handlers make to step aside or to pin workers: nice and
getpriority/setpriority for the process and a thread, the scheduler's policy and
priority range, sched_setaffinity on a thread, sched_yield, and os.register_at_fork
hooks run around a fork."""

import os
import threading


def niceness():
    start = os.getpriority(os.PRIO_PROCESS, 0)
    after_nice = os.nice(3)
    os.setpriority(os.PRIO_PROCESS, 0, start + 5)
    set_prio = os.getpriority(os.PRIO_PROCESS, 0)
    thread_nice = []

    def worker():
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, 19)
        thread_nice.append(os.getpriority(os.PRIO_PROCESS, tid))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    return {"delta_nice": after_nice - start, "delta_set": set_prio - start,
            "thread": thread_nice, "main_after_thread": os.getpriority(os.PRIO_PROCESS, 0) - start}


def scheduler():
    policy = os.sched_getscheduler(0)
    return {"policy": policy == os.SCHED_OTHER,
            "param": os.sched_getparam(0).sched_priority,
            "other_range": [os.sched_get_priority_min(os.SCHED_OTHER),
                            os.sched_get_priority_max(os.SCHED_OTHER)],
            "fifo_range": [os.sched_get_priority_min(os.SCHED_FIFO),
                           os.sched_get_priority_max(os.SCHED_FIFO)],
            "rr_interval": os.sched_rr_get_interval(0) >= 0,
            "yield": os.sched_yield()}


def affinity():
    cpus = os.sched_getaffinity(0)
    first = min(cpus)
    seen = []

    def worker():
        os.sched_setaffinity(0, {first})
        seen.append(sorted(os.sched_getaffinity(0)) == [first])

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    try:
        os.sched_setaffinity(0, {max(cpus) + 64})
        bad = "allowed"
    except OSError as e:
        bad = type(e).__name__ + f":{e.errno}"
    return {"thread_pinned": seen, "process_unchanged": os.sched_getaffinity(0) == cpus,
            "bad_cpu": bad, "count_matches": len(cpus) <= os.cpu_count()}


def fork_hooks():
    r, w = os.pipe()
    calls = []
    os.register_at_fork(before=lambda: calls.append("before"),
                        after_in_parent=lambda: calls.append("parent"),
                        after_in_child=lambda: os.write(w, b"child-hook "))
    pid = os.fork()
    if pid == 0:
        os.write(w, b"child-body")
        os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    got = b""
    while chunk := os.read(r, 100):
        got += chunk
    os.close(r)
    return {"parent": calls, "child": got.decode(), "status": status}


def handler(event, context):
    return {"scheduler": scheduler(), "affinity": affinity(), "fork": fork_hooks(),
            "nice": niceness()}
