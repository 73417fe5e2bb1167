"""ctypes into the C library as handlers reach for what os lacks: getpid and gethostname,
uname and clock_gettime filling structures, qsort calling back into Python, errno after a
failed open (use_errno), malloc, memset and free, snprintf's varargs, sysconf, and the
interpreter's own symbols through pythonapi."""

import ctypes
import os
import socket


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class Utsname(ctypes.Structure):
    _fields_ = [(n, ctypes.c_char * 65) for n in
                ("sysname", "nodename", "release", "version", "machine", "domainname")]


def handler(event, context):
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    out = {"getpid": libc.getpid() == os.getpid()}
    name = ctypes.create_string_buffer(256)
    libc.gethostname(name, 256)
    out["hostname"] = name.value.decode() == socket.gethostname()
    uts = Utsname()
    libc.uname(ctypes.byref(uts))
    out["uname"] = [uts.sysname.decode(), uts.machine.decode() == os.uname().machine]
    ts = Timespec()
    libc.clock_gettime(1, ctypes.byref(ts))  # CLOCK_MONOTONIC
    out["monotonic"] = ts.tv_sec > 0 or ts.tv_nsec > 0
    values = (ctypes.c_int * len(event["values"]))(*event["values"])
    compare = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int),
                               ctypes.POINTER(ctypes.c_int))
    calls = []

    def cmp(a, b):
        calls.append(1)
        return a[0] - b[0]

    libc.qsort(values, len(values), ctypes.sizeof(ctypes.c_int), compare(cmp))
    out["qsort"] = [list(values), len(calls) > 0]
    libc.open.restype = ctypes.c_int
    fd = libc.open(b"/no/such/file", os.O_RDONLY)
    out["errno"] = [fd, os.strerror(ctypes.get_errno())]
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    block = libc.malloc(4096)
    ctypes.memset(block, 0x41, 4096)
    out["malloc"] = ctypes.string_at(block, 5).decode()
    libc.free(block)
    buf = ctypes.create_string_buffer(64)
    libc.snprintf(buf, 64, b"%s=%d/%.2f", b"rows", 42, ctypes.c_double(3.14159))
    out["snprintf"] = buf.value.decode()
    out["pagesize"] = libc.sysconf(30) == os.sysconf("SC_PAGESIZE")  # _SC_PAGESIZE
    libc.strlen.restype = ctypes.c_size_t
    out["strlen"] = libc.strlen(b"serverless")
    ctypes.pythonapi.Py_IsInitialized.restype = ctypes.c_int
    out["python_initialized"] = ctypes.pythonapi.Py_IsInitialized()
    out["env"] = ctypes.CDLL(None).getenv(b"PATH") != 0
    return out
