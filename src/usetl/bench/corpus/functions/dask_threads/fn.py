"""dask's threaded scheduler: a chunked array reduction and a delayed task graph."""

import dask
import dask.array as da


def handler(event, context):
    x = da.arange(event["n"], chunks=event["n"] // 8)
    total = int((x * 2).sum().compute(scheduler="threads"))
    tasks = [dask.delayed(pow)(i, 2) for i in range(20)]
    graph = dask.delayed(sum)(tasks)
    return {"total": total, "graph": graph.compute(scheduler="threads"),
            "chunks": x.numblocks[0]}
