"""The spawn start method (macOS's and Windows' default, and what CUDA and threads-heavy
code must use on Linux): a fresh interpreter per child that re-imports the handler's
module, a Pool with an initializer, a SimpleQueue, a child's exception and exit code, a
child terminated, and the parent's module state not inherited."""

import multiprocessing
import os

LOADED_IN = os.getpid()
CONFIG = {}


def init(value):
    CONFIG["scale"] = value


def scaled(x):
    return x * CONFIG["scale"]


def report(q, parent):
    q.put({"fresh_module": LOADED_IN == os.getpid(), "config": dict(CONFIG),
           "parent": os.getppid() == parent})


def crash():
    raise SystemExit(5)


def hang():
    import time
    time.sleep(60)


def handler(event, context):
    CONFIG["parent_only"] = True
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2, initializer=init, initargs=(event["scale"],)) as pool:
        mapped = pool.map(scaled, range(event["n"]))
        async_result = pool.apply_async(scaled, (100,))
        applied = async_result.get(30)
    q = ctx.SimpleQueue()
    p = ctx.Process(target=report, args=(q, os.getpid()))
    p.start()
    seen = q.get()
    p.join(30)
    crashing = ctx.Process(target=crash)
    crashing.start()
    crashing.join(30)
    hanging = ctx.Process(target=hang)
    hanging.start()
    hanging.terminate()
    hanging.join(30)
    return {"mapped": mapped, "applied": applied, "child": seen, "crash_code": crashing.exitcode,
            "terminated_code": hanging.exitcode, "method": ctx.get_start_method()}
