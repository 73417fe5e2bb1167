"""Signals between the processes of one invocation's tree, as on Linux (libos/proctree.py).

Each test is a small guest program; what it prints is what Linux prints.
"""

import pytest

from guest_code import run_lines as run

pytestmark = pytest.mark.kvm


def test_a_child_signals_its_parent_whose_handler_runs_while_it_waits(usf):
    out = run(usf, """
        import os, signal, subprocess, sys
        got = []
        signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))
        p = subprocess.Popen([sys.executable, "-I", "-c",
                              "import os, signal; os.kill(os.getppid(), signal.SIGUSR1)"])
        print(p.wait(), got == [signal.SIGUSR1])
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
        pid = os.fork()
        if pid == 0:
            os.kill(os.getppid(), signal.SIGUSR2)
            os._exit(3)
        info = signal.sigwaitinfo({signal.SIGUSR2})
        print(info.si_pid == pid, info.si_code, info.si_uid == os.getuid())
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})
    """, timeout=90)
    assert out == ["0 True", "True 0 True", "3"]


def test_sigchld_tells_the_parent_which_child_ended_and_how(usf):
    out = run(usf, """
        import os, signal, time
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        info = signal.sigwaitinfo({signal.SIGCHLD})
        print(info.si_pid == pid, info.si_code == os.CLD_EXITED, info.si_status)
        os.waitpid(pid, 0)
        pid = os.fork()
        if pid == 0:
            while True:
                time.sleep(60)
        os.kill(pid, signal.SIGTERM)
        info = signal.sigwaitinfo({signal.SIGCHLD})
        print(info.si_pid == pid, info.si_code == os.CLD_KILLED, info.si_status)
        os.waitpid(pid, 0)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        reaped = []
        signal.signal(signal.SIGCHLD, lambda s, f: reaped.append(os.waitpid(-1, os.WNOHANG)))
        pid = os.fork()
        if pid == 0:
            os._exit(4)
        deadline = time.monotonic() + 30
        while not reaped and time.monotonic() < deadline:
            time.sleep(0.01)
        print(reaped[0][0] == pid, os.waitstatus_to_exitcode(reaped[0][1]))
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are then reaped at once
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            print("ECHILD")
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    """, timeout=90)
    assert out == ["True True 7", "True True 15", "True 4", "ECHILD"]


def test_a_signal_from_a_child_interrupts_a_parent_blocked_in_a_wait(usf):
    out = run(usf, """
        import os, select, signal, threading, time

        class Interrupted(Exception):
            pass

        def interrupt(s, f):
            raise Interrupted

        signal.signal(signal.SIGUSR1, interrupt)
        r, w = os.pipe()
        lock = threading.Lock()
        lock.acquire()
        ep = select.epoll()
        ep.register(r, select.EPOLLIN)
        waits = {"read": lambda: os.read(r, 1), "select": lambda: select.select([r], [], []),
                 "epoll": ep.poll, "futex": lock.acquire, "sleep": lambda: time.sleep(60),
                 "wait4": lambda: os.waitpid(-1, 0)}
        for name, wait in waits.items():
            try:
                if os.fork() == 0:
                    time.sleep(0.2)  # the parent is likely in its wait by then
                    os.kill(os.getppid(), signal.SIGUSR1)
                    time.sleep(0.5 if name == "wait4" else 0)
                    os._exit(0)
                wait()
            except Interrupted:
                print(name, "interrupted")
            os.wait()
        signal.siginterrupt(signal.SIGUSR1, False)  # SA_RESTART: the read goes on
        signal.signal(signal.SIGUSR1, lambda s, f: None)
        pid = os.fork()
        if pid == 0:
            os.kill(os.getppid(), signal.SIGUSR1)
            time.sleep(0.2)
            os.write(w, b"x")
            os._exit(0)
        print(os.read(r, 1), os.waitpid(pid, 0)[1])
    """, timeout=120)
    assert out == ["read interrupted", "select interrupted", "epoll interrupted",
                   "futex interrupted", "sleep interrupted", "wait4 interrupted", "b'x' 0"]


def test_siblings_grandchildren_and_groups_signal_each_other(usf):
    out = run(usf, """
        import os, signal, time
        root = os.getpid()
        got = []
        signal.signal(signal.SIGUSR2, lambda s, f: got.append(s))
        r, w = os.pipe()
        sibling = os.fork()
        if sibling == 0:
            signal.signal(signal.SIGUSR1, lambda s, f: os._exit(5))
            os.write(w, b"x")
            while True:
                time.sleep(60)
        os.read(r, 1)
        middle = os.fork()
        if middle == 0:
            grandchild = os.fork()
            if grandchild == 0:
                os.kill(sibling, signal.SIGUSR1)  # up two levels, down another branch
                os.kill(root, signal.SIGUSR2)  # its grandparent, the USF
                os._exit(0)
            os._exit(os.waitstatus_to_exitcode(os.waitpid(grandchild, 0)[1]))
        print([os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in (middle, sibling)])
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        print(got == [signal.SIGUSR2], os.getpgrp() == root, os.getsid(0) == root)
        leader = os.fork()
        if leader == 0:
            os.setpgid(0, 0)
            signal.signal(signal.SIGUSR1, lambda s, f: os._exit(6))
            os.write(w, b"x")
            while True:
                time.sleep(60)
        os.read(r, 1)
        print(os.getpgid(leader) == leader)
        os.killpg(leader, signal.SIGUSR1)
        print(os.waitstatus_to_exitcode(os.waitpid(leader, 0)[1]))
    """, timeout=120)
    assert out == ["[0, 5]", "True True True", "True", "6"]


def test_kill_of_a_pid_outside_the_tree_is_esrch_and_signal_zero_probes(usf):
    out = run(usf, """
        import errno, os, signal
        def probe(pid, sig=0):
            try:
                os.kill(pid, sig)
                return 0
            except OSError as e:
                return errno.errorcode[e.errno]
        print(probe(4321), probe(os.getpid()), probe(-4321), probe(4321, signal.SIGKILL))
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
            pass
        print(probe(pid))  # ended, not yet waited for: it still exists
        os.waitpid(pid, 0)
        print(probe(pid), probe(os.getpid(), 65))
    """, timeout=60)
    assert out == ["ESRCH 0 ESRCH ESRCH", "0", "ESRCH EINVAL"]


def test_pidfds_name_a_child_and_asyncio_child_watchers_see_it_end(usf):
    out = run(usf, """
        import asyncio, os, select, signal, sys, time, warnings
        pid = os.fork()
        if pid == 0:
            while True:
                time.sleep(60)
        fd = os.pidfd_open(pid)
        print(select.select([fd], [], [], 0)[0] == [])
        signal.pidfd_send_signal(fd, signal.SIGTERM)
        print(select.select([fd], [], [], 30)[0] == [fd],
              os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        os.close(fd)
        own = os.open(f"/proc/{os.getpid()}", os.O_DIRECTORY)
        signal.pidfd_send_signal(own, 0)
        os.close(own)
        warnings.simplefilter("ignore", DeprecationWarning)  # the watchers, in 3.12
        for watcher in (asyncio.SafeChildWatcher(), asyncio.PidfdChildWatcher()):
            async def main():
                watcher.attach_loop(asyncio.get_running_loop())
                asyncio.get_event_loop_policy().set_child_watcher(watcher)
                p = await asyncio.create_subprocess_exec(sys.executable, "-I", "-c",
                                                         "raise SystemExit(3)")
                return await p.wait()
            print(type(watcher).__name__, asyncio.run(main()))
        asyncio.get_event_loop_policy().set_child_watcher(None)
    """, timeout=120)
    assert out == ["True", "True -15", "SafeChildWatcher 3", "PidfdChildWatcher 3"]


def test_a_vfork_child_takes_none_of_its_parents_signals(usf):
    # The child unblocks every signal before its execve (posix_spawn's setsigmask): the
    # one pending for its parent is the parent's, and runs there once it unblocks it.
    out = run(usf, """
        import os, signal, sys
        got = []
        signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        os.kill(os.getpid(), signal.SIGUSR1)
        pid = os.posix_spawn(sys.executable, [sys.executable, "-c", "pass"], os.environ,
                             setsigmask=())
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), got)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
        print(got == [signal.SIGUSR1])
    """, timeout=60)
    assert out == ["0 []", "True"]


def test_tgkill_reaches_a_thread_of_another_process(usf):
    out = run(usf, '''
        import ctypes, os, signal, subprocess, sys
        libc = ctypes.CDLL(None, use_errno=True)
        TGKILL, TKILL = 234, 200
        child = subprocess.Popen([sys.executable, "-c", """
        import os, signal, threading, time
        # The handler takes no lock (an Event's would be the main thread's own inside
        # ran.wait: a deadlock) and the wait sees a signal that comes just before it.
        ran = []
        signal.signal(signal.SIGUSR1, lambda s, f: ran.append(s))
        def other():  # SIGUSR2 blocked here only: one for this thread stays pending on it
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
            print(threading.get_native_id(), flush=True)
            while signal.SIGUSR2 not in signal.sigpending():
                time.sleep(0.01)
            print("pending on the thread", flush=True)
        t = threading.Thread(target=other); t.start()
        t.join()
        end = time.monotonic() + 30
        while not ran and time.monotonic() < end:
            time.sleep(0.01)
        print("handler ran" if ran else "no handler", flush=True)
        """], stdout=subprocess.PIPE, text=True)
        tid = int(child.stdout.readline())
        print(libc.syscall(TGKILL, child.pid, tid, signal.SIGUSR2), ctypes.get_errno())
        print(child.stdout.readline().strip())
        print(libc.syscall(TKILL, child.pid, signal.SIGUSR1), ctypes.get_errno())
        print(child.stdout.readline().strip(), child.wait())
        for args in ((TGKILL, child.pid, child.pid, 0), (TGKILL, 99999, 1, 0), (TKILL, 99999, 0)):
            print(libc.syscall(*args), ctypes.get_errno())  # ended, or never there: ESRCH
    ''')
    assert out == ["0 0", "pending on the thread", "0 0", "handler ran 0",
                   "-1 3", "-1 3", "-1 3"]
