"""What a process tree shares in a USF: AF_UNIX names across its processes, and the
multiprocessing that builds on them (Manager's server in a child), in a jailed clone;
orphans that run on after their parent, reparented as on Linux, until the call ends."""

import textwrap

import pytest
from test_children import descendants

from waiting import wait_until

pytestmark = pytest.mark.kvm


def run_in_clone(template, code: str, prelude: str = "", timeout: float = 120) -> list[str]:
    with template.fork() as clone:
        r = clone.run_code(prelude + textwrap.dedent(code), timeout=timeout)
    assert r.error is None, (r.error, r.stderr)
    return r.stdout.splitlines()


# Functions for multiprocessing to pickle by name: a module in the clone's /tmp.
WORK = """
import os, time
from multiprocessing import shared_memory
def square(x):
    return x * x
def slow(x):
    time.sleep(x)
    return x
def fail(x):
    raise ValueError(x)
def fill(d, l, q, lock, i):
    with lock:
        d[i] = i * i
    l.append(i)
    q.put(os.getpid())
    return i
def use(q, conn, lock, sem, ev, val, arr, shm, i):
    with lock:
        val.value += 1
    with sem:
        arr[i] = i + 0.5
    shm.buf[i] = 65 + i
    q.put(i)
    conn.send(i * 10)
    ev.wait(30)
"""
IMPORT_WORK = f"""
import sys
with open("/tmp/work.py", "w") as f:
    f.write({WORK!r})
sys.path.insert(0, "/tmp")
import work
"""


def test_an_af_unix_listener_bound_in_a_child_is_connectable_from_the_whole_tree(template):
    out = run_in_clone(template, """
        import errno, os, socket
        def connect(addr):
            c = socket.socket(socket.AF_UNIX)
            try:
                c.connect(addr)
            except OSError as e:
                return errno.errorcode[e.errno]
            c.sendall(b"hi")
            return c.recv(100).decode(), c.getpeername()
        r, w = os.pipe()
        done_r, done_w = os.pipe()
        server = os.fork()
        if server == 0:  # binds in a directory only its own /tmp has
            os.mkdir("/tmp/mine")
            path = socket.socket(socket.AF_UNIX)
            path.bind("/tmp/mine/s")
            path.listen()
            abstract = socket.socket(socket.AF_UNIX)
            abstract.bind("\\0usetl-tree")
            abstract.listen()
            os.write(w, b"x")
            for listener in (path, abstract, path):
                c, _ = listener.accept()
                c.sendall(c.recv(10).upper() + b" " + str(c.getsockname()).encode())
                c.close()
            os.read(done_r, 1)
            os._exit(0)
        os.read(r, 1)
        print(connect("/tmp/mine/s"))
        print(connect("\\0usetl-tree"))
        sibling = os.fork()
        if sibling == 0:  # up to the parent's monitor, then down to the server's
            os.write(w, repr(connect("/tmp/mine/s")).encode())
            os._exit(0)
        os.waitpid(sibling, 0)
        print(os.read(r, 200).decode())
        taken = socket.socket(socket.AF_UNIX)
        try:
            taken.bind("\\0usetl-tree")
        except OSError as e:
            print("bind", errno.errorcode[e.errno])
        os.write(done_w, b"x")
        os.waitpid(server, 0)
        print(connect("\\0usetl-tree"))
    """)
    assert out == [
        "('HI /tmp/mine/s', '/tmp/mine/s')",
        "(\"HI b'\\\\x00usetl-tree'\", b'\\x00usetl-tree')",
        "('HI /tmp/mine/s', '/tmp/mine/s')",
        "bind EADDRINUSE",
        "ECONNREFUSED",
    ]


def test_so_peercred_across_the_tree_names_the_other_process(template):
    out = run_in_clone(template, """
        import os, socket, struct
        def cred_pid(s):
            return struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                    12))[0]
        r, w = os.pipe()
        server = os.fork()
        if server == 0:
            listener = socket.socket(socket.AF_UNIX)
            listener.bind("\\0usetl-tree-cred")
            listener.listen()
            os.write(w, b"x")
            c, _ = listener.accept()
            c.sendall(str(cred_pid(c) == os.getppid()).encode())
            c.close()
            os._exit(0)
        os.read(r, 1)
        c = socket.socket(socket.AF_UNIX)
        c.connect("\\0usetl-tree-cred")
        print(cred_pid(c) == server, c.recv(10).decode())
        os.waitpid(server, 0)
    """)
    assert out == ["True True"]


def test_a_manager_serves_its_dict_list_queue_and_lock_to_processes_and_a_pool(template):
    out = run_in_clone(template, """
        import multiprocessing
        with multiprocessing.Manager() as m:
            d, l, q, lock = m.dict(), m.list(), m.Queue(), m.Lock()
            d[-1] = 1
            ps = [multiprocessing.Process(target=work.fill, args=(d, l, q, lock, i))
                  for i in range(3)]
            for p in ps:
                p.start()
            for p in ps:
                p.join()
            print(sorted(d.items()), sorted(l), len({q.get(timeout=10) for _ in ps}),
                  [p.exitcode for p in ps])
            with multiprocessing.Pool(2) as pool:
                print(pool.starmap(work.fill, [(d, l, q, lock, i) for i in range(3, 6)]))
            print(len(d), len(l))
    """, IMPORT_WORK)
    assert out == ["[(-1, 1), (0, 0), (1, 1), (2, 4)] [0, 1, 2] 3 [0, 0, 0]", "[3, 4, 5]",
                   "7 6"]


def test_pools_time_out_and_raise_as_on_linux(template):
    out = run_in_clone(template, """
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, TimeoutError, as_completed
        with multiprocessing.Pool(2) as pool:
            print(list(pool.imap(work.square, range(5))),
                  sorted(pool.imap_unordered(work.square, range(5))))
            slow = pool.apply_async(work.slow, (5,))
            try:
                slow.get(timeout=0.2)
            except multiprocessing.TimeoutError:
                print("timed out")
            print(pool.apply_async(work.square, (7,)).get(timeout=30))
            try:
                pool.apply(work.fail, (1,))
            except ValueError as e:
                print("raised", e)
            pool.terminate()
        with ProcessPoolExecutor(2) as ex:
            print(list(ex.map(work.square, range(5))))
            futures = [ex.submit(work.slow, 0), ex.submit(work.slow, 1.5)]
            done = []
            try:
                for f in as_completed(futures, timeout=0.5):
                    done.append(f.result())
            except TimeoutError:
                print("as_completed timed out", done)
    """, IMPORT_WORK)
    assert out == ["[0, 1, 4, 9, 16] [0, 1, 4, 9, 16]", "timed out", "49", "raised 1",
                   "[0, 1, 4, 9, 16]", "as_completed timed out [0]"]


def test_queues_pipes_locks_events_values_and_shared_memory_across_forks(template):
    out = run_in_clone(template, """
        import multiprocessing as mp
        from multiprocessing import shared_memory
        q, (a, b) = mp.Queue(), mp.Pipe()
        lock, sem, ev = mp.Lock(), mp.Semaphore(2), mp.Event()
        val, arr = mp.Value("i", 0), mp.Array("d", 2)
        shm = shared_memory.SharedMemory(create=True, size=16)
        ps = [mp.Process(target=work.use,
                                      args=(q, b, lock, sem, ev, val, arr, shm, i))
              for i in range(2)]
        for p in ps:
            p.start()
        got = sorted(q.get(timeout=30) for _ in ps), sorted(a.recv() for _ in ps)
        ev.set()
        for p in ps:
            p.join()
        print(got, val.value, list(arr), bytes(shm.buf[:2]), [p.exitcode for p in ps])
        shm.close()
        shm.unlink()
    """, IMPORT_WORK)
    assert out == ["([0, 1], [0, 10]) 2 [0.5, 1.5] b'AB' [0, 0]"]


ORPHAN = """
import os, sys, time
shell = int(sys.argv[2])
while os.getppid() == shell:  # until the shell has gone
    time.sleep(0.01)
os.write(int(sys.argv[1]), b"%d %d" % (shell, os.getppid()))
"""


def test_an_orphan_runs_on_reparented_to_the_first_process_and_gets_its_signals(template):
    out = run_in_clone(template, f"""
        import os, signal, subprocess, sys
        r, w = os.pipe()
        line = f'{{sys.executable}} -c "$PROG" {{w}} $$ >/dev/null 2>&1 & echo started'
        done = subprocess.run(line, shell=True, capture_output=True, text=True,
                              pass_fds=[w], env={{"PROG": {ORPHAN!r}}})
        os.close(w)
        print(done.stdout.strip(), done.returncode, os.read(r, 100).split()[1], os.getpid())
        r, w = os.pipe()
        daemon = os.fork()
        if daemon == 0:  # a double fork: the grandchild outlives its parent
            if os.fork() == 0:
                signal.signal(signal.SIGUSR1,
                              lambda *_: (os.write(w, b"usr1 %d" % os.getppid()), os._exit(0)))
                os.write(w, b"%d\\n" % os.getpid())
                while True:
                    signal.pause()
            os._exit(0)
        os.waitpid(daemon, 0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            os.kill(int(f.readline()), signal.SIGUSR1)
            print(f.read().decode())
    """)
    assert out == ["started 0 b'1' 1", "usr1 1"]


def test_an_orphan_is_killed_when_the_invocation_ends(template):
    before = descendants(template.info.pid)
    with template.fork() as clone:
        r = clone.run_code("import subprocess\n"
                           "subprocess.run('sleep 60 & echo started', shell=True)\n",
                           timeout=30)
        assert r.error is None and r.stdout == "started\n"
        wait_until(lambda: len(descendants(template.info.pid) - before) == 1,
                   "the orphan's monitors to end, the clone's alone left", timeout=30)


def test_a_fifo_pairs_readers_and_writers_of_the_tree_as_linux_opens_do(template):
    out = run_in_clone(template, """
        import errno, os, stat, subprocess, threading
        os.mkfifo("/tmp/fifo")
        print(stat.S_ISFIFO(os.stat("/tmp/fifo").st_mode))
        got = []  # two threads of one process: the reader's open waits for the writer's
        reader = threading.Thread(target=lambda: got.append(open("/tmp/fifo").read()))
        reader.start()
        with open("/tmp/fifo", "w") as f:
            f.write("from a thread")
        reader.join()
        print(got[0])
        writer = subprocess.Popen(["sh", "-c", "echo from sh > /tmp/fifo"])
        with open("/tmp/fifo") as f:
            print(f.read().strip())  # to the end: the program's end was the last writer's
        writer.wait()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            with open("/tmp/fifo", "rb") as f:
                os.write(w, b"%d" % len(f.read()))
            os._exit(0)
        with open("/tmp/fifo", "wb") as f:
            f.write(b"x" * 100000)
        os.waitpid(pid, 0)
        print(os.read(r, 100).decode())
        try:
            os.open("/tmp/fifo", os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            print(errno.errorcode[e.errno])  # no reader
        shell = subprocess.run("mkfifo /tmp/f2; (seq 3 > /tmp/f2 &); cat /tmp/f2", shell=True,
                               capture_output=True, text=True)
        print(shell.stdout.split(), shell.returncode)
        import time
        r, w = os.pipe()
        maker = os.fork()
        if maker == 0:
            os.mkfifo("/tmp/gone")
            me = os.getpid()
            if os.fork() == 0:  # the maker ends and is waited for: the FIFO is its parent's
                while True:
                    try:
                        os.kill(me, 0)
                    except ProcessLookupError:
                        break
                    time.sleep(0.01)
                try:
                    os.open("/tmp/gone", os.O_WRONLY | os.O_NONBLOCK)
                except OSError as e:
                    os.write(w, errno.errorcode[e.errno].encode())
                os._exit(0)
            os._exit(0)
        os.waitpid(maker, 0)
        os.close(w)
        print(os.read(r, 100).decode())  # no reader: a writer that does not wait is ENXIO
    """)
    assert out == ["True", "from a thread", "from sh", "100000", "ENXIO",
                   "['1', '2', '3'] 0", "ENXIO"]


def test_prlimit_reads_and_sets_another_process_of_the_tree_as_linux_does(template):
    """prlimit(pid) of a program, a forked child and the parent (from a child) gets and
    sets that process's own limits, which it then lives by; a hard limit cannot be raised
    (EPERM), and a pid of no running process of the tree is ESRCH."""
    out = run_in_clone(template, """
        import errno, os, resource, subprocess, sys
        NOFILE, CORE = resource.RLIMIT_NOFILE, resource.RLIMIT_CORE
        waits = ("import resource, sys; sys.stdin.readline(); "
                 "print(resource.getrlimit(resource.RLIMIT_NOFILE))")
        child = subprocess.Popen([sys.executable, "-c", waits], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        print(resource.prlimit(child.pid, NOFILE, (64, 512)))  # the limits before
        print(resource.prlimit(child.pid, NOFILE))
        try:
            resource.prlimit(child.pid, NOFILE, (64, 4096))
        except PermissionError:
            print("EPERM")
        child.stdin.write("go\\n")
        child.stdin.flush()
        print(child.stdout.readline().strip())  # the program lives by what it was given
        child.communicate()
        try:
            resource.prlimit(child.pid, CORE)
        except ProcessLookupError:
            print("ESRCH")  # waited for: gone
        r, w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # a forked child sets its parent's limits, then reads its own
            parent = os.getppid()
            resource.prlimit(parent, CORE, (4096, resource.RLIM_INFINITY))
            os.read(go_r, 1)
            os.write(w, repr(resource.getrlimit(CORE)).encode())
            os._exit(0)
        resource.prlimit(pid, CORE, (0, 100))
        os.write(go_w, b"x")
        print(os.read(r, 100).decode())
        os.waitpid(pid, 0)
        print(resource.getrlimit(CORE) == (4096, resource.RLIM_INFINITY))
        try:
            resource.prlimit(99999, CORE)
        except ProcessLookupError:
            print("ESRCH")
    """)
    assert out == ["(1024, 1024)", "(64, 512)", "EPERM", "(64, 512)", "ESRCH", "(0, 100)",
                   "True", "ESRCH"], out


def test_multiprocessing_forkserver_runs_pools_processes_queues_and_locks(template):
    """forkserver's parent binds a listener and hands it to the server it execs; each new
    process is a connection to it carrying fds (SCM_RIGHTS), which the server forks with;
    semaphores are found by name in /dev/shm (glibc links them there)."""
    out = run_in_clone(template, """
        import multiprocessing as mp
        ctx = mp.get_context("forkserver")
        with ctx.Pool(2) as pool:
            print(pool.map(work.square, range(6)))
        q, lock = ctx.Queue(), ctx.Lock()
        a, b = ctx.Pipe()
        for i in range(2):  # one after another: the server waits for the next
            p = ctx.Process(target=work.fill, args=({}, [], q, lock, i))
            p.start()
            p.join(30)
            print(p.exitcode, q.get(timeout=30) == p.pid)
    """, prelude=IMPORT_WORK)
    assert out == ["[0, 1, 4, 9, 16, 25]", "0 True", "0 True"], out


def test_scm_rights_passes_pipes_between_processes_of_the_tree(template):
    """sendmsg's SCM_RIGHTS over a connection between two processes (a socketpair a child
    inherited, a connection to a listener in another process): the pipe ends it carries
    are the receiver's, the bytes written through them the other's."""
    out = run_in_clone(template, """
        import os, socket
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            parent.close()
            msg, fds, _, _ = socket.recv_fds(child, 100, 4)
            os.write(fds[1], msg.upper())  # the parent's pipe, written here
            os.close(fds[1])
            os._exit(0)
        child.close()
        r, w = os.pipe()
        socket.send_fds(parent, [b"through the pipe"], [r, w])
        os.close(w)
        os.waitpid(pid, 0)
        print(os.read(r, 100).decode())
    """)
    assert out == ["THROUGH THE PIPE"], out


def test_a_tcp_listener_in_one_process_is_connectable_from_the_whole_tree(template):
    """One loopback for the tree: a port a process listens on is reached from its parent
    and its sibling, with inet addresses at both ends; a bind of it elsewhere is
    EADDRINUSE; once its process ended, a connect there is refused."""
    out = run_in_clone(template, """
        import errno, os, socket
        def connect(port):
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            c.sendall(b"hi")
            said, peer = c.recv(100).decode().split(" ", 1)
            return said, c.getpeername() == ("127.0.0.1", port), peer == str(c.getsockname())
        r, w = os.pipe()
        done_r, done_w = os.pipe()
        server = os.fork()
        if server == 0:
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            os.write(w, str(listener.getsockname()[1]).encode())
            for _ in range(2):
                c, peer = listener.accept()
                assert c.getsockname() == listener.getsockname()
                c.sendall(c.recv(10).upper() + b" " + str(peer).encode())
                c.close()
            os.read(done_r, 1)
            os._exit(0)
        port = int(os.read(r, 10))
        print(connect(port))
        sibling = os.fork()
        if sibling == 0:  # up to the parent's monitor, then down to the server's
            os.write(w, repr(connect(port)).encode())
            os._exit(0)
        os.waitpid(sibling, 0)
        print(os.read(r, 200).decode())
        taken = socket.socket()
        try:
            taken.bind(("127.0.0.1", port))
        except OSError as e:
            print("bind", errno.errorcode[e.errno])
        os.write(done_w, b"x")
        os.waitpid(server, 0)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError as e:
            print("after", errno.errorcode[e.errno])
    """)
    assert out == ["('HI', True, True)", "('HI', True, True)", "bind EADDRINUSE",
                   "after ECONNREFUSED"]


def test_a_server_program_and_an_asyncio_client_reach_each_other_over_tcp(template):
    """A child program serving HTTP on a port it chose, fetched by its parent with
    urllib; a forked child's asyncio client (a non-blocking connect, and the child has a
    copy of the listener) talking to the listener its parent holds; a listener passed to
    a program (pass_fds) accepting there while its parent keeps its own copy."""
    out = run_in_clone(template, """
        import asyncio, os, socket, subprocess, sys, urllib.request
        program = "\\n".join([
            "import http.server",
            "class Hello(http.server.BaseHTTPRequestHandler):",
            "    def do_GET(self):",
            "        body = ('hello ' + self.path).encode()",
            "        self.send_response(200)",
            "        self.send_header('Content-Length', str(len(body)))",
            "        self.end_headers()",
            "        self.wfile.write(body)",
            "s = http.server.HTTPServer(('127.0.0.1', 0), Hello)",
            "print(s.server_address[1], flush=True)",
            "s.handle_request()"])
        server = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        port = int(server.stdout.readline())
        print(urllib.request.urlopen(f"http://127.0.0.1:{port}/x", timeout=10).read().decode())
        print(server.wait(10))
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = os.fork()
        if client == 0:
            async def talk():
                reader, writer = await asyncio.open_connection(*listener.getsockname())
                writer.write(b"ping")
                await writer.drain()
                return await reader.read(10)
            os._exit(0 if asyncio.run(talk()) == b"PING" else 1)
        c, _ = listener.accept()
        c.sendall(c.recv(10).upper())
        print(os.waitpid(client, 0)[1])
        given = subprocess.Popen([sys.executable, "-c", "\\n".join([
            "import socket, sys",
            "listener = socket.socket(fileno=int(sys.argv[1]))",
            "c, _ = listener.accept()",
            "c.sendall(c.recv(10).upper())"]), str(listener.fileno())],
            pass_fds=[listener.fileno()])
        c = socket.create_connection(listener.getsockname(), timeout=10)
        c.sendall(b"given")
        print(c.recv(10).decode(), given.wait(10))
    """)
    assert out == ["hello /x", "0", "0", "GIVEN 0"], out


def test_forked_workers_share_one_accept_queue_each_connection_served_once(template):
    """A pre-fork server: the parent listens and forks 3 workers that block in accept on
    their copies, then closes its own; 12 connections from the parent are each served by
    exactly one worker. Then 3 workers that select() on a non-blocking listener and accept
    (EAGAIN when another took it), reached from a forked client; shutdown of the listener by
    the parent fails the accept of a worker waiting there, as on Linux (EINVAL)."""
    out = run_in_clone(template, """
        import errno, os, select, signal, socket
        def serve(listener, selects):
            signal.signal(signal.SIGTERM, lambda s, f: os._exit(0))
            while True:
                if selects:
                    select.select([listener], [], [])
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        continue
                    conn.setblocking(True)
                else:
                    conn, _ = listener.accept()
                with conn:
                    conn.sendall(b"%d %s" % (os.getpid(), conn.recv(100)))
        def workers(listener, selects):
            pids = []
            for _ in range(3):
                pid = os.fork()
                if pid == 0:
                    try:
                        serve(listener, selects)
                    finally:
                        os._exit(1)
                pids.append(pid)
            return pids
        def ask(address, n):
            with socket.create_connection(address, timeout=30) as c:
                c.sendall(b"request %d" % n)
                pid, said = c.recv(100).decode().split(" ", 1)
                return int(pid), said
        def stop(pids):
            for pid in pids:
                os.kill(pid, signal.SIGTERM)
            return sorted(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids)
        listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        address = listener.getsockname()
        pids = workers(listener, False)
        listener.close()
        answers = [ask(address, n) for n in range(12)]
        print(sorted(said for _, said in answers) == sorted("request %d" % n for n in range(12)),
              {pid for pid, _ in answers} <= set(pids), stop(pids))
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        address = listener.getsockname()
        pids = workers(listener, True)
        r, w = os.pipe()
        client = os.fork()
        if client == 0:
            os.write(w, repr([ask(address, n) for n in range(12)]).encode())
            os._exit(0)
        answers = eval(os.read(r, 1 << 16))
        os.waitpid(client, 0)
        print(sorted(said for _, said in answers) == sorted("request %d" % n for n in range(12)),
              {pid for pid, _ in answers} <= set(pids), stop(pids))
        listener.close()
        listener = socket.create_server(("127.0.0.1", 0))
        ready_r, ready_w = os.pipe()
        waiter = os.fork()
        if waiter == 0:
            os.write(ready_w, b"x")
            try:
                listener.accept()
            except OSError as e:
                os._exit(e.errno)
            os._exit(0)
        os.read(ready_r, 1)
        listener.shutdown(socket.SHUT_RDWR)
        print(errno.errorcode[os.waitstatus_to_exitcode(os.waitpid(waiter, 0)[1])])
    """)
    assert out == ["True True [0, 0, 0]", "True True [0, 0, 0]", "EINVAL"], out


def test_forking_tcp_server_accepts_in_the_parent_and_serves_in_children(template):
    """socketserver's ForkingTCPServer: the parent accepts each connection (its listener
    shared with the children it forked) and a child serves it, the clients threads of the
    parent."""
    out = run_in_clone(template, """
        import os, socket, socketserver, threading
        class Upper(socketserver.StreamRequestHandler):
            def handle(self):
                self.wfile.write(b"%d " % os.getpid() + self.rfile.readline().upper())
        server = socketserver.ForkingTCPServer(("127.0.0.1", 0), Upper)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        seen = []
        for n in range(4):
            with socket.create_connection(server.server_address, timeout=30) as c:
                c.sendall(b"line %d\\n" % n)
                pid, said = c.makefile().readline().split(" ", 1)
                seen.append((int(pid) != os.getpid(), said.strip()))
        server.shutdown()
        server.server_close()
        print(seen)
    """)
    assert out == ["[(True, 'LINE 0'), (True, 'LINE 1'), (True, 'LINE 2'), (True, 'LINE 3')]"]
