"""cloudpickle as distributed-compute code ships work (dask, ray, joblib's loky):
lambdas and closures over local state, a dynamically made class, pickled by value and run
in a ProcessPoolExecutor's workers and in a child interpreter over a pipe."""

import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import cloudpickle


def run_pickled(payload):
    fn, args = cloudpickle.loads(payload)
    return fn(*args)


def handler(event, context):
    offset = event["offset"]
    weights = {i: i % 3 for i in range(10)}
    scorer = lambda x: x * weights[x % 10] + offset  # noqa: E731
    Row = type("Row", (), {"__init__": lambda self, v: setattr(self, "v", v),
                           "double": lambda self: self.v * 2})

    def make_rows(n):
        return [Row(i).double() for i in range(n)]

    with ProcessPoolExecutor(2) as pool:
        scored = list(pool.map(run_pickled, [cloudpickle.dumps((scorer, (i,)))
                                             for i in range(event["n"])]))
        rows = pool.submit(run_pickled, cloudpickle.dumps((make_rows, (5,)))).result(60)
    child = subprocess.run(
        [sys.executable, "-c", "import sys, cloudpickle; fn, args = cloudpickle.loads("
         "sys.stdin.buffer.read()); print(fn(*args))"],
        input=cloudpickle.dumps((lambda a, b: a ** b + offset, (2, 10))), capture_output=True,
        check=True)
    return {"scored": scored, "rows": rows, "child": child.stdout.decode().strip(),
            "size": len(cloudpickle.dumps(scorer)) > 100}
