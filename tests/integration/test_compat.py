"""Linux behaviour that CPython's own test modules (`make compat`) found missing in a USF."""

import pytest

from guest_code import run_lines as run
from usetl.usf import start_usf

pytestmark = pytest.mark.kvm


def test_an_epoll_set_keeps_a_pipe_whose_other_end_a_child_got(usf):
    # asyncio's connect_read_pipe, then a child given the write end (pass_fds): the pipe
    # becomes a host one, and the epoll entry, the parent's stdout and the data must stay.
    out = run(usf, """
        import os, select, subprocess, sys
        r, w = os.pipe()
        ep = select.epoll()
        ep.register(r, select.EPOLLIN)
        p = subprocess.Popen([sys.executable, "-c",
                              "import os, sys; os.write(int(sys.argv[1]), b'data')", str(w)],
                             pass_fds={w})
        print("child", p.wait())
        os.close(w)
        print(ep.poll(30) == [(r, select.EPOLLIN | select.EPOLLHUP)], os.read(r, 9), os.read(r, 9))
    """, timeout=60)
    assert out == ["child 0", "True b'data' b''"]


def test_pipes_and_socketpairs_stay_in_epoll_sets_and_sockets_across_fork(usf):
    # A fork makes them host ones; asyncio's self-pipe (a socketpair in its epoll set) must
    # still wake the parent's loop, and a socket must still take recv and send.
    out = run(usf, """
        import os, select, socket
        r, w = os.pipe()
        a, b = socket.socketpair()
        ep = select.epoll()
        ep.register(r, select.EPOLLIN)
        ep.register(a, select.EPOLLIN)
        pid = os.fork()
        if pid == 0:
            os.write(w, b"x")
            b.send(b"y")
            os._exit(0)
        print(os.waitpid(pid, 0)[1], sorted(ep.poll(30)) == sorted([(r, select.EPOLLIN),
              (a.fileno(), select.EPOLLIN)]), os.read(r, 1), a.recv(1))
        b.sendall(b"z")
        print(a.recv(1), a.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM)
    """, timeout=60)
    assert out == ["0 True b'x' b'y'", "b'z' True"]


def test_sigwait_pause_and_sigsuspend_leave_the_vcpu_to_other_threads(usf):
    # The signal comes from another thread: a wait that kept the vCPU would never see it.
    out = run(usf, """
        import os, signal, threading, time
        def kill_later(sig):
            time.sleep(0.2)
            os.kill(os.getpid(), sig)
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
        t = threading.Thread(target=kill_later, args=(signal.SIGUSR1,))
        t.start()
        print(signal.sigwait([signal.SIGUSR1]) == signal.SIGUSR1, signal.sigpending())
        t.join()
        start = time.monotonic()
        print(signal.sigtimedwait([signal.SIGUSR1], 0.2), time.monotonic() - start >= 0.2)
        got = []
        signal.signal(signal.SIGUSR2, lambda s, f: got.append(s))
        t = threading.Thread(target=kill_later, args=(signal.SIGUSR2,))
        t.start()
        signal.pause()
        t.join()
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])
        t = threading.Thread(target=kill_later, args=(signal.SIGUSR2,))
        t.start()
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        empty = ctypes.c_uint64(0)
        r = libc.sigsuspend(ctypes.byref(empty))
        t.join()
        print(got, r, ctypes.get_errno() == 4, signal.pthread_sigmask(signal.SIG_BLOCK, []))
    """, timeout=60)
    assert out == ["True set()", "None True", "[12, 12] -1 True {<Signals.SIGUSR1: 10>, "
                   "<Signals.SIGUSR2: 12>}"]


def test_a_lone_pause_nothing_can_end_fails_at_once_and_a_timer_ends_one(image):
    # A USF's processes get no signals from outside: with no timer, child or other thread
    # to send one, pause() would wait for ever (test_signal's interprocess test did).
    with start_usf(image) as u:  # the deadlock ends this USF's guest
        out = run(u, """
            import signal
            signal.signal(signal.SIGALRM, lambda s, f: print("alarm"))
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            signal.pause()
            print(signal.sigtimedwait([signal.SIGUSR1], 0.05))
        """)
        assert out == ["alarm", "None"]
        r = u.run_code("import signal\nsignal.pause()", timeout=30)
    assert r.error is not None and "nothing can wake them" in r.error.message, r.error


def test_copy_file_range_splice_getppid_and_setreuid(usf):
    out = run(usf, """
        import os, subprocess, sys
        with open("/tmp/src", "wb") as f:
            f.write(b"0123456789")
        src = os.open("/tmp/src", os.O_RDONLY)
        dst = os.open("/tmp/dst", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        print(os.copy_file_range(src, dst, 6, 3, 5), os.pread(dst, 20, 0),
              os.lseek(src, 0, os.SEEK_CUR))
        print(os.copy_file_range(src, dst, 4), os.lseek(src, 0, os.SEEK_CUR), os.pread(dst, 4, 0))
        r, w = os.pipe()
        print(os.splice(src, w, 3, offset_src=7), os.read(r, 10), os.lseek(src, 0, os.SEEK_CUR))
        os.write(w, b"abc")
        print(os.splice(r, dst, 2, offset_dst=1), os.pread(dst, 4, 0), os.read(r, 10))
        r2, w2 = os.pipe()
        os.write(w, b"xyz")
        print(os.splice(r, w2, 10), os.read(r2, 10))
        for bad in ((src, dst), ):
            try:
                os.splice(*bad, 1)
            except OSError as e:
                print("splice file to file", e.errno == 22)
        out = subprocess.run([sys.executable, "-c", "import os; print(os.getppid())"],
                             capture_output=True, text=True).stdout.strip()
        print(out == str(os.getpid()), os.getppid())
        os.setreuid(-1, -1)
        os.setresgid(-1, os.getgid(), -1)
        try:
            os.setuid(0)
        except PermissionError:
            print("setuid 0 EPERM")
    """, timeout=60)
    assert out == ["6 b'\\x00\\x00\\x00\\x00\\x00345678' 0", "4 4 b'0123'",
                   "3 b'789' 4", "2 b'0ab3' b'c'", "3 b'xyz'", "splice file to file True",
                   "True 0", "setuid 0 EPERM"]


def test_a_pseudo_terminal_has_linuxs_line_discipline(usf):
    # The same program on Linux prints the same lines (asyncio's pty tests, test_os's
    # test_openpty).
    out = run(usf, """
        import os, select, tty
        m, s = os.openpty()
        print(os.isatty(m), os.isatty(s), os.get_inheritable(m), os.get_inheritable(s))
        os.write(s, b"hello\\nworld")
        print(os.read(m, 100))
        os.write(m, b"ab\\x7fc\\r")  # canonical: erase, CR read as NL, all echoed
        print(os.read(s, 100), os.read(m, 100))
        tty.setraw(s)
        os.write(m, b"x\\r")
        p = select.poll()
        p.register(s, select.POLLIN)
        print(p.poll(1000) == [(s, select.POLLIN)], os.read(s, 100))
        os.write(s, b"1\\n")
        print(os.read(m, 100))
        os.close(m)
        print(os.read(s, 10))
        try:
            os.write(s, b"z")
        except OSError as e:
            print("slave write", e.errno)
        m, s = os.openpty()
        os.close(s)
        try:
            os.read(m, 1)
        except OSError as e:
            print("master read", e.errno)
    """)
    assert out == ["True True False False", "b'hello\\r\\nworld'",
                   "b'ac\\n' b'ab\\x08 \\x08c\\r\\n'", "True b'x\\r'", "b'1\\n'", "b''",
                   "slave write 5", "master read 5"]


def test_a_pseudo_terminals_slave_is_found_by_name_while_its_master_is_open(usf):
    # The same program on Linux prints the same lines.
    out = run(usf, """
        import os, pty, subprocess
        m, s = os.openpty()
        name = os.ttyname(s)
        print(name.startswith("/dev/pts/"), name[len("/dev/pts/"):] in os.listdir("/dev/pts"))
        tty = subprocess.run(["tty"], stdin=s, capture_output=True, text=True)
        again = os.open(name, os.O_RDWR | os.O_NOCTTY)
        os.write(again, b"by name\\n")
        print(tty.stdout.strip() == name, os.read(m, 100), os.ttyname(again) == name)
        pid, fd = pty.fork()
        if pid == 0:
            os.execvp("tty", ["tty"])
        child = os.read(fd, 100).decode().strip()
        os.waitpid(pid, 0)
        print(child.startswith("/dev/pts/"), child != name)
        for f in (again, s, m):
            os.close(f)
        try:
            os.open(name, os.O_RDWR | os.O_NOCTTY)
        except OSError as e:
            print("closed", e.errno)
    """)
    assert out == ["True True", "True b'by name\\r\\n' True", "True True", "closed 2"], out


def test_user_extended_attributes_on_tmpfs(usf):
    out = run(usf, """
        import errno, os
        open("/tmp/x", "w").close()
        def err(f, *a):
            try:
                f(*a)
            except OSError as e:
                return errno.errorcode[e.errno]
        print(os.listxattr("/tmp/x"), err(os.getxattr, "/tmp/x", "user.a"))
        os.setxattr("/tmp/x", "user.a", b"1")
        os.setxattr("/tmp/x", "user.b", b"", os.XATTR_CREATE)
        print(sorted(os.listxattr("/tmp/x")), os.getxattr("/tmp/x", "user.a"),
              err(os.setxattr, "/tmp/x", "user.a", b"2", os.XATTR_CREATE),
              err(os.setxattr, "/tmp/x", "user.c", b"2", os.XATTR_REPLACE))
        fd = os.open("/tmp/x", os.O_RDONLY)
        os.setxattr(fd, "user.a", b"22", os.XATTR_REPLACE)
        os.removexattr("/tmp/x", "user.b")
        print(os.listxattr(fd), os.getxattr(fd, "user.a"), err(os.removexattr, fd, "user.b"),
              err(os.setxattr, "/tmp/x", "trusted.a", b""), err(os.setxattr, "/tmp/x", "a", b""),
              err(os.setxattr, "/etc/hosts", "user.a", b""), err(os.setxattr, "/tmp/x",
              "user.big", b"x" * 65537))
    """)
    assert out == ["[] ENODATA", "['user.a', 'user.b'] b'1' EEXIST ENODATA",
                   "['user.a'] b'22' ENODATA EPERM ENOTSUP EROFS E2BIG"]
