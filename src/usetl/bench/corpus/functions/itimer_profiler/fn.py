"""A sampling profiler as handlers embed one: ITIMER_PROF with a SIGPROF handler sampling
the running frame during CPU work, ITIMER_VIRTUAL counting user time, getitimer's
remaining interval, and faulthandler dumping every thread's stack to a file, on a
registered signal and on a dump_traceback_later watchdog."""

import collections
import faulthandler
import signal
import tempfile
import threading
import time


def crunch(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def hashing(n):
    import hashlib
    h = b""
    for _ in range(n):
        h = hashlib.sha256(h).digest()
    return h


def spin(seconds, clock):
    end = clock() + seconds
    while clock() < end:
        crunch(2000)


def sample(interval, seconds):
    samples = collections.Counter()

    def on_prof(signum, frame):
        while frame is not None and frame.f_code.co_name not in ("crunch", "hashing"):
            frame = frame.f_back
        samples[frame.f_code.co_name if frame else "other"] += 1

    signal.signal(signal.SIGPROF, on_prof)
    signal.setitimer(signal.ITIMER_PROF, interval, interval)
    remaining = signal.getitimer(signal.ITIMER_PROF)
    spin(seconds, time.process_time)
    signal.setitimer(signal.ITIMER_PROF, 0)
    signal.signal(signal.SIGPROF, signal.SIG_DFL)
    return samples, remaining


def virtual(seconds):
    ticks = []
    signal.signal(signal.SIGVTALRM, lambda s, f: ticks.append(s))
    signal.setitimer(signal.ITIMER_VIRTUAL, 0.01, 0.01)
    spin(seconds, time.process_time)
    signal.setitimer(signal.ITIMER_VIRTUAL, 0)
    signal.signal(signal.SIGVTALRM, signal.SIG_DFL)
    return len(ticks)


def handler(event, context):
    samples, remaining = sample(0.005, event["seconds"])
    vticks = virtual(event["seconds"])
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, name="waiting-worker")
    worker.start()
    with tempfile.TemporaryFile("w+") as dump:
        faulthandler.register(signal.SIGUSR1, file=dump, all_threads=True)
        signal.raise_signal(signal.SIGUSR1)
        faulthandler.unregister(signal.SIGUSR1)
        faulthandler.dump_traceback_later(0.1, file=dump)
        time.sleep(0.5)
        faulthandler.cancel_dump_traceback_later()
        dump.seek(0)
        text = dump.read()
    stop.set()
    worker.join()
    return {"sampled_crunch": samples["crunch"] > 0, "mostly_crunch":
            samples["crunch"] >= sum(samples.values()) // 2, "interval": remaining[1],
            "virtual_ticks": vticks > 0, "dumps": text.count("Current thread"),
            "threads_in_dump": text.count("Thread 0x") >= 2, "timeout_dump":
            "Timeout (0:00:00.100000)!" in text, "saw_wait": "in wait" in text}
