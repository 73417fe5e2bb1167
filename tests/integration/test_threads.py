"""Guest threads, timed waits, pipes, socketpairs, eventfds, epoll and asyncio in a real USF."""

import textwrap
import time

import pytest

from guest_code import run_ok
from usetl.etl import UrlPolicy
from usetl.usf import UsfConfig, start_usf

pytestmark = pytest.mark.kvm


def run(usf, code, timeout=30):
    return run_ok(usf, code, timeout).stdout


def test_threads_start_and_join_with_their_results_and_own_tids(usf):
    out = run(usf, """
        import threading
        results, tids = {}, set()
        def work(i):
            tids.add(threading.get_native_id())
            results[i] = sum(range(10000 * i))
        ts = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for t in ts: t.start()
        for t in ts: t.join()
        print(sorted(results.items()) == [(i, sum(range(10000 * i))) for i in range(6)])
        print(len(tids | {threading.get_native_id()}), all(not t.is_alive() for t in ts))
        """)
    assert out == "True\n7 True\n"


def test_thread_pool_executor_map(usf):
    out = run(usf, """
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(8) as ex:
            print(list(ex.map(lambda x: x * x, range(20))))
        """)
    assert out == str([x * x for x in range(20)]) + "\n"


def test_timed_waits_time_out_as_on_linux(usf):
    out = run(usf, """
        import queue, threading, time
        t = time.monotonic(); r = threading.Event().wait(0.1); print(r, time.monotonic() - t)
        lock = threading.Lock(); lock.acquire()
        t = time.monotonic(); r = lock.acquire(timeout=0.1); print(r, time.monotonic() - t)
        t = time.monotonic()
        try:
            queue.Queue().get(timeout=0.2)
        except queue.Empty:
            print("Empty", time.monotonic() - t)
        t = time.monotonic(); time.sleep(0.05); print("slept", time.monotonic() - t)
        """)
    lines = [line.split() for line in out.splitlines()]
    assert [w[0] for w in lines] == ["False", "False", "Empty", "slept"]
    for (_, took), least in zip(lines, (0.1, 0.1, 0.2, 0.05), strict=True):
        assert float(took) >= least


def test_a_timed_wait_is_on_time_while_another_thread_computes(usf):
    out = run(usf, """
        import threading, time
        stop = False
        def spin():
            while not stop:
                pass
        t = threading.Thread(target=spin); t.start()
        t0 = time.monotonic(); r = threading.Event().wait(0.2); took = time.monotonic() - t0
        stop = True; t.join()
        print(r, took)
        """)
    r, took = out.split()
    assert r == "False" and float(took) >= 0.2


def test_condition_notify_and_event_between_threads(usf):
    out = run(usf, """
        import threading
        cond, items, done = threading.Condition(), [], threading.Event()
        def consumer():
            got = []
            while len(got) < 5:
                with cond:
                    while not items:
                        cond.wait()
                    got.append(items.pop(0))
            print("got", got)
            done.set()
        t = threading.Thread(target=consumer); t.start()
        for i in range(5):
            with cond:
                items.append(i); cond.notify()
        print(done.wait(10)); t.join()
        """)
    assert out == "got [0, 1, 2, 3, 4]\nTrue\n"


def test_pipe_blocking_read_is_woken_by_a_writer_thread_and_sees_eof(usf):
    out = run(usf, """
        import os, threading, time
        r, w = os.pipe()
        def writer():
            time.sleep(0.05)
            os.write(w, b"hello")
            os.close(w)
        threading.Thread(target=writer).start()
        print(os.read(r, 100), os.read(r, 100))
        r2, w2 = os.pipe2(os.O_NONBLOCK)
        try:
            os.read(r2, 1)
        except BlockingIOError:
            print("EAGAIN")
        os.close(r2)
        try:
            os.write(w2, b"x")
        except BrokenPipeError:
            print("EPIPE")
        """)
    assert out == "b'hello' b''\nEAGAIN\nEPIPE\n"


def test_a_big_write_through_a_pipe_arrives_whole(usf):
    out = run(usf, """
        import hashlib, os, threading
        data = os.urandom(1 << 20)
        r, w = os.pipe()
        def writer():
            with open(w, "wb") as f:
                f.write(data)
        t = threading.Thread(target=writer); t.start()
        with open(r, "rb") as f:
            got = f.read()
        t.join()
        print(got == data)
        """)
    assert out == "True\n"


def test_socketpair_stream_and_dgram(usf):
    out = run(usf, """
        import socket, threading
        a, b = socket.socketpair()
        t = threading.Thread(target=lambda: a.sendall(b"x" * 300000)); t.start()
        got = b""
        while len(got) < 300000:
            got += b.recv(65536)
        t.join(); print(len(got))
        a.shutdown(socket.SHUT_WR); print(b.recv(10))
        a.setblocking(False)
        c, d = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        c.send(b"one"); c.send(b"two"); print(d.recv(100), d.recv(100))
        print(c.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_DGRAM)
        """)
    assert out == "300000\nb''\nb'one' b'two'\nTrue\n"


def test_eventfd_counter_and_semaphore(usf):
    out = run(usf, """
        import os, threading
        fd = os.eventfd(3)
        print(os.eventfd_read(fd))
        threading.Timer(0.05, os.eventfd_write, (fd, 5)).start()
        print(os.eventfd_read(fd))
        sem = os.eventfd(2, os.EFD_SEMAPHORE | os.EFD_NONBLOCK)
        print(os.eventfd_read(sem), os.eventfd_read(sem))
        try:
            os.eventfd_read(sem)
        except BlockingIOError:
            print("EAGAIN")
        """)
    assert out == "3\n5\n1 1\nEAGAIN\n"


def test_epoll_level_edge_and_oneshot(usf):
    out = run(usf, """
        import os, select, time
        r, w = os.pipe()
        lt, et, one = select.epoll(), select.epoll(), select.epoll()
        lt.register(r, select.EPOLLIN)
        et.register(r, select.EPOLLIN | select.EPOLLET)
        one.register(r, select.EPOLLIN | select.EPOLLONESHOT)
        t = time.monotonic(); print(lt.poll(0.1), time.monotonic() - t >= 0.1)
        os.write(w, b"a")
        print(lt.poll(0), lt.poll(0))
        print(et.poll(0), et.poll(0))
        os.write(w, b"b")
        print(et.poll(0))
        print(one.poll(0), one.poll(0))
        one.modify(r, select.EPOLLIN); print(one.poll(0))
        os.read(r, 10); print(lt.poll(0))
        """)
    r = None
    lines = out.splitlines()
    r = lines[1].split("[")[1].split(",")[0].lstrip("(")
    ready = f"[({r}, 1)]"
    assert lines == ["[] True", f"{ready} {ready}", f"{ready} []", ready,
                     f"{ready} []", ready, "[]"]


def test_epoll_wait_wakes_when_another_thread_adds_or_modifies_a_ready_fd(usf):
    """grpc's poller thread waits on its epoll set while other threads add sockets to it."""
    out = run(usf, """
        import os, select, socket, threading, time
        ep = select.epoll()
        a, b = socket.socketpair()
        r, w = os.pipe()
        b.send(b"x")
        os.write(w, b"y")
        ep.register(r, select.EPOLLOUT)  # ready for reading, not for what it asks
        for change, fd in ((lambda: ep.register(a, select.EPOLLIN | select.EPOLLET), a.fileno()),
                           (lambda: ep.modify(r, select.EPOLLIN), r)):
            polling, got = threading.Event(), []
            def waiter():
                polling.set()  # it runs on until it blocks in epoll_wait (one vCPU)
                got.append(ep.poll(30))
            t = threading.Thread(target=waiter)
            t.start()
            polling.wait()
            started = time.monotonic()
            change()
            t.join()
            print(got[0] == [(fd, select.EPOLLIN)], time.monotonic() - started < 10)
        """)
    assert out == "True True\nTrue True\n"


def test_select_and_poll_wake_on_a_writer_thread(usf):
    out = run(usf, """
        import os, select, threading
        r, w = os.pipe()
        threading.Timer(0.05, os.write, (w, b"x")).start()
        print(select.select([r], [], [], 5)[0] == [r])
        os.read(r, 1)
        threading.Timer(0.05, os.write, (w, b"y")).start()
        p = select.poll(); p.register(r, select.POLLIN)
        print(p.poll(5000) == [(r, select.POLLIN)])
        print(select.select([r], [], [], 0.05)[0] == [r], select.select([], [w], [], 0)[1] == [w])
        """)
    assert out == "True\nTrue\nTrue True\n"


def test_asyncio_sleep_queue_executor_and_open_connection(usf, module_http_server):
    server = module_http_server
    server.add("/hello", b"hello from the host")
    usf.kernel.allow_sockets(UrlPolicy([server.base + "/"]))
    out = run(usf, f"""
        import asyncio, time
        async def fetch():
            reader, writer = await asyncio.open_connection("127.0.0.1", {server.port})
            writer.write(b"GET /hello HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
            await writer.drain()
            data = await reader.read()
            writer.close()
            return data.split(b"\\r\\n\\r\\n", 1)[1]
        async def main():
            t = time.monotonic(); await asyncio.sleep(0.05); slept = time.monotonic() - t
            q = asyncio.Queue()
            async def produce():
                for i in range(3):
                    await q.put(i)
            asyncio.ensure_future(produce())
            got = [await q.get() for _ in range(3)]
            v = await asyncio.get_running_loop().run_in_executor(None, sum, range(1000))
            body, _ = await asyncio.gather(fetch(), asyncio.sleep(0.01))
            return slept >= 0.05, got, v, body
        print(asyncio.run(main()))
        """)
    assert out == "(True, [0, 1, 2], 499500, b'hello from the host')\n"


def test_a_blocking_socket_read_lets_other_threads_run(usf, module_http_server):
    server = module_http_server
    usf.kernel.allow_sockets(UrlPolicy([server.base + "/"]))
    out = run(usf, f"""
        import socket, threading
        s = socket.create_connection(("127.0.0.1", {server.port}))
        ticks = []
        def reader():
            ticks.append(("recv", s.recv(100)[:8]))
        t = threading.Thread(target=reader); t.start()
        for i in range(3):
            ticks.append(i)
        s.sendall(b"GET /missing HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
        t.join(); s.close()
        print(ticks)
        """)
    assert out == "[0, 1, 2, ('recv', b'HTTP/1.1')]\n"


def test_ten_thousand_threads_get_a_clear_error_and_the_host_carries_on(usf):
    out = run(usf, """
        import threading
        ev, ts = threading.Event(), []
        try:
            for _ in range(10000):
                t = threading.Thread(target=ev.wait); t.start(); ts.append(t)
        except RuntimeError as e:
            print(e)
        ev.set()
        for t in ts: t.join()
        print(len(ts) > 50)
        """, timeout=60)
    assert out == "can't start new thread\nTrue\n"
    assert run(usf, "print(6 * 7)") == "42\n"


def test_a_deadlocked_guest_gets_a_clear_error(image):
    with start_usf(image) as u:
        r = u.run_code("import threading; l = threading.Lock(); l.acquire(); l.acquire()")
        assert r.error.type == "GuestCrash"
        assert "deadlock" in r.error.message


def test_a_guest_spinning_on_futexes_is_ended_by_its_timeout(image):
    with start_usf(image) as u:
        t0 = time.monotonic()
        r = u.run_code(textwrap.dedent("""
            import threading
            cond = threading.Condition()
            def spin():
                while True:
                    with cond:
                        cond.notify_all()
            for _ in range(3):
                threading.Thread(target=spin, daemon=True).start()
            while True:
                with cond:
                    cond.wait(0.001)
            """), timeout=1.0)
        assert r.error.type == "Timeout"
        assert time.monotonic() - t0 >= 1.0


def test_a_clone_that_started_threads_is_rolled_back_and_serves_again(image_path):
    from usetl.hyperfork import Template

    code = textwrap.dedent("""
        import threading
        from concurrent.futures import ThreadPoolExecutor
        left = threading.Thread(target=threading.Event().wait, daemon=True)
        left.start()  # still waiting when the request ends
        with ThreadPoolExecutor(4) as ex:
            total = sum(ex.map(lambda x: x * x, range(100)))
        print(total, threading.active_count())
        """)
    with Template.start(image_path) as base, base.fork() as clone:
        for _ in range(3):
            r = clone.run_code(code, timeout=30)
            assert r.error is None, (r.error, r.stderr)
            assert r.stdout == "328350 2\n"
            clone.rollback()
        r = clone.run_code("import threading; print(threading.active_count())")
        assert r.stdout == "1\n"


def test_etl_requests_from_a_thread_pool_overlap_and_arrive_whole(image, module_http_server):
    import hashlib
    import os

    server = module_http_server
    # Long paths and names: replies over the 1024 bytes a threaded request's buffer holds.
    blobs = {f"/etl/{i}/" + "p" * 600: os.urandom((1 << 20) + i) for i in range(6)}
    for path, body in blobs.items():
        server.add(path, body)
    digests = sorted(hashlib.sha256(b).hexdigest() for b in blobs.values())
    with start_usf(image, UsfConfig(allow=(server.base + "/",))) as u:
        out = run(u, f"""
            import hashlib, threading
            from concurrent.futures import ThreadPoolExecutor
            from usetl import etl
            def fetch(i):
                f = etl.get("{server.base}/etl/" + str(i) + "/" + "p" * 600,
                            name=str(i) + "n" * 200)
                return hashlib.sha256(f.bytes()).hexdigest()
            def missing(_):
                try:
                    etl.get("{server.base}/nothing-here")
                except etl.EtlError as e:
                    return e.status
            with ThreadPoolExecutor(6) as ex:
                got = sorted(ex.map(fetch, range(6)))
                statuses = list(ex.map(missing, range(3)))
                listings = list(ex.map(lambda _: len(etl.ls()), range(3)))
                posted = list(ex.map(lambda i: etl.post("{server.base}/up",
                                                        b"x" * (1000 * i)).json()["size"],
                                     range(1, 4)))
            print(got)
            print(statuses, listings, posted)
            """)
    lines = out.splitlines()
    assert lines[0] == str(digests)
    assert lines[1].startswith("[404, 404, 404] [")
    assert lines[1].endswith("[1000, 2000, 3000]")


def test_threaded_downloads_with_a_length_land_in_the_host_region_without_a_copy(
        image, module_http_server):
    import hashlib
    import os

    server = module_http_server
    blobs = {f"/placed/{i}": os.urandom((2 << 20) + 4096 * i + i) for i in range(4)}
    for path, body in blobs.items():
        server.add(path, body)
    paths = [*blobs, "/nolength/placed/0"]  # no Content-Length: a memory file of its own
    with start_usf(image, UsfConfig(allow=(server.base + "/",))) as u:
        r = run_ok(u, f"""
            import hashlib
            from concurrent.futures import ThreadPoolExecutor
            from usetl import etl
            def fetch(path):
                f = etl.get("{server.base}" + path, name=path.replace("/", "_"))
                return hashlib.sha256(f.bytes()).hexdigest()
            with ThreadPoolExecutor(len({paths!r})) as ex:
                print(list(ex.map(fetch, {paths!r})))
            """)
    digests = [hashlib.sha256(blobs[p.removeprefix("/nolength")]).hexdigest() for p in paths]
    assert r.stdout == f"{digests}\n"
    assert r.io.copied_bytes == len(blobs["/placed/0"])  # only the body without a length


def test_a_download_left_in_flight_writes_nothing_into_the_next_invocations_files(
        image, module_http_server):
    """A host thread still receiving for a thread the handler left waiting writes through
    a mapping the end of the invocation took away, not into the region's pages, which the
    next invocation's files now use."""
    import hashlib
    import os
    import threading

    from waiting import wait_until

    server = module_http_server
    stalled = server.stall("/stalled", b"s" * (4 << 20))
    ended = server.gate("/end-first")
    second = os.urandom(4 << 20)
    server.add("/second", second)
    read = server.gate("/read-second")
    with start_usf(image, UsfConfig(allow=(server.base + "/",))) as u:
        first = threading.Thread(target=run_ok, args=(u, f"""
            import threading
            from usetl import etl
            threading.Thread(target=etl.get, args=("{server.base}/stalled",), daemon=True).start()
            etl.get("{server.base}/end-first")
            """))
        first.start()
        stalled.wait_for(1)
        placement = wait_until(lambda: next((p for p in u.etl.transfers.open if p.reserved),
                                            None), "the stalled body's range of the host region")
        ended.open()
        first.join()
        out = {}
        reader = threading.Thread(target=lambda: out.update(r=run_ok(u, f"""
            import hashlib
            from usetl import etl
            f = etl.get("{server.base}/second")
            etl.get("{server.base}/read-second")
            print(hashlib.sha256(f.bytes()).hexdigest())
            """)))
        reader.start()
        read.wait_for(1)
        stalled.open()
        wait_until(lambda: placement not in u.etl.transfers.open, "the stalled transfer's end")
        read.open()
        reader.join()
    assert out["r"].stdout == hashlib.sha256(second).hexdigest() + "\n"


def test_futex_and_clone_answer_bad_arguments_with_linux_errnos(usf):
    out = run(usf, """
        import ctypes, errno, threading, time
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        SYS_futex, SYS_clone = 202, 56
        word = ctypes.c_uint32(5)
        addr = ctypes.addressof(word)
        def call(*args):
            r = libc.syscall(*[ctypes.c_long(a) for a in args])
            return r if r >= 0 else errno.errorcode[ctypes.get_errno()]
        def ts(sec, nsec):
            t = (ctypes.c_long * 2)(sec, nsec)
            ts.keep.append(t)
            return ctypes.addressof(t)
        ts.keep = []
        print(call(SYS_futex, addr + 1, 0, 5, 0, 0, 0), call(SYS_futex, addr, 0, 6, 0, 0, 0),
              call(SYS_futex, 8, 0, 0, 0, 0, 0), call(SYS_futex, addr, 9, 5, 0, 0, 0),
              call(SYS_futex, addr, 0, 5, ts(0, 10**9), 0, 0), call(SYS_futex, addr, 6, 0, 0, 0, 0))
        print(call(SYS_futex, addr, 128, 5, ts(0, 20_000_000), 0, 0))
        far = threading.Thread(target=lambda: print("far", call(SYS_futex, addr, 0, 5,
                                                                 ts(1 << 40, 0), 0, 0)))
        far.start()
        while call(SYS_futex, addr, 1, 1, 0, 0, 0) == 0:
            time.sleep(0.01)
        far.join()
        print(call(SYS_clone, 0x3D0F00, 0, 0, 0, 0), call(SYS_clone, 0x111, 0, 0, 0, 0),
              call(SYS_futex, addr, 4, 1, 1, addr, 7), call(SYS_futex, addr, 3, 1, 1, addr + 4, 0))
        print(call(335))  # no such syscall
        """)
    assert out.splitlines() == [
        "EINVAL EAGAIN EFAULT EINVAL EINVAL ENOSYS", "ETIMEDOUT", "far 0", "EINVAL EPERM EAGAIN 0",
        "ENOSYS",
    ]


def test_a_wait_with_nothing_to_run_sleeps_on_the_host_without_cpu(usf):
    r = usf.run_code("import threading; threading.Event().wait(0.5)", timeout=30)
    assert r.error is None, r.error
    # A busy wait would spend the whole half second on the vCPU's thread.
    assert r.guest_cpu_ms < 250, r.guest_cpu_ms


def test_a_template_frozen_with_a_waiting_thread_serves_its_clones(image_path, tmp_path):
    from usetl.hyperfork import Template

    (tmp_path / "fn.py").write_text(textwrap.dedent("""
        import queue, threading
        jobs, results = queue.Queue(), queue.Queue()
        def worker():
            while True:
                results.put(jobs.get() * 2)
        threading.Thread(target=worker, daemon=True).start()
        """))
    load = {"kind": "exec", "code": "import sys; sys.path.insert(0, '/fn'); import fn"}
    ask = "import fn, threading; fn.jobs.put({}); print(fn.results.get(timeout=5), " \
          "threading.active_count())"
    with Template.start(image_path) as base, \
            base.load_function(load, mounts={"fn": str(tmp_path)}) as template:
        for clone_no in range(2):
            with template.fork() as clone:
                for i in range(2):
                    r = clone.run_code(ask.format(i + clone_no), timeout=30)
                    assert r.error is None, (r.error, r.stderr)
                    assert r.stdout == f"{2 * (i + clone_no)} 2\n"
                    clone.rollback()


def test_a_woken_thread_gets_the_gil_from_threads_that_spin_through_syscalls(usf):
    """Three readers spin on a WAL database while a writer inserts 3,000 rows: each reader
    drops the GIL around its sqlite calls, and a woken writer (or reader) must run before the
    waker takes it back, as on Linux (Scheduler.wake): else one thread starved the others
    for 20 s to minutes."""
    out = run(usf, """
        import sqlite3, threading
        path = "/tmp/events.db"
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("pragma journal_mode=wal")
        db.execute("create table events (n integer)")
        done, reads = threading.Event(), [0, 0, 0]
        def writer():
            w = sqlite3.connect(path, timeout=30)
            for start in range(0, 3000, 100):
                with w:
                    w.executemany("insert into events values (?)",
                                  [(i,) for i in range(start, start + 100)])
            w.close()
            done.set()
        def reader(k):
            r = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
            while True:
                finished = done.is_set()
                r.execute("select count(*) from events").fetchone()
                reads[k] += 1
                if finished:
                    break
            r.close()
        threads = [threading.Thread(target=writer),
                   *(threading.Thread(target=reader, args=(k,)) for k in range(3))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(db.execute("select count(*) from events").fetchone()[0], min(reads) > 0)
        """, timeout=15)  # under a second here; starved, 20 s to minutes
    assert out == "3000 True\n", out
