"""What thread-aware code reads about its threads: threading.excepthook catching a worker's
error, sys.unraisablehook, native ids listed in /proc/self/task, names set with
pthread_setname_np and prctl and read back from /proc/self/task/<tid>/comm, stack sizes,
and a thread's own CPU clock id."""

import ctypes
import os
import sys
import threading
import time

PR_SET_NAME, PR_GET_NAME = 15, 16


def comm(tid):
    with open(f"/proc/self/task/{tid}/comm") as f:
        return f.read().strip()


def excepthooks():
    caught = []
    old = threading.excepthook
    threading.excepthook = lambda args: caught.append(
        [args.exc_type.__name__, str(args.exc_value), args.thread.name])
    try:
        t = threading.Thread(target=lambda: 1 / 0, name="divider")
        t.start()
        t.join()
    finally:
        threading.excepthook = old
    unraisable = []
    old_u = sys.unraisablehook
    sys.unraisablehook = lambda u: unraisable.append(type(u.exc_value).__name__)

    class Leaky:
        def __del__(self):
            raise ValueError("in __del__")

    try:
        Leaky()
    finally:
        sys.unraisablehook = old_u
    return {"thread": caught, "unraisable": unraisable}


def names_and_ids(count):
    libc = ctypes.CDLL(None)
    ready = threading.Barrier(count + 1)
    finish = threading.Event()
    found = {}

    def worker(i):
        tid = threading.get_native_id()
        if i % 2:
            libc.prctl(PR_SET_NAME, f"prctl-{i}".encode(), 0, 0, 0)
        else:
            libc.pthread_setname_np(ctypes.c_void_p(threading.get_ident()), f"setname-{i}".encode())
        buf = ctypes.create_string_buffer(16)
        libc.prctl(PR_GET_NAME, buf, 0, 0, 0)
        clock = time.pthread_getcpuclockid(threading.get_ident())
        found[i] = {"tid": tid, "prctl": buf.value.decode(),
                    "clock": time.clock_gettime(clock) >= 0}
        ready.wait()
        finish.wait()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    ready.wait()
    tasks = {int(t) for t in os.listdir("/proc/self/task")}
    out = {"main_in_tasks": threading.get_native_id() in tasks,
           "main_is_pid": threading.main_thread().native_id == os.getpid(),
           "workers_in_tasks": all(f["tid"] in tasks for f in found.values()),
           "distinct": len({f["tid"] for f in found.values()}) == count,
           "native_ids": all(t.native_id == found[i]["tid"] for i, t in enumerate(threads)),
           "names": [[found[i]["prctl"], comm(found[i]["tid"])] for i in range(count)],
           "clocks": all(f["clock"] for f in found.values())}
    finish.set()
    for t in threads:
        t.join()
    out["after"] = tasks_drain_to_main()
    return out


def tasks_drain_to_main():
    """A joined thread's task leaves /proc/self/task once its kernel thread has exited,
    which is a moment after join returns."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if [int(t) for t in os.listdir("/proc/self/task")] == [os.getpid()]:
            return True
        time.sleep(0.01)
    return False


def stack_size():
    old = threading.stack_size(4 << 20)
    depth = []

    def recurse(n):
        return n if n >= 3000 else recurse(n + 1)

    sys.setrecursionlimit(10000)
    t = threading.Thread(target=lambda: depth.append(recurse(0)))
    t.start()
    t.join()
    threading.stack_size(old)
    return {"old": old, "depth": depth}


def handler(event, context):
    return {"hooks": excepthooks(), "threads": names_and_ids(event["threads"]),
            "stack": stack_size(), "main_comm": comm(os.getpid()) != ""}
