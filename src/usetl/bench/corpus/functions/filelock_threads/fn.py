"""filelock (as Hugging Face's and pip's caches use it): threads taking a lock file in /tmp in
turn, with a timeout that expires while another holds it."""

import threading

from filelock import FileLock, Timeout

PATH = "/tmp/corpus.lock"


def handler(event, context):
    counter = {"n": 0}

    def work():
        for _ in range(event["rounds"]):
            with FileLock(PATH, timeout=30):
                value = counter["n"]
                counter["n"] = value + 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    holder, held = FileLock(PATH), threading.Event()
    release = threading.Event()

    def hold():
        with holder:
            held.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(30)
    try:
        FileLock(PATH, timeout=0.1).acquire()
        timed_out = False
    except Timeout:
        timed_out = True
    release.set()
    t.join()
    return {"count": counter["n"], "timed_out": timed_out}
