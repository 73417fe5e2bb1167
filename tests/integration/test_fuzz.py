"""The syscall fuzzer, and each monitor-side exception it found, fixed.

Every syscall below is issued raw (ctypes' syscall()) with the hostile
argument that once raised in the monitor; the guest must get Linux's
answer, and the USF must go on (or end cleanly, for a broken protocol).
"""

import errno
import json
import os
import socket
import textwrap

import pytest

from usetl.bench.fuzz import FuzzConfig, run
from usetl.libos.hostfs import HostDirFS
from usetl.usf import start_usf

pytestmark = pytest.mark.kvm

RAW = """
import ctypes, os, struct
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
def sc(nr, *args):
    r = _libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return -ctypes.get_errno() if r == -1 else r
def buf(data):
    b = ctypes.create_string_buffer(bytes(data), max(len(data), 1))
    return b, ctypes.addressof(b)
"""


@pytest.fixture
def fresh(image):
    u = start_usf(image)
    yield u
    u.close()


def guest(usf, code):
    r = usf.run_code(RAW + textwrap.dedent(code), timeout=30)
    assert r.error is None, r.error
    return r.stdout


def test_arch_prctl_set_fs_outside_user_space_is_eperm(usf):
    out = guest(usf, """
        for addr in (0xFFFF800000000000, 0xDEADBEEFDEADBEEF, 1 << 47, (1 << 47) - 4096):
            print(sc(158, 0x1002, addr))
    """)
    assert out.split() == [str(-errno.EPERM)] * 4


def test_an_etl_request_nested_deep_is_an_invalid_request(usf):
    out = guest(usf, """
        payload = b"[" * 100_000 + b"]" * 100_000
        b, addr = buf(struct.pack("<II", len(payload), 1 << 20) + payload)
        fd = os.open("/dev/etl", os.O_RDWR)
        print(sc(16, fd, 0xC0085545, addr))
        n = struct.unpack_from("<I", b.raw)[0]
        print(b.raw[8:8 + n].decode())
    """)
    result, reply = out.split("\n", 1)
    assert result == "0"
    assert json.loads(reply)["error"]["kind"] == "invalid"


def test_getcwd_returns_a_non_utf8_directory_name_as_its_bytes(usf):
    out = guest(usf, r"""
        os.mkdir(b"/tmp/\xff\xfe")
        os.chdir(b"/tmp/\xff\xfe")
        print(os.getcwdb() == b"/tmp/\xff\xfe", os.listdir(b"/tmp").count(b"\xff\xfe"))
        os.chdir("/")
    """)
    assert out.split() == ["True", "1"]


def test_select_with_the_largest_timeout_and_a_ready_fd_returns_it(usf):
    out = guest(usf, """
        for usec in (0, (1 << 63) - 1):
            fds, fds_addr = buf(struct.pack("<Q", 1))  # fd 0, /dev/null: readable
            tv, tv_addr = buf(struct.pack("<qq", (1 << 63) - 1, usec))
            print(sc(23, 1, fds_addr, 0, 0, tv_addr), struct.unpack("<qq", tv.raw)[0] > 0)
    """)
    assert out.split() == ["1", "True"] * 2


def test_io_and_lseek_near_the_largest_offset_are_einval(usf, tmp_path):
    (tmp_path / "code.py").write_bytes(b"x" * 100)
    usf.kernel.ns.mount("fzcode", HostDirFS(str(tmp_path)))
    out = guest(usf, """
        top = (1 << 63) - 1
        b, addr = buf(bytes(64))
        for path in ("/fzcode/code.py", "/tmp/offsets"):
            fd = os.open(path, os.O_RDONLY | os.O_CREAT)
            print(sc(17, fd, addr, 16, top - 8), sc(17, fd, addr, 16, 1 << 62),
                  sc(17, fd, addr, 16, 1 << 63), sc(8, fd, top, 0), sc(0, fd, addr, 16),
                  sc(8, fd, 1, 1), sc(8, fd, 1 << 62, 2), sc(8, fd, 1 << 64 - 1, 0))
    """)
    einval = str(-errno.EINVAL)
    expected = [einval, "0", einval, str((1 << 63) - 1), einval, einval]
    for line in out.splitlines():
        fields = line.split()
        assert fields[:6] == expected, line
        assert fields[6] == str(1 << 62) or fields[6] == str(100 + (1 << 62)), line
        assert fields[7] == einval, line


def test_rename_and_rmdir_of_dot_and_dotdot_are_refused_as_linux_does(usf):
    out = guest(usf, """
        os.makedirs("/tmp/rn/a/b")
        os.chdir("/tmp/rn/a/b")
        dots, addr = buf(b"..")
        print(sc(82, addr, addr), sc(84, addr))  # rename("..", ".."), rmdir("..")
        for old, new in (("/tmp/rn/a/b/..", "/tmp/rn/c"), ("/tmp/rn/a", "/tmp/rn/a/b/..")):
            try:
                os.rename(old, new)
            except OSError as e:
                print(e.errno)
        os.rename("/tmp/rn/a/b/../b", "/tmp/rn/c")  # a ".." inside a path is walked up
        print(sorted(os.listdir("/tmp/rn")), os.listdir("/tmp/rn/a"))
        os.chdir("/")
    """)
    assert out.split("\n")[:4] == [f"{-errno.EBUSY} {-errno.ENOTEMPTY}", str(errno.EBUSY),
                                   str(errno.EBUSY), "['a', 'c'] []"]


def test_fcntl_dupfd_below_zero_or_past_the_fd_limit_is_einval(usf):
    out = guest(usf, """
        print(sc(72, 0, 0, -1), sc(72, 0, 0, 1 << 31), sc(72, 0, 0, 1024), sc(72, 0, 1030, -5))
        fd = sc(72, 0, 0, 1023)
        print(fd, sc(3, fd))
    """)
    einval = str(-errno.EINVAL)
    assert out.split() == [einval] * 4 + ["1023", "0"]


def test_closing_or_replacing_stdout_and_stderr_keeps_the_capture(fresh):
    r = fresh.run_code(RAW + textwrap.dedent("""
        os.write(1, b"out before\\n"); os.write(2, b"err before\\n")
        fd = os.open("/tmp/elsewhere", os.O_RDWR | os.O_CREAT)
        os.dup2(fd, 2)
        os.close(1)
        os.write(2, b"to the file\\n")
    """), timeout=30)
    assert r.error is None, r.error
    assert (r.stdout, r.stderr) == ("out before\n", "err before\n")
    # The next invocation runs in the same USF, where fd 2 is still the file.
    again = fresh.run_code("raise ValueError(open('/tmp/elsewhere').read())")
    assert again.error.message == "to the file\n", again.error
    assert fresh.alive


def test_a_mounted_host_directory_shows_only_files_directories_and_links(usf, tmp_path):
    (tmp_path / "file").write_text("data")
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    os.symlink("file", tmp_path / "link")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    sock.close()
    usf.kernel.ns.mount("fzmount", HostDirFS(str(tmp_path)))
    out = guest(usf, """
        print(sorted(os.listdir("/fzmount")))
        print(open("/fzmount/link").read())
        for name in ("fifo", "sock"):
            try:
                open("/fzmount/" + name)
            except OSError as e:
                print(name, e.errno)
    """)
    lines = out.splitlines()
    assert lines[:2] == ["['dir', 'file', 'link']", "data"]
    assert lines[2:] == [f"fifo {errno.ENOENT}", f"sock {errno.ENOENT}"]


@pytest.mark.parametrize("garbage, complaint", [
    (b"\x05\0\0\0\0\0\0\0hello", "malformed"),
    (b"\xff" * 8, "over the"),  # a length past the limit
    (b"\x03\0\0\0\0\0\0\0[1]", "malformed"),
    (b'\x0e\0\0\0\0\0\0\0{"error": "x"}', "malformed"),
    (b"\x40\x0d\x03\0\0\0\0\0" + b"[" * 100_000 + b"]" * 100_000, "malformed"),
])
def test_garbage_written_to_the_agent_channel_ends_the_invocation_cleanly(
        fresh, garbage, complaint):
    # The guest writes garbage as a reply, then waits on the channel as the agent does.
    r = fresh.run_code(f"import os\nfd = os.open('/dev/usetl', os.O_RDWR)\n"
                       f"os.write(fd, {garbage!r})\nos.read(fd, 8)\n", timeout=30)
    assert r.error.type == "AgentError", r.error
    assert complaint in r.error.message
    assert not fresh.alive


def test_an_exception_in_a_handler_fails_the_invocation_not_the_monitor(fresh):
    def sys_getppid(k, *args):
        return 1 // 0

    k = fresh.kernel
    k.handlers = {**k.handlers, 110: sys_getppid}
    r = fresh.run_code("import os; os.getppid()", timeout=30)
    assert r.error.type == "MonitorError", r.error
    assert r.error.message.startswith("monitor error in syscall getppid(")
    assert "ZeroDivisionError" in r.error.message
    assert k.stats.monitor_errors == {("getppid", "ZeroDivisionError"): 1}
    assert not fresh.alive


def test_a_handler_that_returns_no_number_is_a_monitor_error(fresh):
    def sys_getppid(k, *args):
        return None

    fresh.kernel.handlers = {**fresh.kernel.handlers, 110: sys_getppid}
    r = fresh.run_code("import os; os.getppid()", timeout=30)
    assert r.error.type == "MonitorError", r.error
    assert "TypeError: it returned None" in r.error.message


def test_the_fuzzer_finds_no_monitor_error_or_hang():
    cfg = FuzzConfig(seed=13, syscalls=100_000, chunk=5_000, workers=2)
    report = run(cfg)
    assert report.ok, (report.summary(), report.examples, report.hangs)
    assert report.chunks == 20
    assert report.served >= cfg.syscalls * 0.9, report.summary()
