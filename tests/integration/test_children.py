"""Child processes: programs in sibling VMs (subprocess, posix_spawn), fork as a VM copy."""

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from guest_code import run_lines as run
from guest_code import run_ok
from usetl.libos.hostfs import HostDirFS
from usetl.usf import UsfConfig, start_usf
from waiting import wait_until

pytestmark = pytest.mark.kvm

PROGRAMS = Path(__file__).parent / "programs"


@pytest.fixture(scope="module")
def code_dir(tmp_path_factory):
    """The function's code directory, with a gcc-built static program in it."""
    if not shutil.which("gcc"):
        pytest.fail("gcc is needed to build the test program")
    directory = tmp_path_factory.mktemp("code")
    subprocess.run(["gcc", "-static", "-O1", "-o", str(directory / "children"),
                    str(PROGRAMS / "children.c")], check=True)
    return directory


@pytest.fixture(scope="module")
def listeners():
    """Two listening host sockets: the USF may connect to the first only."""
    socks = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    yield [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()


@pytest.fixture(scope="module")
def usf(image, code_dir, listeners):
    u = start_usf(image, UsfConfig(allow=[f"tcp://127.0.0.1:{listeners[0]}"]))
    u.kernel.ns.mount("code", HostDirFS(str(code_dir)))
    yield u
    u.close()


def descendants(pid: int) -> set[int]:
    """Every process below `pid`."""
    parents = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def forked_monitors() -> set[int]:
    """The monitors of sibling VMs of a USF run in this process: its forked copies."""
    return {p for p in descendants(os.getpid())
            if os.path.realpath(f"/proc/{p}/exe") == os.path.realpath(sys.executable)}


def test_subprocess_runs_python_in_a_sibling_vm(usf):
    r = run_ok(usf, """
        import os, subprocess, sys
        r = subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True)
        print(r.returncode, r.stdout, r.stderr)
        r = subprocess.run([sys.executable, "-c", "import sys; sys.exit('bad')"],
                           capture_output=True, text=True)
        print(r.returncode, r.stderr.strip())
        r = subprocess.run([sys.executable, "-c", "import sys; print(sys.stdin.read()[::-1])"],
                           input=b"olleh", capture_output=True)
        print(r.stdout)
        sys.stdout.flush()
        subprocess.run([sys.executable, "-c", "print('straight to our stdout')"])
        pid = os.posix_spawn(sys.executable, [sys.executable, "-c", "import os; os._exit(4)"],
                             os.environ)
        child, status = os.waitpid(pid, 0)
        print("posix_spawn", child == pid, os.waitstatus_to_exitcode(status))
        try:
            subprocess.run(["/code/missing"])
        except FileNotFoundError as e:
            print("missing", e.errno)
    """, timeout=60)
    assert r.stdout.splitlines() == [
        "0 b'1\\n' b''", "1 bad", "b'hello\\n'", "straight to our stdout", "posix_spawn True 4",
        "missing 2",
    ]


def test_a_static_c_program_shipped_with_the_function_and_a_pipeline(usf):
    out = run(usf, """
        import subprocess, sys
        r = subprocess.run(["/code/children", "hello", "a", "b"], capture_output=True)
        print(r.returncode, r.stdout.decode().strip())
        first = subprocess.Popen([sys.executable, "-c", "print('a pipe between children')"],
                                 stdout=subprocess.PIPE)
        second = subprocess.Popen(["/code/children", "upper"], stdin=first.stdout,
                                  stdout=subprocess.PIPE)
        first.stdout.close()
        print(second.communicate()[0].decode().strip(), first.wait(), second.returncode)
    """, timeout=60)
    assert out == ["7 hello from C with 4 args", "A PIPE BETWEEN CHILDREN 0 0"]


def test_a_childs_cpu_time_is_reported_by_wait4_and_billed_to_the_invocation(usf):
    r = run_ok(usf, """
        import os, resource, sys
        pid = os.posix_spawn(sys.executable, [sys.executable, "-c", "sum(range(10**6))"],
                             os.environ)
        child, status, usage = os.wait4(pid, 0)
        waited = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = usage.ru_utime + usage.ru_stime
        print(child == pid, status, usage.ru_maxrss > 0,
              abs(waited.ru_utime + waited.ru_stime - cpu) < 1e-5)
        print(cpu)
    """, timeout=60)
    checks, cpu = r.stdout.splitlines()
    assert checks == "True 0 True True"
    # The child's monitor ran its VM: the host measured its CPU, which the invocation pays.
    assert float(cpu) > 0
    assert r.guest_cpu_ms >= float(cpu) * 1e3


def test_a_vfork_child_may_only_set_up_its_program_and_execve_checks_its_arguments(usf):
    r = run_ok(usf, """
        import subprocess
        r = subprocess.run(["/code/children", "vfork"], capture_output=True, text=True)
        print(r.stdout.strip())
        print(r.stderr.strip())
    """, timeout=60)
    errnos, note = r.stdout.splitlines()
    # EPERM for getcwd before execve; then EFAULT, EFAULT, EACCES, EFAULT, ENOENT, EACCES, EFAULT
    assert errnos == "1 14 14 13 14 2 13 14"
    assert note == ("usetl: getcwd in a child before execve refused: a vfork child only sets "
                    "up the program it runs")


def test_a_childs_writes_to_tmp_reach_its_parent_when_it_ends(usf):
    out = run(usf, """
        import os, subprocess, sys
        open("/tmp/in.txt", "w").write("hello")
        open("/tmp/gone.txt", "w").write("x")
        subprocess.run([sys.executable, "-c", (
            "import os\\n"
            "data = open('/tmp/in.txt').read()\\n"
            "os.makedirs('/tmp/out/deep')\\n"
            "open('/tmp/out/deep/res.txt', 'w').write(data.upper())\\n"
            "open('/tmp/in.txt', 'a').write('!')\\n"
            "os.remove('/tmp/gone.txt')\\n")], check=True)
        print(open("/tmp/out/deep/res.txt").read(), open("/tmp/in.txt").read(),
              os.path.exists("/tmp/gone.txt"))
        pid = os.fork()
        if pid == 0:
            open("/tmp/forked.txt", "w").write("from a fork")
            os._exit(0)
        os.waitpid(pid, 0)
        print(open("/tmp/forked.txt").read())
    """, timeout=60)
    assert out == ["HELLO hello! False", "from a fork"]


def test_children_are_killed_by_timeout_and_by_signals(usf):
    others = forked_monitors()  # other tests' templates and their clones, if still there
    out = run(usf, """
        import signal, subprocess, sys
        sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
        try:
            subprocess.run(sleeper, timeout=0.5)
        except subprocess.TimeoutExpired:
            print("timed out")
        p = subprocess.Popen(sleeper)
        p.terminate()
        print(p.wait())
        p = subprocess.Popen(sleeper)
        p.send_signal(signal.SIGCHLD)  # ignored by default: it runs on
        print(p.poll())
        p.kill()
        print(p.wait())
    """, timeout=60)
    assert out == ["timed out", "-15", "None", "-9"]
    assert usf.kernel.children.running == {}
    # A child's monitor reports its end, then exits.
    wait_until(lambda: not forked_monitors() - others, "the children's monitors to exit")


def test_a_childs_own_signal_handlers_run_when_its_parent_signals_it(usf):
    out = run(usf, """
        import os, signal, subprocess, sys, time
        code = (
            "import os, signal, sys, time\\n"
            "signal.signal(signal.SIGUSR1, lambda s, f: os.write(1, b'usr1\\\\n'))\\n"
            "def term(s, f):\\n"
            "    os.write(1, b'term\\\\n')\\n"
            "    sys.exit(5)\\n"
            "signal.signal(signal.SIGTERM, term)\\n"
            "os.write(1, b'ready\\\\n')\\n"  # unbuffered: a handler may run as it returns
            "while True: time.sleep(60)\\n")
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        print(p.stdout.readline().strip())
        p.send_signal(signal.SIGUSR1)
        print(p.stdout.readline().strip())
        p.terminate()
        print(p.stdout.read().strip(), p.wait())
        ignoring = subprocess.Popen([sys.executable, "-c", (
            "import signal, time\\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
            "print('ready', flush=True)\\n"
            "time.sleep(60)\\n")], stdout=subprocess.PIPE)
        ignoring.stdout.readline()
        ignoring.terminate()
        print(ignoring.poll())
        ignoring.kill()
        print(ignoring.wait())
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGUSR2, lambda s, f: os._exit(9))
            os.write(w, b"x")
            while True:
                time.sleep(60)
        os.read(r, 1)
        os.kill(pid, signal.SIGUSR2)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    """, timeout=90)
    assert out == ["ready", "usr1", "term 5", "None", "-9", "9"]


def test_execve_by_a_process_itself_scripts_and_the_shell(usf):
    out = run(usf, """
        import os, subprocess, sys
        def script(path, text):
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o755)
        script("/tmp/script.py", "#!" + sys.executable + " -u\\nimport sys; print(sys.argv)\\n")
        script("/tmp/inner", "#! /tmp/script.py  two words \\n")  # its interpreter: a script
        script("/tmp/plain", "print(1)\\n")
        for argv in (["/tmp/script.py", "a"], ["/tmp/inner", "b"]):
            print(subprocess.run(argv, capture_output=True, text=True).stdout.strip())
        try:
            subprocess.run(["/tmp/plain"])
        except OSError as e:
            print("plain", e.errno)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            os.execv("/code/children", ["children", "hello"])
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        r = subprocess.run("echo $((6 * 7)) | /code/children upper; exit 3", shell=True,
                           capture_output=True, text=True)
        print(r.returncode, r.stdout.strip(), flush=True)
        print(os.waitstatus_to_exitcode(os.system("/code/children hello there")), flush=True)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # its program has its pid, and so its parent
            os.execv(sys.executable, [sys.executable, "-c",
                                      f"import os; print(os.getppid() == {parent})"])
        os.waitpid(pid, 0)
    """, timeout=120)
    assert out == [
        "['/tmp/script.py', 'a']", "['/tmp/script.py', 'two words', '/tmp/inner', 'b']",
        "plain 8", "hello from C with 2 args", "7", "3 42", "hello from C with 3 args", "7",
        "True",
    ]


def test_pipelines_give_the_last_status_and_the_image_carries_common_tools(usf):
    out = run(usf, r"""
        import subprocess, time
        start = time.monotonic()
        print(subprocess.run(["sleep", "0.1"]).returncode, time.monotonic() - start >= 0.1)
        for command in (
            "true | true; echo $?; true | false; echo $?",  # the report of the last fork
            "printf 'b 2\na 1\n' | sort | head -1 | cut -d' ' -f2",
            "seq 4 | awk '{s += $1} END {print s}' | sed s/10/ten/ | tr a-z A-Z",
            "mkdir -p /tmp/t/d && echo x > /tmp/t/d/f && tar czf /tmp/t.tgz -C /tmp t"
            " && rm -r /tmp/t && tar xzf /tmp/t.tgz -C /tmp && find /tmp/t -type f | wc -l",
            "cat /dev/stdin; echo to-err > /dev/stderr; ls /dev/fd/ | head -1",
        ):
            r = subprocess.run(command, shell=True, input="in\n", capture_output=True, text=True)
            print(r.returncode, r.stdout.split(), r.stderr.strip())
    """, timeout=120)
    assert out == ["0 True", "0 ['0', '1'] ", "0 ['1'] ", "0 ['TEN'] ", "0 ['1'] ",
                   "0 ['in', '0'] to-err"]


def test_execve_passes_arguments_and_environment_that_are_not_utf8_as_they_are(usf):
    out = run(usf, """
        import subprocess, sys
        r = subprocess.run([sys.executable, "-c", "import os, sys; "
                            "print(os.fsencode(sys.argv[1]), os.environb[b'X'])", b"a\\xff"],
                           env={b"X": b"\\xfe\\x80"}, capture_output=True, text=True)
        print(r.returncode, r.stdout.strip())
    """)
    assert out == ["0 b'a\\xff' b'\\xfe\\x80'"]


def test_a_pipes_size_is_set_and_kept_when_a_child_shares_it(usf):
    out = run(usf, """
        import fcntl, os, subprocess, sys
        r, w = os.pipe()
        print(fcntl.fcntl(r, fcntl.F_GETPIPE_SZ), fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 5000))
        os.write(w, b"x" * 8192)
        for fd, size in ((w, 100), (w, 2 << 20), (sys.stdout.fileno(), 0)):
            try:
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
            except OSError as e:
                print(e.errno)  # below what it holds, past pipe-max-size, not a pipe
        child = subprocess.Popen([sys.executable, "-c", "import fcntl; "
                                  "print(fcntl.fcntl(0, fcntl.F_GETPIPE_SZ))"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, pipesize=1 << 17)
        print(fcntl.fcntl(child.stdin.fileno(), fcntl.F_GETPIPE_SZ), child.communicate()[0])
    """)
    assert out == ["65536 8192", "16", "1", "9", "131072 b'131072\\n'"]


def test_execve_keeps_ignored_signals_ignored_and_the_signal_mask(usf):
    out = run(usf, """
        import signal, subprocess, sys
        for restore in (False, True):  # CPython ignores SIGPIPE and SIGXFSZ; restore resets them
            status = subprocess.check_output(["cat", "/proc/self/status"],
                                             restore_signals=restore).decode()
            print([line for line in status.splitlines() if line.startswith("SigIgn")])
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        print(subprocess.check_output([sys.executable, "-c", "import signal; "
                                       "print(signal.pthread_sigmask(signal.SIG_BLOCK, []))"]
                                      ).decode().strip())
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
    """)
    assert out == ["['SigIgn:\\t0000000001001000']", "['SigIgn:\\t0000000000000000']",
                   "{<Signals.SIGUSR1: 10>}"]


def test_python3_python_and_pwd_are_on_the_path(usf):
    out = run(usf, """
        import os, subprocess, sys
        with open("/tmp/script", "w") as f:
            f.write("#!/usr/bin/env python3\\nimport sys; print(sys.version_info[:2])\\n")
        os.chmod("/tmp/script", 0o755)
        for argv in ["python3", "-c", "import sys; print(sys.executable)"], \\
                ["python", "-c", "print(2)"], ["/tmp/script"], ["pwd"]:
            print(subprocess.run(argv, capture_output=True, text=True, cwd="/tmp",
                                 check=True).stdout.strip())
    """)
    assert out == ["/usr/local/bin/python3", "2", str(sys.version_info[:2]), "/tmp"]


def test_a_forked_child_that_leaves_the_function_ends_as_a_python_program_does(usf):
    r = run_ok(usf, """
        import atexit, os, sys
        atexit.register(lambda: print("atexit", os.getpid() != parent, flush=True))
        parent = os.getpid()
        for how in "exit 5", "exit bye", "raise", "exit", "return":
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                if how == "raise":
                    raise ValueError("from the child")
                if how != "return":
                    sys.exit(int(how[5:]) if how[5:].isdigit() else how[5:] or None)
                break  # back to the agent, as a handler's return
            print(how, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
    """)
    assert r.stdout.splitlines() == [
        "atexit True", "exit 5 5", "atexit True", "exit bye 1", "atexit True", "raise 1",
        "atexit True", "exit 0", "atexit True", "return 0"]
    assert "bye\n" in r.stderr and "ValueError: from the child" in r.stderr


def test_a_forked_childs_execve_closes_its_old_files_at_once(usf):
    out = run(usf, """
        import os, signal, subprocess
        r, w = os.pipe()  # close-on-exec, as subprocess's error pipe
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.execvp("sleep", ["sleep", "5"])
        os.close(w)
        print(os.read(r, 1), os.waitpid(pid, os.WNOHANG) == (0, 0))  # its end, while it runs
        os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0)
        # preexec_fn makes subprocess fork: the group's leader is the shell, not a copy
        shell = subprocess.Popen(["sh", "-c", "sleep 5 & sleep 5; echo never"],
                                 preexec_fn=os.setsid, stdout=subprocess.PIPE)
        print(shell.poll(), os.getpgid(shell.pid) == shell.pid)
        os.killpg(shell.pid, signal.SIGTERM)
        print(shell.wait(), shell.stdout.read())
    """)
    assert out == ["b'' True", "None True", "-15 b''"]


def test_execve_keeps_the_nice_value_and_setgroups_is_eperm(usf):
    out = run(usf, """
        import os, subprocess, sys
        child = subprocess.run([sys.executable, "-c", "import os; print(os.nice(0))"],
                               preexec_fn=lambda: os.nice(5), capture_output=True, text=True)
        print(child.stdout.strip(), os.nice(0))
        try:
            os.setgroups([])
        except PermissionError as e:
            print(e.errno)
    """)
    assert out == ["5 0", "1"]


def test_a_childs_symlinks_mode_and_mtime_changes_reach_its_parent(usf):
    out = run(usf, """
        import os, subprocess
        here = os.getcwd(); os.makedirs("/tmp/synced"); os.chdir("/tmp/synced")
        open("old", "w").close(); os.symlink("old", "gone")
        subprocess.run(["sh", "-c", "echo x > f && ln -s f l && chmod 600 f && chmod 700 old"
                        " && rm gone && touch -d 2020-01-02T00:00:00Z old"], check=True)
        print(sorted(os.listdir()), os.readlink("l"), open("l").read().strip())
        print(oct(os.stat("f").st_mode & 0o777), oct(os.stat("old").st_mode & 0o777))
        print(os.stat("old").st_mtime)
        os.chdir(here)
    """)
    assert out == ["['f', 'l', 'old'] f x", "0o600 0o700", "1577923200.0"]


def test_a_file_given_to_a_child_shares_its_offset_and_an_unlinked_one_its_bytes(usf):
    out = run(usf, """
        import os, subprocess, sys, tempfile
        with open("/tmp/log.txt", "w") as f:  # the child's output lands between, as on Linux
            f.write("header\\n"); f.flush()
            subprocess.run(["echo", "from child"], stdout=f)
            f.write("footer\\n")
        print(open("/tmp/log.txt").read().split())
        unnamed = tempfile.TemporaryFile()
        subprocess.run([sys.executable, "-c", "import sys; sys.stdout.write('orange')"],
                       stdout=unnamed.fileno())
        print(unnamed.tell(), unnamed.seek(0), unnamed.read())
        for path in "/tmp/log.txt", sys.executable:  # a reader goes on where the child stopped
            fd = os.open(path, os.O_RDONLY)
            subprocess.run(["head", "-c", "4"], stdin=fd, stdout=subprocess.DEVNULL)
            print(os.read(fd, 2))
        fd = os.open("/tmp/forked.txt", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        os.write(fd, b"a")
        pid = os.fork()
        if pid == 0:
            os.write(fd, b"bc")
            os._exit(0)
        os.waitpid(pid, 0)
        os.write(fd, b"d")
        idle = os.fork()
        if idle == 0:
            os._exit(0)  # it leaves the offset alone: the parent's writes meanwhile stand
        os.write(fd, b"e"); os.waitpid(idle, 0); os.write(fd, b"f")
        os.lseek(fd, 0, 0); print(os.read(fd, 10))
    """)
    assert out == ["['header', 'from', 'child', 'footer']", "6 0 b'orange'", "b'er'",
                   "b'\\x02\\x01'", "b'abcdef'"]


def test_a_socketpair_end_given_to_a_program_is_still_a_socket_there(usf):
    out = run(usf, """
        import socket, subprocess, sys
        ours, theirs = socket.socketpair()
        subprocess.run(["true"], pass_fds=[theirs.fileno()])
        theirs.sendall(b"kept"); print(ours.recv(4), flush=True)  # ours outlives the program
        child = subprocess.Popen([sys.executable, "-c", '''if 1:
            import socket, sys
            s = socket.socket(fileno=int(sys.argv[1]))  # asks the kernel its family and type
            s.sendall(b"ping"); got = s.recv(4); s.shutdown(socket.SHUT_WR)
            print(s.family.name, s.type.name, repr(s.getsockname()), got)''',
            str(theirs.fileno())], pass_fds=[theirs.fileno()])
        theirs.close()
        print(ours.recv(4), flush=True); ours.sendall(b"pong")
        end = ours.recv(4); print(end, child.wait())
    """)
    assert out == ["b'kept'", "b'ping'", "AF_UNIX SOCK_STREAM '' b'pong'", "b'' 0"]


def test_eventfds_are_shared_with_children_and_an_inherited_epoll_set_is_einval(usf):
    r = run_ok(usf, """
        import os, select, subprocess, sys
        efd = os.eventfd(1)
        ep = select.epoll()
        r, w = os.pipe()
        ep.register(r, select.EPOLLIN)
        pid = os.fork()
        if pid == 0:
            os.eventfd_write(efd, 5)
            try:
                ep.poll(0)
                os._exit(1)
            except OSError as e:
                ep.close()
                os.write(w, b"x")
                os._exit(e.errno)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), os.eventfd_read(efd))
        print(ep.poll(5) == [(r, select.EPOLLIN)])  # the parent's set watches its pipe still
        subprocess.run([sys.executable, "-c", f"import os; os.eventfd_write({efd}, 7)"],
                       pass_fds=[efd], check=True)
        print(os.eventfd_read(efd))
    """, timeout=60)
    assert r.stdout.splitlines() == ["22 6", "True", "7"]
    assert "usetl: an epoll set made before fork is not shared with the forked child" in r.stderr


def test_sigchld_reaches_a_handler_and_the_parents_handlers_survive_a_child(usf):
    out = run(usf, """
        import signal, subprocess, sys, time
        got = []
        signal.signal(signal.SIGCHLD, lambda s, f: got.append(s))
        signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))
        subprocess.run([sys.executable, "-c", "pass"])  # its child resets every handler
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        signal.raise_signal(signal.SIGUSR1)
        print(got == [signal.SIGCHLD, signal.SIGUSR1])
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    """, timeout=60)
    assert out == ["True"]


def test_a_lone_thread_waiting_for_a_childs_sigchld_is_no_deadlock(usf):
    # asyncio's SIGCHLD child watchers wait so: one thread in select on the wakeup fd.
    out = run(usf, """
        import os, select, signal, subprocess, sys
        r, w = os.pipe()
        os.set_blocking(w, False)
        signal.set_wakeup_fd(w)
        signal.signal(signal.SIGCHLD, lambda s, f: None)
        p = subprocess.Popen([sys.executable, "-c", "pass"])
        select.select([r], [], [])
        print(os.read(r, 1)[0] == signal.SIGCHLD, p.wait())
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    """, timeout=60)
    assert out == ["True 0"]


def test_no_child_outlives_its_invocation(image):
    others = forked_monitors()
    with start_usf(image) as u:
        r = u.run_code("import subprocess, sys, time\n"
                       "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
                       "time.sleep(60)\n", timeout=3)
        assert r.error is not None and r.error.type == "Timeout"
        wait_until(lambda: not forked_monitors() - others, "the children's monitors to exit")


def test_a_child_reaches_nothing_its_parent_cannot(usf, listeners):
    allowed, denied = listeners
    probe = f"""
import errno, os, socket
for port in ({allowed}, {denied}):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
        print(port == {allowed}, "connected")
    except OSError as e:
        print(port == {allowed}, errno.errorcode[e.errno])
print(os.path.exists("/etc/hostname"), os.path.exists("/dev/etl"), os.path.exists("/code"))
"""
    out = run(usf, f"""
        import subprocess, sys
        exec({probe!r})
        print(subprocess.run([sys.executable, "-c", {probe!r}], capture_output=True,
                             text=True).stdout, end="")
    """, timeout=60)
    parent, child = out[:3], out[3:]
    assert parent == ["True connected", "False ECONNREFUSED", "False True True"]
    assert child == ["True connected", "False ECONNREFUSED", "False False True"]


WORK = """
import os
def square(x):
    return x * x
def pid_of(_):
    return os.getpid()
"""


def test_fork_copies_the_running_vm_with_pipes_and_shared_memory_between(template):
    with template.fork() as clone:
        r = clone.run_code(textwrap.dedent("""
            import mmap, os
            shm = os.open("/dev/shm/both", os.O_RDWR | os.O_CREAT, 0o600)
            os.ftruncate(shm, 4096)
            shared = mmap.mmap(shm, 4096, mmap.MAP_SHARED)
            private = bytearray(b"parent's")
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                private[:] = b"child's!"  # its own copy
                shared[:5] = b"child"  # the parent's too
                os.write(w, b"%d %s" % (os.getpid(), bytes(private)))
                os._exit(3)
            os.close(w)
            print(os.read(r, 100).decode() == f"{pid} child's!", pid != os.getpid())
            child, status = os.waitpid(pid, 0)
            print(child == pid, os.waitstatus_to_exitcode(status), bytes(private), shared[:5])
        """), timeout=60)
    assert r.error is None, (r.error, r.stderr)
    assert r.stdout.splitlines() == ["True True", "True 3 b\"parent's\" b'child'"]


def test_multiprocessing_pool_and_process_pool_executor(template):
    with template.fork() as clone:
        r = clone.run_code(textwrap.dedent(f"""
            import multiprocessing, sys
            from concurrent.futures import ProcessPoolExecutor
            with open("/tmp/work.py", "w") as f:
                f.write({WORK!r})
            sys.path.insert(0, "/tmp")
            import work
            with multiprocessing.Pool(2) as pool:
                print(pool.map(work.square, range(40)) == [x * x for x in range(40)])
                print(len(set(pool.map(work.pid_of, range(40)))) >= 1)
            with ProcessPoolExecutor(2) as ex:
                print(list(ex.map(work.square, range(10))) == [x * x for x in range(10)])
        """), timeout=120)
    assert r.error is None, (r.error, r.stderr)
    assert r.stdout.splitlines() == ["True", "True", "True"]


def test_a_fork_bomb_ends_at_the_limit_and_the_host_carries_on(template):
    before = descendants(template.info.pid)
    with template.fork() as clone:
        r = clone.run_code("import os\nwhile True:\n    os.fork()\n", timeout=120)
        assert r.error is not None and r.error.type == "BlockingIOError", r.error
        assert "usetl: fork refused: the invocation is at its limit of child processes" \
            in r.stderr
        wait_until(lambda: len(descendants(template.info.pid) - before) == 1,
                   "the fork bomb's monitors to end, the clone's alone left")
        after = clone.run_code("print('still here')", timeout=30)
    assert after.stdout == "still here\n"


HOLD = """
import errno, mmap, sys
def hold(mib, parts):
    try:  # mapped: not yet held
        maps = [mmap.mmap(-1, (mib // parts) << 20) for _ in range(parts)]
    except OSError as e:
        print(errno.errorcode[e.errno], flush=True)
        return
    print("mapped", flush=True)
    for m in maps:  # held: every page touched
        m[::4096] = b"x" * len(range(0, len(m), 4096))
    print("held", flush=True)
    sys.stdin.read()  # until its parent lets it go
"""


def test_children_share_the_functions_memory_by_what_they_hold(template):
    """A 256 MiB function's children are charged what they hold, not what they map (as
    Linux's memory cgroup): two forks hold 60 MiB each; a program's mapping of 150 MiB, which
    does not fit beside what is held, is ENOMEM with a clear line; a fork that maps 140 MiB
    in four parts (each fits) and touches it all takes the tree past 256 MiB and, holding
    the most, is killed (SIGKILL) with a clear line; the host and the function carry on,
    and the killed child's memory is the others' again."""
    with template.fork() as clone:
        r = clone.run_code(textwrap.dedent(f"""
            import os, subprocess, sys
            code = {HOLD!r}
            exec(code)

            def fork(mib, parts):
                down, up = os.pipe(), os.pipe()
                pid = os.fork()
                if pid == 0:  # a forked copy of this VM
                    try:
                        os.dup2(down[0], 0)
                        os.dup2(up[1], 1)
                        sys.stdin, sys.stdout = os.fdopen(0), os.fdopen(1, "w")
                        hold(mib, parts)
                    finally:
                        os._exit(0)
                os.close(down[0]), os.close(up[1])
                return pid, os.fdopen(down[1], "w"), os.fdopen(up[0])

            def program(mib, parts):
                return subprocess.Popen(
                    [sys.executable, "-c", code + f"hold({{mib}}, {{parts}})"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

            holders = [fork(60, 1), fork(60, 1)]
            print([h[2].readline().strip() + " " + h[2].readline().strip() for h in holders])
            refused = program(150, 1)
            print(refused.communicate("")[0].split(), refused.returncode)
            pid, _, out = fork(140, 4)
            print(out.readline().strip())  # mapped
            out.read()  # to its end: killed
            print(os.waitpid(pid, 0)[1] == 9, pid)
            again = program(60, 1)
            print(again.communicate("")[0].split())
            for pid, _, _ in holders:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
        """), timeout=120)
    assert r.error is None, (r.error, r.stderr)
    holders, refused, mapped, killed, again = r.stdout.splitlines()
    assert holders == "['mapped held', 'mapped held']"
    assert refused == "['ENOMEM'] 0"
    assert "refused: the function's memory (256 MiB) is used by its processes" in r.stderr
    assert mapped == "mapped"
    assert killed.startswith("True "), killed
    assert "out of memory: the function's memory (256 MiB) is used by its processes" \
        in r.stderr and f"killed process {killed.split()[1]} " in r.stderr, r.stderr
    assert again == "['mapped', 'held']"


def test_execve_of_a_program_that_cannot_load_returns_linux_errno(usf):
    """What binfmt_elf refuses before execve's point of no return is execve's error in the
    caller (subprocess raises it; the process itself goes on), as on the host."""
    out = run(usf, """
        import errno, os, shutil, subprocess, sys
        exe = open(sys.executable, "rb").read()
        interp = b"/lib64/ld-linux-x86-64.so.2"
        def program(name, data, mode=0o755):
            with open(name, "wb") as f:
                f.write(data)
            os.chmod(name, mode)
            return name
        other = "/tmp/" + "i" * (len(interp) - 5)  # an interpreter path of the same length
        cases = [
            program("/tmp/bad", b"\\x7fELF" + bytes(200)),
            program("/tmp/no-interp", exe.replace(interp, interp[:-1] + b"X")),
            program("/tmp/other-interp", exe.replace(interp, other.encode())),
            program("/tmp/script", b"#!/tmp/plain\\n"),
        ]
        program("/tmp/plain", b"#!/bin/sh\\necho hi\\n", 0o644)
        program(other, open(os.path.realpath(interp), "rb").read(), 0o644)
        def tried(argv):
            try:
                subprocess.run(argv)
                return "ran"
            except OSError as e:
                return errno.errorcode[e.errno]
        print(*[tried([p]) for p in cases])
        program(other, b"\\x7fELF" + bytes(100))
        print(tried(["/tmp/other-interp"]))
        try:
            os.execv("/tmp/bad", ["bad"])
        except OSError as e:
            print("still here:", errno.errorcode[e.errno])
    """, timeout=60)
    assert out == ["ENOEXEC ENOENT EACCES EACCES", "ELIBBAD", "still here: ENOEXEC"]


def test_a_child_program_maps_none_of_its_parents_guest_memory(image):
    """The host fork that starts a program leaves the parent's guest memory out of the
    sibling (a fork would write-protect the parent's private pages, each then a KVM fault
    at its next store): while the program runs, its monitor maps its own guest RAM and
    not its parent's."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    child = f"import socket; socket.create_connection(('127.0.0.1', {port})).recv(1)"
    results = []
    with server, start_usf(image, UsfConfig(allow=[f"tcp://127.0.0.1:{port}"])) as u:
        others = forked_monitors()  # other tests' templates and their clones
        caller = threading.Thread(target=lambda: results.append(u.run_code(
            f"import subprocess, sys\nprint(subprocess.run([sys.executable, '-c', {child!r}])"
            ".returncode)\n", timeout=120)))
        caller.start()
        server.settimeout(120)
        conn, _ = server.accept()  # the program runs in its sibling VM
        with conn:
            rams = [{int(line.split()[4]) for line in open(f"/proc/{p}/maps")
                     if "memfd:usetl-ram" in line} for p in forked_monitors() - others]
            conn.send(b"x")
        caller.join()
        parents = os.fstat(u.vm.ram.fd).st_ino
    assert len(rams) == 1 and parents not in rams[0] and rams[0], (parents, rams)
    assert results[0].error is None and results[0].stdout == "0\n", results[0]
