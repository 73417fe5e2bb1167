"""CPU time as handlers meter their own work: process_time and thread_time in threads,
os.times, getrusage for the process, a thread (RUSAGE_THREAD) and children, a child's
usage from wait4, clock_getres, the CPU count and affinity, and the load average."""

import hashlib
import os
import resource
import subprocess
import sys
import threading
import time


def burn(seconds):
    end = time.thread_time() + seconds
    h = b""
    while time.thread_time() < end:
        h = hashlib.sha256(h).digest()


def handler(event, context):
    out = {}
    p0, t0 = time.process_time(), time.thread_time()
    burn(event["seconds"])
    out["thread_time_grew"] = time.thread_time() - t0 >= event["seconds"] * 0.9
    idle_thread = []

    def idle():
        start = time.thread_time()
        time.sleep(0.2)
        idle_thread.append(time.thread_time() - start < 0.1)

    worker_usage = []

    def worker():
        burn(event["seconds"])
        worker_usage.append(resource.getrusage(resource.RUSAGE_THREAD).ru_utime)

    threads = [threading.Thread(target=idle), threading.Thread(target=worker)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["sleeping_thread_idle"] = idle_thread
    out["worker_thread_usage"] = worker_usage[0] >= event["seconds"] * 0.5
    out["process_time_grew"] = time.process_time() - p0 >= 2 * event["seconds"] * 0.9
    times = os.times()
    out["os_times"] = times.user + times.system > 0
    child = subprocess.Popen([sys.executable, "-c", "import time\nend = time.process_time() + "
                              f"{event['seconds']}\nwhile time.process_time() < end: pass"])
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    out["child_exit"] = child.returncode
    out["wait4_utime"] = usage.ru_utime + usage.ru_stime >= event["seconds"] * 0.9
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["children_usage"] = kids.ru_utime + kids.ru_stime >= event["seconds"] * 0.9
    out["children_times"] = os.times().children_user > 0
    out["resolution_ns"] = time.clock_getres(time.CLOCK_MONOTONIC) <= 1e-6
    out["affinity"] = len(os.sched_getaffinity(0)) == os.cpu_count()
    load = os.getloadavg()
    out["loadavg"] = len(load) == 3 and all(x >= 0 for x in load)
    out["self_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 1000
    return out
