"""Kernel objects handlers reach through os: an eventfd counter (semaphore mode, non-blocking
reads, a thread waking a selector), a memfd with seals (shrink, grow and write refused once
sealed), mapped and named in /proc/self/fd, and a pipe's capacity through fcntl."""

import errno
import fcntl
import mmap
import os
import selectors
import threading


def eventfds(posts):
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    for _ in range(posts):
        os.eventfd_write(efd, 1)
    total = os.eventfd_read(efd)
    try:
        os.eventfd_read(efd)
        empty = "read"
    except BlockingIOError as e:
        empty = errno.errorcode[e.errno]
    os.close(efd)
    sem = os.eventfd(3, os.EFD_SEMAPHORE)
    semaphore = [os.eventfd_read(sem) for _ in range(3)]
    os.close(sem)
    return {"total": total, "empty": empty, "semaphore": semaphore}


def woken_by_thread():
    efd = os.eventfd(0)
    sel = selectors.DefaultSelector()
    sel.register(efd, selectors.EVENT_READ)
    t = threading.Thread(target=os.eventfd_write, args=(efd, 7))
    t.start()
    ready = sel.select(timeout=10)
    t.join()
    value = os.eventfd_read(efd) if ready else None
    sel.close()
    os.close(efd)
    return value


def memfds(size):
    fd = os.memfd_create("payload", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, b"x" * size)
    link = os.readlink(f"/proc/self/fd/{fd}")
    with mmap.mmap(fd, size) as m:
        m[:5] = b"HELLO"
    os.lseek(fd, 0, os.SEEK_SET)
    head = os.read(fd, 5).decode()
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    refused = {}
    for name, attempt in (("shrink", lambda: os.ftruncate(fd, 10)),
                          ("grow", lambda: os.ftruncate(fd, size * 2))):
        try:
            attempt()
            refused[name] = "allowed"
        except OSError as e:
            refused[name] = errno.errorcode[e.errno]
    os.pwrite(fd, b"in-place", 0)  # writing inside the sealed size is still allowed
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
    try:
        os.pwrite(fd, b"late", 0)
        refused["write"] = "allowed"
    except OSError as e:
        refused["write"] = errno.errorcode[e.errno]
    seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    out = {"link": link, "head": head, "refused": refused, "size": os.fstat(fd).st_size,
           "seals": seals == (fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
                              | fcntl.F_SEAL_SEAL),
           "cloexec": bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)}
    os.close(fd)
    return out


def pipe_size():
    r, w = os.pipe()
    default = fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)
    grown = fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)
    os.set_blocking(w, False)
    written = 0
    try:
        while True:
            written += os.write(w, b"y" * 65536)
    except BlockingIOError:
        pass
    os.close(r)
    os.close(w)
    return {"default": default, "grown": grown, "filled": written}


def handler(event, context):
    return {"eventfd": eventfds(event["posts"]), "woken": woken_by_thread(),
            "memfd": memfds(event["size"]), "pipe": pipe_size()}
