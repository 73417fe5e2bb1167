"""multiprocessing as handlers use it for CPU work: a Pool's map, ProcessPoolExecutor, and
a Queue between processes."""

import multiprocessing
from concurrent.futures import ProcessPoolExecutor


def square(x):
    return x * x


def handler(event, context):
    with multiprocessing.Pool(2) as pool:
        mapped = pool.map(square, range(event["n"]))
    with ProcessPoolExecutor(max_workers=2) as ex:
        executed = list(ex.map(square, range(10)))
    q = multiprocessing.Queue()
    p = multiprocessing.Process(target=q.put, args=("from a child",))
    p.start()
    got = q.get(timeout=30)
    p.join(30)
    return {"mapped": sum(mapped), "executed": executed, "queue": got, "code": p.exitcode}
