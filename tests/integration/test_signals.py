"""Signals delivered to the guest: timers, signals to itself, rt_sigframe and rt_sigreturn."""

import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from guest_code import run_lines as run
from usetl.etl.policy import UrlPolicy
from usetl.usf import UsfConfig, boot_usf, start_usf

pytestmark = pytest.mark.kvm

PROGRAMS = Path(__file__).parent / "programs"


def build(tmp_path, name):
    if not shutil.which("gcc"):
        pytest.fail("gcc is needed to build the test program")
    exe = tmp_path / name
    subprocess.run(["gcc", "-static", "-O1", "-o", str(exe), str(PROGRAMS / f"{name}.c")],
                   check=True)
    return exe


def test_a_c_program_sees_linux_signal_semantics(image, tmp_path):
    """SA_SIGINFO, SA_ONSTACK, SA_NODEFER, masks, EINTR, registers: host and USF agree."""
    exe = build(tmp_path, "signals")
    host = subprocess.run([str(exe)], capture_output=True, timeout=60)
    assert host.returncode == -signal.SIGALRM
    with boot_usf("/tmp/signals", ["/tmp/signals"], image, UsfConfig(mem_mib=32),
                  files={"signals": exe.read_bytes()}) as u:
        result = u.run_program(timeout=60)
        assert u.kernel.term_signal == signal.SIGALRM
    assert result.status == 128 + signal.SIGALRM
    assert result.stdout == host.stdout
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "siginfo 1 altstack 1 fpu 1"
    assert "registers survive 1" in lines and "not reached" not in lines


def test_alarm_interrupts_sleep_and_a_busy_loop(usf):
    out = run(usf, """
        import signal, time
        class Expired(Exception):
            pass
        calls = []
        def on_alarm(signum, frame):
            calls.append(signum)
            if len(calls) == 2:
                raise Expired
        signal.signal(signal.SIGALRM, on_alarm)
        print(signal.alarm(1), signal.alarm(1))
        t = time.monotonic(); time.sleep(1.5)  # the handler runs, then the sleep goes on
        print(calls, time.monotonic() - t >= 1.5)
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        try:
            while True:
                pass
        except Expired:
            print("busy loop ended by the handler")
        signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
        total = 0.0
        while len(calls) < 8:
            total += 0.5
        signal.setitimer(signal.ITIMER_REAL, 0)
        print(len(calls), total == int(total * 2) / 2, signal.getitimer(signal.ITIMER_REAL))
    """)
    assert out == ["0 1", "[14] True", "busy loop ended by the handler", "8 True (0.0, 0.0)"]


def test_signals_to_itself_run_handlers_and_respect_the_mask(usf):
    out = run(usf, """
        import os, signal
        seen = []
        signal.signal(signal.SIGUSR1, lambda s, f: seen.append("usr1"))
        signal.signal(signal.SIGUSR2, lambda s, f: seen.append("usr2"))
        os.kill(os.getpid(), signal.SIGUSR1); signal.raise_signal(signal.SIGUSR2)
        print(seen)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        os.kill(os.getpid(), signal.SIGUSR1)
        print(seen[2:], signal.sigpending() == {signal.SIGUSR1})
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
        print(seen[2:])
        signal.signal(signal.SIGUSR1, signal.SIG_IGN); os.kill(os.getpid(), signal.SIGUSR1)
        status = dict(l.split(":\\t") for l in open("/proc/self/status").read().splitlines())
        caught, ignored = int(status["SigCgt"], 16), int(status["SigIgn"], 16)
        bit = lambda sig: 1 << (sig - 1)
        print(len(seen), bool(caught & bit(signal.SIGUSR2)), bool(ignored & bit(signal.SIGUSR1)))
        try:
            os.kill(2, signal.SIGUSR1)
        except ProcessLookupError:
            print("other pids: ESRCH")
    """)
    assert out == ["['usr1', 'usr2']", "[] True", "['usr1']", "3 True True", "other pids: ESRCH"]


def test_an_unhandled_sigalrm_kills_the_guest_and_the_deadline_stays_the_monitors(image):
    with start_usf(image) as u:
        r = u.run_code("import signal, time\nsignal.alarm(1)\ntime.sleep(5)\n", timeout=30)
        assert r.error.type == "GuestExit"
        assert r.error.message == "the guest was killed by SIGALRM"
    with start_usf(image) as u:
        code = "import signal\nsignal.signal(signal.SIGALRM, lambda *a: None)\n"
        code += "signal.setitimer(signal.ITIMER_REAL, 0.1, 0.1)\nsignal.pause()\n"
        r = u.run_code(code + "while True:\n    signal.pause()\n", timeout=1.5)
        assert r.error.type == "Timeout"


@pytest.fixture
def answers_when_poked():
    """A TCP server on 127.0.0.1 that answers 'hello' to each connection once it reads a byte."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                if conn.recv(1):
                    conn.sendall(b"hello")

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


def test_sa_restart_restarts_an_interrupted_recv(image, tmp_path, answers_when_poked):
    exe = build(tmp_path, "restart")
    port = str(answers_when_poked)
    host = subprocess.run([str(exe), port], capture_output=True, timeout=60)
    with boot_usf("/tmp/restart", ["/tmp/restart", port], image, UsfConfig(mem_mib=32),
                  files={"restart": exe.read_bytes()}) as u:
        u.kernel.allow_sockets(UrlPolicy([f"http://127.0.0.1:{port}/"]))
        result = u.run_program(timeout=60)
    assert result.stdout == host.stdout
    assert result.stdout.decode().splitlines() == [
        "restart: 5 hello", "no restart: -1 Interrupted system call"]


def test_cpu_time_timers_send_sigvtalrm_and_sigprof_to_a_busy_guest(usf):
    out = run(usf, """
        import signal
        seen = []
        for sig in (signal.SIGVTALRM, signal.SIGPROF):
            signal.signal(sig, lambda s, f: seen.append(s))
        for which in (signal.ITIMER_VIRTUAL, signal.ITIMER_PROF):
            signal.setitimer(which, 0.2, 0.05)
            left, period = signal.getitimer(which)
            print(0 < left <= 0.2, period)
            count = len(seen)
            while len(seen) < count + 3:
                pass
            signal.setitimer(which, 0)
            print(signal.getitimer(which))
        print([signal.Signals(s).name for s in sorted(set(seen))])
    """)
    assert out == ["True 0.05", "(0.0, 0.0)", "True 0.05", "(0.0, 0.0)",
                   "['SIGVTALRM', 'SIGPROF']"]


def test_a_bogus_rt_sigreturn_ends_the_guest_not_the_monitor(image):
    with start_usf(image) as u:
        r = u.run_code("import ctypes\nctypes.CDLL(None).syscall(15)\n", timeout=30)
        assert r.error.type in ("GuestExit", "GuestFault"), r.error


def test_sigwait_and_sigtimedwait_take_blocked_signals(usf):
    out = run(usf, """
        import os, signal, time
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGALRM})
        os.kill(os.getpid(), signal.SIGUSR1)
        print(signal.sigwait({signal.SIGUSR1, signal.SIGUSR2}) == signal.SIGUSR1)
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        t = time.monotonic()
        info = signal.sigtimedwait({signal.SIGALRM}, 5)
        print(info.si_signo == signal.SIGALRM, 0.15 < time.monotonic() - t < 2)
        print(signal.sigtimedwait({signal.SIGUSR2}, 0.1), signal.sigpending())
        signal.raise_signal(signal.SIGUSR1)
        info = signal.sigwaitinfo({signal.SIGUSR1})  # glibc folds SI_TKILL into SI_USER
        print(info.si_code == 0, info.si_pid == os.getpid(), info.si_uid == os.getuid())
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1, signal.SIGALRM})
    """)
    assert out == ["True", "True True", "None set()", "True True True"]


def test_each_thread_has_its_own_signal_mask(usf):
    out = run(usf, """
        import signal, threading, time
        got = []
        signal.signal(signal.SIGALRM, lambda *a: got.append(threading.current_thread().name))
        def blocks_and_exits():  # glibc also blocks every signal as a thread exits
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGUSR1})
            print(sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])) == sorted(
                {signal.SIGALRM, signal.SIGUSR1}))
        t = threading.Thread(target=blocks_and_exits); t.start(); t.join()
        print(signal.pthread_sigmask(signal.SIG_BLOCK, []) == set())
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        sleeper = threading.Thread(target=time.sleep, args=(0.3,)); sleeper.start()
        sleeper.join()  # main waits in a futex: the alarm interrupts it, as on Linux
        print(got)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
        inherits = threading.Thread(target=lambda: print(
            signal.SIGUSR2 in signal.pthread_sigmask(signal.SIG_BLOCK, [])))
        inherits.start(); inherits.join()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})
        """)
    assert out == ["True", "True", "['MainThread']", "True"]


def test_a_signal_reaches_a_waiting_main_thread_while_another_thread_runs(usf):
    """A timer's signal, and one another thread sends the process, interrupt the main
    thread's futex, select and pipe waits (Linux prefers the main thread) while a second
    thread computes, not when that thread next waits."""
    assert run(usf, """
        import os, select, signal, threading, time
        class Interrupted(Exception):
            pass
        def interrupt(signum, frame):
            raise Interrupted
        signal.signal(signal.SIGALRM, interrupt)
        signal.signal(signal.SIGUSR1, interrupt)
        r, w = os.pipe()
        lock = threading.Lock()
        lock.acquire()
        waits = {"futex": lambda: lock.acquire(timeout=30),
                 "select": lambda: select.select([r], [], [], 30), "read": lambda: os.read(r, 1)}
        for send in ("alarm", "kill"):
            for name, wait in waits.items():
                state = {"stop": False}
                def spin():
                    if send == "kill":
                        os.kill(os.getpid(), signal.SIGUSR1)
                    end = time.monotonic() + 3  # a late signal comes only after this
                    while not state["stop"] and time.monotonic() < end:
                        pass
                    state["in time"] = state["stop"]
                spinner = threading.Thread(target=spin)
                try:  # a kill may come while start() waits for the thread: a wait too
                    spinner.start()
                    if send == "alarm":
                        signal.setitimer(signal.ITIMER_REAL, 0.05)
                    wait()
                except Interrupted:
                    state["stop"] = True
                spinner.join()
                print(send, name, state["in time"])
        """) == [f"{send} {name} True" for send in ("alarm", "kill")
                 for name in ("futex", "select", "read")]


def test_a_timer_ends_a_wait_nothing_else_could_end(usf):
    """A lone thread blocked in a write no one reads is woken by its timer's signal, not
    taken for a deadlock (CPython's test_sendall_interrupted)."""
    assert run(usf, """
        import signal, socket
        def interrupt(signum, frame):
            1 // 0
        signal.signal(signal.SIGALRM, interrupt)
        a, b = socket.socketpair()
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        try:
            a.sendall(b"x" * (16 << 20))
        except ZeroDivisionError:
            print("interrupted")
        a.close()
        b.close()
        """) == ["interrupted"]


def test_signalfd_reads_blocked_signals_and_is_pollable(usf):
    out = run(usf, """
        import asyncio, ctypes, os, select, signal, struct, subprocess
        libc = ctypes.CDLL(None, use_errno=True)
        def signalfd(fd, *sigs, flags=0):
            mask = ctypes.c_uint64(sum(1 << (s - 1) for s in sigs))
            return libc.signalfd(fd, ctypes.byref(mask), flags)
        def read(fd):  # struct signalfd_siginfo: signo, code, pid, status
            b = os.read(fd, 128 * 4)
            return len(b), *struct.unpack_from("<IiiI", b)[:3:2], struct.unpack_from("<i", b, 40)[0]
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGUSR2,
                                                  signal.SIGALRM, signal.SIGCHLD})
        fd = signalfd(-1, signal.SIGUSR1, signal.SIGALRM, flags=os.O_NONBLOCK | os.O_CLOEXEC)
        print(os.readlink(f"/proc/self/fd/{fd}"), os.get_inheritable(fd))
        for size in (128, 64):
            try:
                os.read(fd, size)
            except OSError as e:
                print(e.errno)
        os.kill(os.getpid(), signal.SIGUSR2)  # not in its set: stays pending
        os.kill(os.getpid(), signal.SIGUSR1)
        ready = lambda: select.select([fd], [], [], 0)[0]
        print(ready() == [fd], read(fd), ready())
        print(signal.sigpending() == {signal.SIGUSR2})
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        ep = select.epoll(); ep.register(fd, select.EPOLLIN | select.EPOLLET)
        print(ep.poll(10) == [(fd, select.EPOLLIN)], read(fd), ep.poll(0))
        print(signalfd(fd, signal.SIGCHLD) == fd)
        os.set_blocking(fd, True)
        child = subprocess.Popen(["/bin/sh", "-c", "exit 3"])
        print(read(fd)[1::2], child.wait())  # a blocking read waits for the child's SIGCHLD
        async def main():
            signalfd(fd, signal.SIGUSR1); os.set_blocking(fd, False)
            loop = asyncio.get_running_loop(); got = loop.create_future()
            loop.add_reader(fd, lambda: got.set_result(read(fd)[1]))
            loop.call_later(0.05, os.kill, os.getpid(), signal.SIGUSR1)
            return await got
        print(asyncio.run(main()), signalfd(0, signal.SIGUSR1), ctypes.get_errno())
    """)
    assert out == [
        "anon_inode:[signalfd] False", "11", "22",
        "True (128, 10, 0, 0) []", "True",
        "True (128, 14, 128, 0) []", "True",
        "(17, 3) 3",
        "10 -1 22",
    ]


def test_a_write_with_no_reader_sends_sigpipe(usf):
    out = run(usf, """
        import os, signal, socket, subprocess, sys
        r = subprocess.run("yes | head -2; wc -l /etc/services | true", shell=True,
                           capture_output=True, text=True)
        print(r.returncode, r.stdout.split(), repr(r.stderr))  # yes and wc end by SIGPIPE
        child = subprocess.run([sys.executable, "-c", "import os, signal; "
                                "signal.signal(signal.SIGPIPE, signal.SIG_DFL); "
                                "r, w = os.pipe(); os.close(r); os.write(w, b'x')"])
        print(child.returncode)
        got = []
        signal.signal(signal.SIGPIPE, lambda sig, frame: got.append(sig))
        r, w = os.pipe(); os.close(r)
        a, b = socket.socketpair(); b.close()
        for write in (lambda: os.write(w, b"x"), lambda: a.send(b"x", socket.MSG_NOSIGNAL),
                      lambda: a.send(b"x")):
            try:
                write()
            except BrokenPipeError as e:
                print(e.errno)
        print(got)  # the handler ran for the two writes without MSG_NOSIGNAL
    """)
    assert out == ["0 ['y', 'y'] ''", "-13", "32", "32", "32", "[13, 13]"]
