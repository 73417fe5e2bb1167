"""The timeout decorator pattern: SIGALRM from signal.alarm or setitimer raises in the code
that overran, a busy loop and a blocking sleep alike."""

import functools
import signal
import time


class Timeout(Exception):
    pass


def timeout(seconds):
    def decorate(fn):
        @functools.wraps(fn)
        def wrapped(*args):
            def expired(signum, frame):
                raise Timeout(f"{fn.__name__} ran over {seconds} s")
            previous = signal.signal(signal.SIGALRM, expired)
            signal.setitimer(signal.ITIMER_REAL, seconds)
            try:
                return fn(*args)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
        return wrapped
    return decorate


@timeout(0.2)
def busy():
    n = 0
    while True:
        n += 1


@timeout(0.2)
def sleeper():
    time.sleep(30)


@timeout(5)
def quick(x):
    return x + 1


def handler(event, context):
    outcomes = {}
    for name, fn in (("busy", busy), ("sleeper", sleeper)):
        started = time.monotonic()
        try:
            fn()
            outcomes[name] = "finished"
        except Timeout as e:
            outcomes[name] = str(e)
        outcomes[name + "_prompt"] = time.monotonic() - started < 5
    fired = []
    signal.signal(signal.SIGALRM, lambda s, f: fired.append(s))
    signal.alarm(1)
    remaining = signal.alarm(1)
    signal.pause()
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    return {**outcomes, "quick": quick(1), "alarm_remaining": remaining, "fired": fired}
