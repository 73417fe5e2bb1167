"""cffi in ABI mode as bindings without a compiler use it: libc opened with dlopen,
declarations for structs and functions, a callback from qsort, buffers made with new and
seen through from_buffer, and errno."""

import os

import cffi

ffi = cffi.FFI()
ffi.cdef("""
    typedef long time_t;
    struct timespec { time_t tv_sec; long tv_nsec; };
    int clock_gettime(int clk_id, struct timespec *tp);
    size_t strlen(const char *s);
    int getpid(void);
    void qsort(void *base, size_t nmemb, size_t size, int (*compar)(const void *, const void *));
    int open(const char *pathname, int flags, ...);
    void *memcpy(void *dest, const void *src, size_t n);
    int snprintf(char *str, size_t size, const char *format, ...);
""")
libc = ffi.dlopen("libc.so.6")


@ffi.callback("int(const void *, const void *)")
def compare(a, b):
    x, y = ffi.cast("int *", a)[0], ffi.cast("int *", b)[0]
    return (x > y) - (x < y)


def handler(event, context):
    ts = ffi.new("struct timespec *")
    libc.clock_gettime(0, ts)
    values = ffi.new("int[]", event["values"])
    libc.qsort(values, len(event["values"]), ffi.sizeof("int"), compare)
    data = bytearray(16)
    view = ffi.from_buffer(data)
    libc.memcpy(view, b"copied by memcpy", 16)
    fd = libc.open(b"/no/such/path", os.O_RDONLY)
    err = ffi.errno
    buf = ffi.new("char[64]")
    libc.snprintf(buf, 64, b"%d-%s", ffi.cast("int", 7), ffi.new("char[]", b"cffi"))
    return {"realtime": ts.tv_sec > 1_600_000_000, "pid": libc.getpid() == os.getpid(),
            "strlen": libc.strlen(b"abc\0def"), "sorted": list(values), "memcpy": data.decode(),
            "open": [fd, os.strerror(err)], "snprintf": ffi.string(buf).decode(),
            "sizeof": ffi.sizeof("struct timespec")}
