"""psutil as monitoring code uses it (it reads /proc): CPU, memory, disk, this process and
its threads."""

import os
import threading

import psutil


def handler(event, context):
    me = psutil.Process()
    stop = threading.Event()
    extra = threading.Thread(target=stop.wait, args=(30,))
    extra.start()
    try:
        threads = me.num_threads()
    finally:
        stop.set()
        extra.join()
    vm = psutil.virtual_memory()
    cpu_times = psutil.cpu_times()
    return {"cpus": psutil.cpu_count() >= 1, "memory": vm.total > vm.available > 0,
            "percent": 0 <= psutil.cpu_percent(interval=0.1) <= 100,
            "cpu_times": cpu_times.user >= 0, "disk": psutil.disk_usage("/tmp").total > 0,
            "rss": me.memory_info().rss > 1 << 20, "threads": threads >= 2,
            "pid": me.pid == os.getpid(), "status": me.status() in ("running", "sleeping"),
            "boot": psutil.boot_time() > 0, "in_pids": os.getpid() in psutil.pids(),
            "cmdline": len(me.cmdline()) >= 1, "create_time": me.create_time() > 0,
            "load": len(psutil.getloadavg()) == 3}
