"""Observability inside a handler: cProfile, tracemalloc, faulthandler writing to a file,
a traceback formatted and warnings captured."""

import cProfile
import faulthandler
import io
import pstats
import traceback
import tracemalloc
import warnings


def work(n):
    return sorted(str(i) for i in range(n))


def handler(event, context):
    profile = cProfile.Profile()
    profile.enable()
    work(event["n"])
    profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(5)
    tracemalloc.start()
    kept = work(event["n"])
    current, peak = tracemalloc.get_traced_memory()
    top = tracemalloc.take_snapshot().statistics("lineno")[:1]
    tracemalloc.stop()
    with open("/tmp/corpus-faults.txt", "w+") as f:
        faulthandler.dump_traceback(f)
        f.seek(0)
        dumped = f.read()
    try:
        {}["missing"]
    except KeyError:
        formatted = traceback.format_exc()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
    return {"profiled": "work" in out.getvalue(), "peak": peak >= current > 0,
            "top": len(top), "kept": len(kept), "faulthandler": "handler" in dumped,
            "traceback": formatted.strip().splitlines()[-1], "warned": len(caught)}
