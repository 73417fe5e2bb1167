"""Timed waits end no earlier than their timeout on the guest's own clock, as on Linux,
even while the vDSO's clock runs slow against the host's; the guest's clocks in child
programs, clones and rollbacks."""

import textwrap
import time

import pytest

from guest_code import run_lines, run_ok
from usetl.etl import UrlPolicy
from usetl.libos.clock import GuestClock
from usetl.libos.vdso import VdsoClock, tsc_usable
from usetl.usf import start_usf

pytestmark = pytest.mark.kvm

WAIT = 0.05  # each wait's timeout, seconds
TOO_LONG = 1.0  # a wait this much past its timeout is a bug, even under load

# Each kind of timed wait the monitor serves, timed out once: "name seconds" on its clock.
WAITS = """
    import asyncio, ctypes, errno, os, queue, select, signal, socket, threading, time
    D = {wait}
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    class timespec(ctypes.Structure):
        _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]
    def rel(seconds):
        return ctypes.byref(timespec(0, int(seconds * 1e9)))
    def at(clock, seconds):
        ns = time.clock_gettime_ns(clock) + int(seconds * 1e9)
        return ctypes.byref(timespec(ns // 10**9, ns % 10**9))
    MONO, REAL = time.CLOCK_MONOTONIC, time.CLOCK_REALTIME
    FUTEX_WAIT, FUTEX_WAIT_BITSET, FUTEX_CLOCK_REALTIME = 0, 9, 256
    word = ctypes.c_uint32(0)
    def futex(op, timeout):
        return libc.syscall(202, ctypes.byref(word), op, 0, timeout, None, 0xFFFFFFFF)
    sem = ctypes.create_string_buffer(64); libc.sem_init(sem, 0, 0)
    mutex, cond = ctypes.create_string_buffer(64), ctypes.create_string_buffer(64)
    libc.pthread_mutex_init(mutex, None); libc.pthread_cond_init(cond, None)
    held = threading.Lock(); held.acquire()
    r, w = os.pipe()
    ep = select.epoll(); ep.register(r, select.EPOLLIN)
    events = ctypes.create_string_buffer(12)
    peer = socket.create_connection(("127.0.0.1", {port}))
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                    (0).to_bytes(8, "little") + int(D * 1e6).to_bytes(8, "little"))
    timed = socket.create_connection(("127.0.0.1", {port})); timed.settimeout(D)
    quiet, _ = socket.socketpair()  # in the guest: the monitor keeps their timeouts
    full, unread = socket.socketpair()
    usec = (0).to_bytes(8, "little") + int(D * 1e6).to_bytes(8, "little")
    quiet.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, usec)
    full.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, usec)
    full.setblocking(False)
    while True:
        try:
            full.send(bytes(65536))
        except BlockingIOError:
            break
    full.setblocking(True)
    class itimerspec(ctypes.Structure):
        _fields_ = [("interval", timespec), ("value", timespec)]
    tfd = libc.timerfd_create(MONO, 0)
    tep = select.epoll(); tep.register(tfd, select.EPOLLIN)
    def timerfd(wait):
        libc.timerfd_settime(tfd, 0, ctypes.byref(itimerspec(timespec(0, 0),
                                                             timespec(0, int(D * 1e9)))), None)
        wait()
        assert int.from_bytes(os.read(tfd, 8), "little") == 1  # one expiry, not more
    signal.signal(signal.SIGALRM, lambda *_: None)
    signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGUSR2}})
    def cond_timedwait():
        libc.pthread_mutex_lock(mutex)
        libc.pthread_cond_timedwait(cond, mutex, at(REAL, D))
        libc.pthread_mutex_unlock(mutex)
    def alarm():
        signal.setitimer(signal.ITIMER_REAL, D); signal.pause()
    def fails(call, *errors):
        try:
            call()
        except errors:
            return
        raise AssertionError(f"{{call}} did not time out")
    async def asleep():
        loop = asyncio.get_running_loop(); t0 = loop.time()
        await asyncio.sleep(D)
        return loop.time() - t0
    kinds = {{
        "futex": (MONO, lambda: futex(FUTEX_WAIT, rel(D))),
        "futex-abs-monotonic": (MONO, lambda: futex(FUTEX_WAIT_BITSET, at(MONO, D))),
        "futex-abs-realtime": (REAL, lambda: futex(FUTEX_WAIT_BITSET | FUTEX_CLOCK_REALTIME,
                                                   at(REAL, D))),
        "sem_timedwait": (REAL, lambda: libc.sem_timedwait(sem, at(REAL, D))),
        "pthread_cond_timedwait": (REAL, cond_timedwait),
        "lock-acquire": (MONO, lambda: held.acquire(timeout=D)),
        "event-wait": (MONO, lambda: threading.Event().wait(D)),
        "queue-get": (MONO, lambda: fails(lambda: queue.Queue().get(timeout=D), queue.Empty)),
        "poll": (MONO, lambda: select.poll().poll(D * 1000)),
        "ppoll": (MONO, lambda: libc.ppoll(None, 0, rel(D), None)),
        "select": (MONO, lambda: select.select([r], [], [], D)),
        "pselect": (MONO, lambda: libc.pselect(0, None, None, None, rel(D), None)),
        "epoll_wait": (MONO, lambda: ep.poll(D)),
        "epoll_pwait2": (MONO, lambda: libc.syscall(441, ep.fileno(), events, 1, rel(D),
                                                    None, 8)),
        "nanosleep": (MONO, lambda: libc.nanosleep(rel(D), None)),
        "clock_nanosleep": (MONO, lambda: libc.clock_nanosleep(MONO, 0, rel(D), None)),
        "clock_nanosleep-abstime": (MONO, lambda: libc.clock_nanosleep(MONO, 1, at(MONO, D),
                                                                       None)),
        "clock_nanosleep-realtime-abstime": (REAL, lambda: libc.clock_nanosleep(
            REAL, 1, at(REAL, D), None)),
        "time-sleep": (MONO, lambda: time.sleep(D)),
        "setitimer": (MONO, alarm),
        "sigtimedwait": (MONO, lambda: signal.sigtimedwait({{signal.SIGUSR2}}, D)),
        "recv-so_rcvtimeo": (MONO, lambda: fails(lambda: peer.recv(1), BlockingIOError)),
        "recv-settimeout": (MONO, lambda: fails(lambda: timed.recv(1), TimeoutError)),
        "socketpair-so_rcvtimeo": (MONO, lambda: fails(lambda: quiet.recv(1), BlockingIOError)),
        "socketpair-so_sndtimeo": (MONO, lambda: fails(lambda: full.send(bytes(65536)),
                                                       BlockingIOError)),
        "timerfd-read": (MONO, lambda: timerfd(lambda: None)),
        "timerfd-epoll": (MONO, lambda: timerfd(lambda: tep.poll(5))),
    }}
    def measure():
        for name, (clock, wait) in kinds.items():
            t0 = time.clock_gettime(clock); wait(); took = time.clock_gettime(clock) - t0
            print(name, took)
        print("asyncio-sleep", asyncio.run(asleep()))
    measure()
    # Again with a second thread: the waits leave the vCPU instead of waiting in place.
    stop = threading.Event(); other = threading.Thread(target=stop.wait); other.start()
    measure()
    stop.set(); other.join()
    """


class SlowRate(VdsoClock):
    """A calibration 2% slow, as one taken under load can be: between anchors the guest's
    clock runs behind the host's."""

    def _mult(self, now: tuple[int, int, int]) -> int:
        return super()._mult(now) * 98 // 100


def timed_waits(usf, stalling_port) -> dict[str, list[float]]:
    """How long each kind of timed wait took on the guest's clock, alone and with a thread."""
    usf.kernel.allow_sockets(UrlPolicy([f"http://127.0.0.1:{stalling_port}/"]))
    lines = run_lines(usf, textwrap.dedent(WAITS).format(wait=WAIT, port=stalling_port))
    took: dict[str, list[float]] = {}
    for line in lines:
        name, seconds = line.split()
        took.setdefault(name, []).append(float(seconds))
    return took


def assert_on_time(took: dict[str, list[float]]) -> None:
    assert len(took) == 28 and all(len(t) == 2 for t in took.values()), took
    early = {name: t for name, t in took.items() if min(t) < WAIT}
    late = {name: t for name, t in took.items() if max(t) > WAIT + TOO_LONG}
    assert not early and not late, (early, late)


@pytest.mark.skipif(not tsc_usable(), reason="no invariant TSC: no vDSO")
def test_every_timed_wait_lasts_its_timeout_on_a_guest_clock_running_slow(image, stalling_port):
    with start_usf(image) as usf:
        k = usf.kernel
        k.clock = GuestClock(k, SlowRate())  # anchored at the request, as the real one is
        assert_on_time(timed_waits(usf, stalling_port))


def test_every_timed_wait_lasts_its_timeout_on_the_guest_clock(usf, stalling_port):
    assert_on_time(timed_waits(usf, stalling_port))


def test_a_child_program_reads_the_vdso_clock_going_on_from_its_parent_s(usf):
    if usf.kernel.clock.vdso is None:
        pytest.skip("no vDSO here: the child's clock is the host's, as its parent's")
    out = run_lines(usf, """
        import subprocess, sys, time
        before = time.monotonic()
        child = subprocess.run([sys.executable, "-c",
            "import ctypes, os, time; ctypes.CDLL('linux-vdso.so.1', mode=os.RTLD_NOLOAD); "
            "print(time.monotonic(), time.time())"], capture_output=True, text=True, check=True)
        after = time.monotonic()
        mono, wall = map(float, child.stdout.split())
        print(before <= mono <= after, wall)
        """)
    ordered, wall = out[0].split()
    assert ordered == "True" and abs(float(wall) - time.time()) < 5


def test_a_clone_reads_the_wall_time_now_and_its_monotonic_clock_goes_on(image_path):
    from usetl.hyperfork import Template

    read = "import time; print(time.monotonic(), time.time())"
    with Template.start(image_path) as template:
        readings = []
        for _ in range(2):
            with template.fork() as clone:
                for _ in range(2):
                    r = clone.run_code(read, timeout=30)
                    assert r.error is None, (r.error, r.stderr)
                    mono, wall = map(float, r.stdout.split())
                    assert abs(wall - time.time()) < 1.0  # not the template's time
                    readings.append(mono)
                    clone.rollback()
        # Never back: a clone, or a rolled-back one, reads later than the one before.
        assert readings == sorted(readings) and len(set(readings)) == len(readings)


def test_a_timerfd_counts_its_expirations_on_the_guest_clock(usf):
    out = run_lines(usf, """
        import ctypes, errno, os, select, time
        libc = ctypes.CDLL(None, use_errno=True)
        class timespec(ctypes.Structure):
            _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]
        class itimerspec(ctypes.Structure):
            _fields_ = [("interval", timespec), ("value", timespec)]
        def arm(fd, value, interval=0.0, flags=0):
            spec = itimerspec(timespec(0, int(interval * 1e9)),
                              timespec(int(value), int(value % 1 * 1e9)))
            old = itimerspec()
            assert libc.timerfd_settime(fd, flags, ctypes.byref(spec), ctypes.byref(old)) == 0
            return old
        fd = libc.timerfd_create(time.CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
        print(os.readlink(f"/proc/self/fd/{fd}"), os.get_inheritable(fd))
        try:
            os.read(fd, 8)
        except BlockingIOError:
            print("disarmed: EAGAIN")
        t0 = time.monotonic()
        arm(fd, 0.02, 0.02)  # every 20 ms
        time.sleep(0.11)
        n = int.from_bytes(os.read(fd, 8), "little")
        print("periodic", 5 <= n <= (time.monotonic() - t0) / 0.02)  # none before its time
        cur = itimerspec(); libc.timerfd_gettime(fd, ctypes.byref(cur))
        print("gettime", cur.interval.nsec, 0 < cur.value.nsec <= 20_000_000)
        old = arm(fd, 0)  # disarm: what was set comes back
        print("old", old.interval.nsec, select.select([fd], [], [], 0.05)[0])
        wall = libc.timerfd_create(time.CLOCK_REALTIME, 0)
        t0 = time.time()
        arm(wall, t0 + 0.05, flags=1)  # TFD_TIMER_ABSTIME
        p = select.poll(); p.register(wall, select.POLLIN)
        print("abstime", p.poll(5000) == [(wall, select.POLLIN)], time.time() - t0 >= 0.05)
        print("bad", libc.timerfd_create(99, 0), ctypes.get_errno(),
              libc.write(wall, b"12345678", 8), ctypes.get_errno())
        """)
    assert out == [
        "anon_inode:[timerfd] False", "disarmed: EAGAIN", "periodic True",
        "gettime 20000000 True", "old 20000000 []", "abstime True True", "bad -1 22 -1 22",
    ]


def test_clocks_that_cannot_be_set_and_cpu_clocks_by_id(usf):
    out = run_lines(usf, """
        import threading, time
        for clock in (time.CLOCK_REALTIME, time.CLOCK_MONOTONIC):
            try:
                time.clock_settime(clock, time.clock_gettime(clock))
            except OSError as e:
                print(type(e).__name__, e.errno)
        def cpu(clock):
            t1 = time.clock_gettime(clock); sum(range(100000)); t2 = time.clock_gettime(clock)
            return 0 < t1 < t2
        print(cpu(time.pthread_getcpuclockid(threading.get_ident())),
              time.pthread_getcpuclockid(threading.get_ident()) != time.CLOCK_THREAD_CPUTIME_ID)
        try:
            time.clock_gettime((~12345 << 3) | 6)  # the CPU clock of a thread there is none of
        except OSError as e:
            print(e.errno)
        """)
    assert out == ["PermissionError 1", "OSError 22", "True True", "22"]


def test_a_timerfd_a_fork_or_a_program_inherits_is_the_same_timer(usf):
    """As Linux's open file description: an expiration one process reads is gone for the
    other, a setting one makes is the other's, and absolute times stay on the guest clock."""
    out = run_lines(usf, """
        import ctypes, os, select, subprocess, sys, time
        libc = ctypes.CDLL(None, use_errno=True)
        class timespec(ctypes.Structure):
            _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]
        class itimerspec(ctypes.Structure):
            _fields_ = [("interval", timespec), ("value", timespec)]
        def arm(fd, value, interval=0.0, flags=0):
            spec = itimerspec(timespec(0, int(interval * 1e9)),
                              timespec(int(value), int(value % 1 * 1e9)))
            assert libc.timerfd_settime(fd, flags, ctypes.byref(spec), None) == 0
        def left(fd):
            cur = itimerspec()
            libc.timerfd_gettime(fd, ctypes.byref(cur))
            return cur.value.sec + cur.value.nsec / 1e9, cur.interval.nsec
        fd = libc.timerfd_create(time.CLOCK_MONOTONIC, 0)
        arm(fd, 0.01)
        time.sleep(0.05)  # expired, not read: the parent's still, once shared
        pid = os.fork()
        if pid == 0:
            arm(fd, 0.05)  # one-shot, read here
            n = int.from_bytes(os.read(fd, 8), "little")
            arm(fd, 30)  # left for the parent to see
            os._exit(n)
        print("fork", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]),
              int.from_bytes(os.read(fd, 8), "little"), 29 < left(fd)[0] <= 30)
        arm(fd, 30, 0.5)
        disarm = ("import ctypes, sys; ctypes.CDLL(None).timerfd_settime(int(sys.argv[1]), 0, "
                  "ctypes.create_string_buffer(32), None)")
        print("before", left(fd)[1], 29 < left(fd)[0] <= 30)
        subprocess.run([sys.executable, "-c", disarm, str(fd)], pass_fds=[fd], check=True)
        print("program disarmed it", left(fd))
        t0 = time.monotonic()
        arm(fd, t0 + 0.05, flags=1)  # TFD_TIMER_ABSTIME, on the guest's monotonic clock
        print("abstime", select.select([fd], [], [], 5)[0] == [fd], time.monotonic() - t0 >= 0.05)
        os.close(fd)
        """)
    assert out == ["fork 1 1 True", "before 500000000 True", "program disarmed it (0.0, 0)",
                   "abstime True True"], out


def test_a_threads_cpu_clock_counts_its_own_turns_on_the_vcpu(usf):
    out = run_lines(usf, """
        import os, resource, subprocess, sys, threading, time
        release, measured = threading.Event(), {}
        def sleeper():
            start = time.thread_time()
            clock = time.pthread_getcpuclockid(threading.get_ident())
            by_id = time.clock_gettime(clock)
            release.wait(30)
            measured["sleeper"] = time.thread_time() - start
            measured["sleeper_by_id"] = time.clock_gettime(clock) - by_id
            measured["sleeper_rusage"] = resource.getrusage(resource.RUSAGE_THREAD).ru_utime
        t = threading.Thread(target=sleeper)
        t.start()
        start = time.thread_time()
        while time.thread_time() - start < 0.3:
            sum(range(10000))
        release.set()
        t.join()
        burnt = time.thread_time() - start
        print(burnt >= 0.3, measured["sleeper"] < burnt / 2,
              measured["sleeper_by_id"] < burnt / 2, measured["sleeper_rusage"] < burnt / 2)
        print(resource.getrusage(resource.RUSAGE_THREAD).ru_utime >= 0.3,
              time.process_time() >= burnt)
        before = os.times()
        subprocess.run([sys.executable, "-c", "sum(range(3000000))"], check=True)
        after = os.times()
        print(after.children_user + after.children_system > before.children_user, after.user > 0)
        """)
    assert out == ["True True True True", "True True", "True True"]


def test_the_cpu_clocks_are_read_without_an_exit_once_asked_for_and_never_step_back(usf):
    """From the first read of a CPU clock the vDSO serves them (20,000 reads, a few
    syscalls); they never step back, sleeping does not move the process's, a thread's counts
    its own running only, and a forked child's counts from its own start."""
    r = run_ok(usf, """
        import os, threading, time
        time.process_time(), time.thread_time()  # the first reads: through the syscall
        steady = []
        for clock in (time.process_time, time.thread_time):
            values = [clock() for _ in range(10000)]
            steady.append(all(a <= b for a, b in zip(values, values[1:])))
        start = time.process_time()
        time.sleep(0.2)
        slept = time.process_time() - start
        def busy():
            begun = time.thread_time()
            while time.thread_time() - begun < 0.1:
                pass
        main = time.thread_time()
        t = threading.Thread(target=busy)
        t.start()
        t.join()
        waited = time.thread_time() - main
        parent = time.process_time()
        pid = os.fork()
        if pid == 0:
            os._exit(time.process_time() < parent)
        print(steady, slept < 0.1, waited < 0.1, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        """)
    assert r.stdout.split("\n")[0] == "[True, True] True True 1", r.stdout
    assert r.syscalls < 1000, r.syscalls
