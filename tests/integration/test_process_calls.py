"""Linux behaviour the corpus's fifth wave found missing: memfd seals, /proc/self/task and
thread names, per-thread nice values, sched_setaffinity and waitid on a pidfd."""

import pytest

from guest_code import run_lines as run
from guest_code import run_ok

pytestmark = pytest.mark.kvm


def test_memfd_seals_refuse_what_they_seal(usf):
    out = run(usf, """
        import errno, fcntl, mmap, os
        def t(f):
            try:
                return f()
            except OSError as e:
                return errno.errorcode[e.errno]
        fd = os.memfd_create("m", os.MFD_ALLOW_SEALING)
        os.write(fd, b"x" * 8192)
        m = mmap.mmap(fd, 8192)
        print(t(lambda: fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)))
        m.close()
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_GROW)
        print(t(lambda: os.pwrite(fd, b"y" * 100, 8150)), t(lambda: os.ftruncate(fd, 9000)))
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
        print(t(lambda: os.pwrite(fd, b"z", 0)), t(lambda: mmap.mmap(fd, 4096)),
              t(lambda: fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)),
              fcntl.fcntl(fd, fcntl.F_GET_SEALS))
        plain = os.memfd_create("p")
        print(fcntl.fcntl(plain, fcntl.F_GET_SEALS),
              t(lambda: fcntl.fcntl(plain, fcntl.F_ADD_SEALS, fcntl.F_SEAL_GROW)))
    """)
    assert out == ["EBUSY", "42 EPERM", "EPERM EPERM EPERM 13", "1 EPERM"]


def test_threads_are_listed_and_named_in_proc_self_task(usf):
    out = run(usf, """
        import ctypes, os, threading
        libc = ctypes.CDLL(None)
        seen, go = [], threading.Event()
        def worker():
            libc.prctl(15, b"worker-name-that-is-long", 0, 0, 0)
            buf = ctypes.create_string_buffer(16)
            libc.prctl(16, buf, 0, 0, 0)
            tid = threading.get_native_id()
            seen.append([buf.value, open(f"/proc/self/task/{tid}/comm").read()])
            seen.append(open(f"/proc/self/task/{tid}/stat").read().split()[:2])
            go.wait()
        t = threading.Thread(target=worker)
        t.start()
        while len(seen) < 2:
            os.sched_yield()
        print(sorted(map(int, os.listdir("/proc/self/task"))) == sorted([os.getpid(), t.native_id]))
        go.set()
        t.join()
        print(seen[0], seen[1][1])
    """)
    assert out == ["True", "[b'worker-name-tha', 'worker-name-tha\\n'] (worker-name-tha)"]


def test_nice_is_per_thread_and_affinity_and_pidfd_waits_work(usf):
    out = run(usf, """
        import errno, os, subprocess, sys, threading
        got = []
        def worker():
            os.setpriority(os.PRIO_PROCESS, 0, 19)
            got.append(os.getpriority(os.PRIO_PROCESS, 0))
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        print(got, os.getpriority(os.PRIO_PROCESS, 0))
        os.sched_setaffinity(0, {0})
        try:
            os.sched_setaffinity(0, {5})
        except OSError as e:
            print(errno.errorcode[e.errno], os.sched_rr_get_interval(0) > 0)
        child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(4)"])
        fd = os.pidfd_open(child.pid)
        print(os.waitid(os.P_PIDFD, fd, os.WEXITED).si_status)
        child.returncode = 4
    """, timeout=60)
    assert out == ["[19] 0", "EINVAL True", "4"]


def test_getpid_is_answered_without_an_exit_and_a_forked_child_has_its_own(usf):
    r = run_ok(usf, """
        import os, subprocess, sys
        pids = {os.getpid() for _ in range(5000)}
        pid = os.fork()
        if pid == 0:
            os._exit(os.getpid() == pid or os.getpid() in pids)
        forked = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        program = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                 capture_output=True, text=True).stdout.strip()
        print(len(pids), forked, int(program) not in pids)
        """)
    assert r.stdout == "1 0 True\n"
    assert r.syscalls < 1000, r.syscalls  # not one for each of the 5,000
