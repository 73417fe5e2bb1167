"""The jail's facilities, each in a forked child of the test (no VM needed)."""

import ast
import ctypes
import errno
import logging
import os
import select
import signal
import socket

import pytest

from usetl.hostmm import PAGEMAP_SCAN
from usetl.jail import JailError, JailSpec, PreparedRoots, caps, confine, jail_root, seccomp
from usetl.jail.ids import UidRange
from waiting import ended, wait_until

SIGSYS = signal.SIGSYS


def in_child(body, meanwhile=None) -> tuple[int | None, int | None, bytes]:
    """Run body(fd) in a forked child; (exit code, killing signal, repr of what it returned).

    fd is the pipe the answer goes back on (for a body that closes descriptors);
    meanwhile(pid), if given, runs in the parent while the child does."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            os.close(r)
            os.write(w, repr(body(w)).encode())
        except BaseException:
            status = 3
        finally:
            os._exit(status)
    os.close(w)
    if meanwhile is not None:
        meanwhile(pid)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status), data
    return os.WEXITSTATUS(status), None, data


def filtered(then):
    def body(_fd):
        caps.no_new_privs()  # what seccomp(2) needs without CAP_SYS_ADMIN
        seccomp.install(seccomp.build(PAGEMAP_SCAN, seccomp.SOCKET_FAMILIES))
        return then()
    return body


libc = ctypes.CDLL(None, use_errno=True)


def errno_of(ret: int) -> int:
    return ctypes.get_errno() if ret < 0 else 0


def test_allowed_syscalls_work_under_the_filter():
    code, sig, out = in_child(filtered(lambda: (os.getpid() > 0, os.stat("/").st_mode > 0)))
    assert (code, sig, out) == (0, None, b"(True, True)")


@pytest.mark.parametrize("call", [
    lambda: libc.ptrace(0, 0, 0, 0),
    lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW),
    lambda: libc.unshare(0x10000000),
    lambda: libc.syscall(56, 0x10000000 | signal.SIGCHLD, 0, 0, 0, 0),  # clone(NEWUSER)
    lambda: libc.ioctl(0, 0x5452, 0),  # FIOASYNC: not one the monitor makes
    lambda: libc.mount(b"none", b"/mnt", b"tmpfs", 0, None),
])
def test_anything_else_kills_the_process_with_sigsys(call):
    code, sig, _ = in_child(filtered(call))
    assert sig == SIGSYS and code is None


def test_kvm_and_terminal_ioctls_pass_the_filter():
    def calls():
        fd = os.open("/dev/null", os.O_RDONLY)
        # Not a KVM fd nor a tty: the kernel answers ENOTTY, the filter let them through.
        return (errno_of(libc.ioctl(fd, 0xAE00, 0)), errno_of(libc.ioctl(fd, 0x5401, 0)))
    code, sig, out = in_child(filtered(calls))
    assert (code, sig) == (0, None)
    assert out == repr((errno.ENOTTY, errno.ENOTTY)).encode()


def test_clone3_gets_enosys_so_that_glibc_falls_back_to_clone():
    def calls():
        import threading

        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()
        return errno_of(libc.syscall(435, 0, 0))
    code, sig, out = in_child(filtered(calls))
    assert (code, sig, out) == (0, None, str(errno.ENOSYS).encode())


SYS_POLL = 7


def _proc_field(pid: int, name: str) -> str:
    try:
        with open(f"/proc/{pid}/{name}") as f:
            return f.read()
    except OSError:
        return ""


def test_a_wait_resumed_after_a_stop_passes_the_filter():
    """The kernel resumes a timed wait that a signal interrupted without running a handler
    (SIGSTOP then SIGCONT here; in a monitor, a process-wide signal another thread took) by
    restart_syscall: a filter without it killed idle clones' monitors with SIGSYS."""
    wake_r, wake_w = os.pipe()

    def wait_for_wake():
        poller = select.poll()
        poller.register(wake_r, select.POLLIN)
        return poller.poll(60_000) == [(wake_r, select.POLLIN)]

    def stop_and_continue(pid):
        wait_until(lambda: ended(pid) or _proc_field(pid, "syscall").split(" ")[0]
                   == str(SYS_POLL), "the child waiting in poll")
        os.kill(pid, signal.SIGSTOP)
        wait_until(lambda: ended(pid) or _proc_field(pid, "stat").rsplit(")", 1)[-1]
                   .split()[0] == "T", "the child stopped")
        os.kill(pid, signal.SIGCONT)
        os.write(wake_w, b"x")
    try:
        code, sig, out = in_child(filtered(wait_for_wake), stop_and_continue)
    finally:
        os.close(wake_r)
        os.close(wake_w)
    assert (code, sig, out) == (0, None, b"True")


@pytest.mark.skipif(os.geteuid() != 0, reason="becomes another uid to be unprivileged")
def test_without_root_the_jail_degrades_with_a_warning(caplog):
    def body(out_fd):
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        with caplog.at_level(logging.WARNING, logger="usetl.jail"):
            confine(JailSpec(uid=100000, gid=100000), keep_fds={out_fd})
        status = dict(line.split(":\t", 1) for line in open("/proc/self/status")
                      .read().splitlines())
        return (status["NoNewPrivs"].strip(), status["Seccomp"].strip(), dict(os.environ),
                "the process is not root" in caplog.text)
    code, sig, out = in_child(body)
    assert (code, sig) == (0, None), out
    assert out == repr(("1", "2", {}, True)).encode()


def test_a_jailed_process_may_not_keep_uid_0():
    from usetl.jail.ids import become

    with pytest.raises(JailError):
        become(0, 100000)


def test_uid_ranges_hand_out_distinct_uids_and_refuse_bad_ranges():
    r = UidRange.from_env("200000:3")
    assert [r.take() for _ in range(4)] == [200000, 200001, 200002, 200000]
    assert UidRange.from_env(None).first == 100000
    for bad in ("x", "0", "5:-1", "2147483000:100000"):
        with pytest.raises(JailError):
            UidRange.from_env(bad)



@pytest.mark.skipif(os.geteuid() != 0, reason="namespaces and mounts need root")
def test_a_prepared_root_is_entered_by_each_jail_and_remade_for_a_replaced_path(tmp_path):
    shared, owned = tmp_path / "shared", tmp_path / "owned"
    for path, mode, text in ((shared, 0o755, "one"), (owned, 0o700, "mine")):
        path.mkdir(mode=mode)
        (path / "f.txt").write_text(text)
    paths, devices = (str(shared), str(owned)), ("/dev/null",)
    roots = PreparedRoots()
    root = roots.get(paths, devices)
    assert roots.get(paths, devices) is root  # made once

    def seen(prepared, uid):
        entry = jail_root(prepared, uid, uid)
        spec = JailSpec(uid=uid, gid=uid, read_only=paths, devices=devices, seccomp=False)

        def body(out_fd):
            confine(spec, keep_fds={out_fd}, root=entry)
            try:
                open(shared / "new.txt", "w")
                write = "written"
            except OSError as e:
                write = errno.errorcode[e.errno]
            null = os.stat("/dev/null")
            return ((shared / "f.txt").read_text(), (owned / "f.txt").read_text(), write,
                    os.getuid(), null.st_uid, null.st_rdev == os.makedev(1, 3),
                    [p for p in os.listdir("/proc") if p.isdigit()] == [str(os.getpid())])
        try:
            code, sig, out = in_child(body)
        finally:
            entry.close()
        assert (code, sig) == (0, None), out
        return out

    # Two jails in it, each with its own uid: its idmapped mount of the 0700 directory, its
    # /dev/null, a /proc that shows itself alone; the rest read-only.
    for uid in (100071, 100072):
        assert seen(root, uid) == repr(("one", "mine", "EROFS", uid, uid, True, True)).encode()
    replacement = tmp_path / "replacement"
    replacement.mkdir(mode=0o755)
    (replacement / "f.txt").write_text("two")
    os.rename(shared, tmp_path / "old")
    os.rename(replacement, shared)
    remade = roots.get(paths, devices)
    assert remade is not root
    assert seen(remade, 100073) == repr(("two", "mine", "EROFS", 100073, 100073, True, True)
                                        ).encode()


@pytest.mark.skipif(os.geteuid() != 0, reason="cgroups are made by root")
def test_a_starting_controller_removes_only_what_exited_controllers_left():
    """Controllers run at once (a server and its tests, a cluster's workers): one starting
    must not remove a live one's prepared cgroup, still empty until its process moves in."""
    from usetl.jail.cgroup import Cgroups, Limits

    limits = Limits(memory_bytes=64 << 20, pids=16)
    mine = Cgroups()
    held, fds = mine.prepare("held-by-a-live-controller", limits)
    try:
        def start_another(_fd):
            return Cgroups().prepare("another", limits)[0]

        code, _, answer = in_child(start_another)
        left = ast.literal_eval(answer.decode())  # by a controller that has exited
        assert code == 0
        assert all(os.path.isdir(path) for path in held)
        assert all(os.path.isdir(path) for path in left)
        code, _, _ = in_child(start_another)
        assert code == 0
        assert not any(os.path.exists(path) for path in left)
        assert all(os.path.isdir(path) for path in held)
    finally:
        for fd in fds:
            os.close(fd)
        mine.discard(held)


@pytest.mark.skipif(os.geteuid() != 0, reason="cgroups are made by root")
def test_overlapping_moves_leaves_this_process_in_the_cgroups_it_was_in():
    from usetl.jail.cgroup import Cgroups

    with open("/proc/self/cgroup") as f:
        before = f.read()
    thread = Cgroups().overlap_moves()
    assert thread is not None
    thread.join()
    with open("/proc/self/cgroup") as f:
        assert f.read() == before
