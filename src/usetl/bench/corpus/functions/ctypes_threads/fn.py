"""Native code calling back into Python as C libraries do: a thread created by
pthread_create through ctypes running a Python callback (the interpreter adopts a foreign
thread), nftw walking a tree in /tmp with a callback per entry, bsearch over a C array,
and a callback raising inside qsort."""

import ctypes
import os
import tempfile
import threading

libc = ctypes.CDLL(None, use_errno=True)
START = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)
NFTW = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int,
                        ctypes.c_void_p)
CMP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))
FTW_F, FTW_D, FTW_DP, FTW_DEPTH, FTW_PHYS = 0, 1, 5, 8, 1


def foreign_threads(count):
    results = {}

    def body(arg):
        results[arg] = [threading.current_thread().name.startswith("Dummy"),
                        threading.get_native_id() != threading.main_thread().native_id,
                        sum(range(arg * 1000))]
        return arg

    callback = START(body)
    libc.pthread_create.argtypes = [ctypes.POINTER(ctypes.c_ulong), ctypes.c_void_p, START,
                                    ctypes.c_void_p]
    libc.pthread_join.argtypes = [ctypes.c_ulong, ctypes.POINTER(ctypes.c_void_p)]
    handles = []
    for i in range(1, count + 1):
        handle = ctypes.c_ulong()
        rc = libc.pthread_create(ctypes.byref(handle), None, callback, i)
        handles.append((rc, handle))
    returned = []
    for rc, handle in handles:
        value = ctypes.c_void_p()
        libc.pthread_join(handle.value, ctypes.byref(value))
        returned.append([rc, value.value])
    return {"returned": returned, "results": [results[i] for i in sorted(results)]}


def walk(root):
    seen = []

    def visit(path, stat, flag, ftw):
        seen.append([os.path.relpath(path.decode(), root), flag])
        return 0

    callback = NFTW(visit)
    rc = libc.nftw(root.encode(), callback, 8, FTW_DEPTH | FTW_PHYS)
    return rc, sorted(seen)


def searching(values, wanted):
    arr = (ctypes.c_int * len(values))(*sorted(values))

    def cmp(a, b):
        return a[0] - b[0]

    callback = CMP(cmp)
    libc.bsearch.restype = ctypes.POINTER(ctypes.c_int)
    found = []
    for w in wanted:
        key = ctypes.c_int(w)
        hit = libc.bsearch(ctypes.byref(key), arr, len(values), ctypes.sizeof(ctypes.c_int),
                           callback)
        found.append(hit[0] if hit else None)
    return found


def raising_callback():
    arr = (ctypes.c_int * 4)(4, 3, 2, 1)
    calls = []

    def cmp(a, b):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("comparison failed")
        return a[0] - b[0]

    libc.qsort(arr, 4, ctypes.sizeof(ctypes.c_int), CMP(cmp))  # ctypes prints and returns 0
    return len(calls) > 2


def handler(event, context):
    with tempfile.TemporaryDirectory() as root:
        for d in ("a", "a/b", "c"):
            os.mkdir(os.path.join(root, d))
        for f in ("a/x.txt", "a/b/y.txt", "c/z.txt", "top.txt"):
            with open(os.path.join(root, f), "w") as fh:
                fh.write(f)
        rc, tree = walk(root)
    return {"threads": foreign_threads(event["threads"]), "nftw": [rc, tree],
            "bsearch": searching(event["values"], [7, 8, 1]), "raising": raising_callback()}
