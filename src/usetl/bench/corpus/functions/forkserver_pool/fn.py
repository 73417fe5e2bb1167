"""multiprocessing's forkserver start method as long-lived workers use it: the fork server
started over a Unix socket with preloaded modules, a Pool with an initializer and
maxtasksperchild, a ProcessPoolExecutor with max_tasks_per_child, and a worker's
exception carried back to the parent."""

import concurrent.futures
import multiprocessing
import os

_state = {}


def init(prefix):
    _state["prefix"] = prefix
    _state["pid"] = os.getpid()


def work(n):
    return [f"{_state['prefix']}{n * n}", _state["pid"]]


def fail(n):
    raise ValueError(f"bad input {n}")


def pool_run(ctx, n):
    with ctx.Pool(2, initializer=init, initargs=("sq-",), maxtasksperchild=2) as pool:
        results = pool.map(work, range(n), chunksize=1)
        try:
            pool.apply(fail, (7,))
            error = None
        except ValueError as e:
            error = str(e)
    pids = {pid for _, pid in results}
    return {"values": [v for v, _ in results], "recycled": len(pids) >= n // 2,
            "not_parent": os.getpid() not in pids, "error": error}


def executor_run(ctx, n):
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx, initializer=init,
                                                initargs=("ex-",),
                                                max_tasks_per_child=3) as ex:
        results = list(ex.map(work, range(n)))
    return {"values": [v for v, _ in results],
            "workers": len({pid for _, pid in results}) >= n // 3}


def handler(event, context):
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["json"])
    return {"method": ctx.get_start_method(), "pool": pool_run(ctx, event["n"]),
            "executor": executor_run(ctx, event["n"])}
