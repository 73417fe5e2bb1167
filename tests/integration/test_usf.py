"""CPython (and a static C program) running as a unikernel in a real KVM VM."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from usetl.image import ImageArchive, ImageError
from usetl.usf import UsfConfig, boot_usf, start_usf
from usetl.usf.builder import GUEST_ENV

pytestmark = pytest.mark.kvm

USETL = [sys.executable, "-m", "usetl"]


def run(usf, code, timeout=30):
    return usf.run_code(textwrap.dedent(code), timeout=timeout)


def test_static_c_program_runs_and_its_exit_code_and_output_come_back(image, tmp_path):
    if not shutil.which("gcc"):
        pytest.fail("gcc is needed to build the test program")
    src = tmp_path / "hello.c"
    src.write_text(
        '#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n'
        "int main(int argc, char **argv) {\n"
        '  char *p = malloc(1 << 20); memset(p, 7, 1 << 20);\n'
        '  printf("hello %s argc=%d sum=%d\\n", argv[1], argc, p[12345] + p[99999]);\n'
        '  fprintf(stderr, "to stderr\\n");\n'
        "  return 42;\n}\n"
    )
    exe = tmp_path / "hello"
    subprocess.run(["gcc", "-static", "-O1", "-o", str(exe), str(src)], check=True)
    with boot_usf("/tmp/hello", ["/tmp/hello", "world"], image, UsfConfig(mem_mib=32),
                  files={"hello": exe.read_bytes()}) as u:
        result = u.run_program(timeout=30)
    assert result.status == 42
    assert result.stdout == b"hello world argc=2 sum=14\n"
    assert result.stderr == b"to stderr\n"


def test_cpython_starts_and_computes(usf):
    r = run(usf, """
        import json, csv, hashlib, re, datetime, decimal, zlib, io
        rows = list(csv.reader(io.StringIO("a,b\\n1,2\\n")))
        print(json.dumps(rows))
        print(hashlib.sha256(b"usetl").hexdigest())
        print(re.sub(r"\\d", "#", "a1b22"))
        print(datetime.date(2026, 11, 23).isoformat())
        print(decimal.Decimal("1.10") + decimal.Decimal("2.20"))
        print(zlib.decompress(zlib.compress(b"x" * 1000)) == b"x" * 1000)
        print(sum(i * i for i in range(100000)))
    """)
    assert r.error is None, r.error
    import hashlib

    assert r.stdout.splitlines() == [
        '[["a", "b"], ["1", "2"]]',
        hashlib.sha256(b"usetl").hexdigest(),
        "a#b##",
        "2026-11-23",
        "3.30",
        "True",
        str(sum(i * i for i in range(100000))),
    ]


def test_stdout_and_stderr_are_captured_per_invocation(usf):
    r1 = run(usf, "import sys; print('out one'); print('err one', file=sys.stderr)")
    r2 = run(usf, "print('out two')")
    assert (r1.stdout, r1.stderr) == ("out one\n", "err one\n")
    assert (r2.stdout, r2.stderr) == ("out two\n", "")


def test_host_files_outside_the_image_are_not_there(usf):
    home = Path.home()
    r = run(usf, f"""
        import os
        for path in ["/etc/shadow", "/etc/hostname", "/etc/sudoers", {str(home / ".bashrc")!r},
                     "/../../etc/shadow", "/tmp/../etc/hostname"]:
            try:
                open(path, "rb").read()
                print(path, "OPENED")
            except OSError as e:
                print(path, type(e).__name__)
        print(open("/proc/self/environ", "rb").read())
        print(sorted(os.listdir("/")))
    """)
    assert r.error is None, r.error
    lines = r.stdout.splitlines()
    assert all(line.endswith("FileNotFoundError") for line in lines[:-2]), lines
    # The guest's own environment, as its loader gave it: nothing of the monitor's.
    assert lines[-2] == repr("\0".join([*GUEST_ENV, ""]).encode())
    assert "home" not in eval(lines[-1])


def test_the_image_is_read_only_and_tmp_is_writable(usf):
    r = run(usf, """
        import errno, os, sys
        results = []
        for action in [lambda: open(sys.executable, "r+b"),
                       lambda: open(os.__file__, "w"),
                       lambda: open("/usr/new-file", "w"),
                       lambda: os.mkdir("/usr/newdir"),
                       lambda: os.unlink(os.__file__),
                       lambda: os.rename(os.__file__, "/tmp/os.py")]:
            try:
                action()
                results.append("allowed")
            except OSError as e:
                results.append(errno.errorcode[e.errno])
        print(results)
        os.makedirs("/tmp/a/b")
        with open("/tmp/a/b/f.txt", "w") as f:
            f.write("kept in tmpfs")
        print(open("/tmp/a/b/f.txt").read(), os.listdir("/tmp/a/b"))
    """)
    assert r.error is None, r.error
    first, second = r.stdout.splitlines()
    assert "allowed" not in first
    assert "EROFS" in first
    assert second == "kept in tmpfs ['f.txt']"


def test_exec_by_the_process_itself_replaces_it_and_ends_the_invocation(image):
    with start_usf(image) as u:
        r = u.run_code(textwrap.dedent("""
            import os, sys
            print("before", os.getpid(), flush=True)
            os.execv(sys.executable, [sys.executable, "-c",
                                      "import os; print('after', os.getpid()); exit(3)"])
        """), timeout=60)
    assert r.stdout.splitlines() == ["before 1", "after 1"]
    assert r.error is not None and r.error.type == "GuestExit"
    assert r.error.message == "the guest exited with status 3"
    with start_usf(image) as u:  # the program runs within the invocation's time
        r = u.run_code("import os, sys\n"
                       "os.execv(sys.executable, [sys.executable, '-c', "
                       "'import time; time.sleep(60)'])\n", timeout=3)
        assert r.error is not None and r.error.type == "Timeout", r.error
        assert u.kernel.children.running == {} and u.kernel.children.replaced_by is None


def test_exception_returns_type_message_and_traceback(usf):
    r = run(usf, """
        def inner():
            raise ValueError("bad value 42")
        inner()
    """)
    assert r.error.type == "ValueError"
    assert r.error.message == "bad value 42"
    assert 'raise ValueError("bad value 42")' in r.error.traceback
    assert "agent.py" not in r.error.traceback
    assert usf.alive  # an exception in user code does not end the USF


def test_memory_exhaustion_is_a_memoryerror_in_the_guest(image):
    with start_usf(image, UsfConfig(mem_mib=64)) as u:
        r = u.run_code("x = bytearray(10 ** 10)")
        assert r.error.type == "MemoryError"
        r = u.run_code(
            "chunks = []\n"
            "try:\n"
            "    while True: chunks.append(bytearray(1 << 20))\n"
            "except MemoryError:\n"
            "    n = len(chunks); chunks = None; print('filled', n > 10)\n"
        )
        assert r.error is None, r.error
        assert r.stdout == "filled True\n"
        assert u.run_code("print(sum(range(10)))").stdout == "45\n"


def test_segfault_ends_the_invocation_with_a_clear_error(image):
    with start_usf(image) as u:
        r = u.run_code("import ctypes; ctypes.string_at(0)")
        assert r.error.type == "GuestFault"
        assert "page fault" in r.error.message and "0x0" in r.error.message
        assert not u.alive


def test_infinite_loop_is_stopped_by_the_timeout(image):
    with start_usf(image) as u:
        r = u.run_code("while True: pass", timeout=0.5)
        assert r.error.type == "Timeout"
        assert 400 < r.total_ms < 5000


def cli(*args, env=None, timeout=120):
    return subprocess.run(
        [*USETL, *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_cli_run_prints_output_and_reports_timing():
    p = cli("vm", "run", "--", "print('hi from the guest')")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "hi from the guest\n"
    assert "start-up" in p.stderr and "ms" in p.stderr


def test_cli_json_and_trace():
    p = cli("vm", "run", "--json", "--trace", "--", "import os; print(os.getpid())")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["stdout"] == "1\n" and out["error"] is None
    assert out["startup_ms"] > 0 and out["total_ms"] >= out["startup_ms"]
    assert out["syscalls"] > 100
    assert "openat(" in p.stderr and "getpid(" in p.stderr


def test_cli_guest_exception_exits_nonzero_with_traceback():
    p = cli("vm", "run", "--", "1/0")
    assert p.returncode == 1
    assert "ZeroDivisionError: division by zero" in p.stderr


@pytest.mark.parametrize("code", ["import ctypes; ctypes.string_at(0)", "while True: pass"])
def test_cli_faults_and_timeouts_leave_no_process_behind(code):
    marker = f"usetl-leftover-check-{os.getpid()}"  # unique: other test runs may be live
    p = subprocess.Popen(
        [*USETL, "vm", "run", "--timeout", "1", "--", f"{code}  # {marker}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1
    assert "GuestFault" in err or "Timeout" in err
    leftovers = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                leftovers.append(pid)
    assert leftovers == []


def test_missing_and_corrupt_images_give_a_clear_error(image_path, tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        ImageArchive.open(tmp_path / "nope.usetl")
    bad = tmp_path / "bad.usetl"
    data = bytearray(Path(image_path).read_bytes())
    data[-100] ^= 0xFF
    bad.write_bytes(data)
    p = cli("vm", "run", "--image", str(bad), "--", "print(1)")
    assert p.returncode == 2
    assert p.stderr.startswith("usetl: ") and len(p.stderr.strip().splitlines()) == 1
    p = cli("vm", "run", "--image", str(tmp_path / "nope.usetl"), "--", "print(1)")
    assert p.returncode == 2 and "usetl image build" in p.stderr


def test_clocks_are_the_hosts_and_read_without_exits(usf):
    import time

    before, mono_before = time.time(), time.monotonic()
    r = run(usf, """
        import time
        t, m = time.time(), time.monotonic()
        for _ in range(1000):
            time.time(); time.monotonic(); time.perf_counter()
        m2 = time.monotonic()
        print(t, m, m2)
    """)
    after, mono_after = time.time(), time.monotonic()
    assert r.error is None, r.error
    t, m, m2 = map(float, r.stdout.split())
    # Read between the host's readings before and after (a little slack for the TSC scale).
    assert before - 0.05 <= t <= after + 0.05
    assert mono_before - 0.05 <= m <= m2 <= mono_after + 0.05
    assert r.syscalls < 100  # 3,000 clock reads served by the vDSO, not by exits


def test_billed_cpu_is_measured_by_the_host_not_reported_by_the_guest(image):
    """Guest code that falsifies the clock the agent bills with changes nothing billed."""
    with start_usf(image) as u:
        r = u.run_code(
            "import time\n"
            "time.process_time = lambda: -1e9  # the agent would report a negative CPU time\n"
            "sum(i * i for i in range(300_000))\n"
        )
    assert r.error is None, r.error
    assert r.guest_cpu_ms > 0


def test_the_agent_channel_refuses_a_bad_exchange_and_a_no_op_costs_one_exit(usf):
    r = run(usf, """
        import errno, fcntl, os
        from usetl import abi
        fd = os.open(abi.AGENT_DEVICE, os.O_RDWR)
        found = []
        for request, header in ((abi.AGENT_EXCHANGE, abi.exchange_header(0, 4)),
                                (abi.AGENT_EXCHANGE, abi.exchange_header(5000, 2048)),
                                (0x5401, abi.exchange_header(0, 2048))):
            buf = bytearray(2048)
            buf[:16] = header
            try:
                fcntl.ioctl(fd, request, buf)
            except OSError as e:
                found.append(errno.errorcode[e.errno])
        print(*found)
    """)
    assert r.error is None, r.error
    assert r.stdout.split() == ["EINVAL", "EINVAL", "ENOTTY"]
    assert usf.run_code("pass").exits == 1  # the reply and the next wait: one ioctl


def test_an_event_reaches_the_handler_as_json_gives_it_inline_and_as_a_file(image):
    # The monitor encodes the event once: into the request itself, or into the event file
    # of the host region when it is larger than an inline request takes.
    usf = start_usf(image)
    try:
        r = usf.load_function("handler", source="def handler(event, context):\n"
                              "    x = event.pop('x')\n"
                              "    return {'event': event, 'nan': x != x}\n",
                              filename="echo.py")
        assert r.ok, r.error
        small = {"x": float("nan"), "text": "é \u2603 \"quoted\"", "nested": [[1, 2.5], {}]}
        large = {**small, "pad": "a" * (100 << 10)}
        for event in (small, large):
            r = usf.call(event, timeout=30)
            assert r.ok, r.error
            value = r.value["event"]
            assert r.value["nan"] is True  # as json.loads reads NaN
            assert {k: value[k] for k in ("text", "nested")} == \
                {"text": small["text"], "nested": small["nested"]}
            assert value.get("pad") == event.get("pad")
    finally:
        usf.close()
