"""The jail, seen from inside a real clone's monitor process as if its guest had taken it over.

The clones here take RunInMonitor requests (USETL_TEST_HOOKS=1): Python code run in the
monitor process itself, whose `result` comes back.
"""

import os
import select
import textwrap

import pytest

from usetl.etl.broker import Broker
from usetl.hyperfork import HyperForkError, Template
from usetl.hyperfork.template import JAILS, LOADER, MONITOR_ALLOWANCE, PIDS_PER_PROCESS
from usetl.usf import UsfConfig
from waiting import live_children, wait_until

pytestmark = pytest.mark.kvm

SECRET_VARIABLE = "USETL_JAIL_TEST_SECRET"

FUNCTION = '''
def handler(event, context):
    return {"twice": 2 * event["n"]}
'''
LOAD = {"kind": "exec", "code": "import sys; sys.path.insert(0, '/fn'); import fn"}


@pytest.fixture(scope="module")
def host_secrets(tmp_path_factory):
    """A stand-in for the server's state: registry.db and the admin token, outside any jail."""
    state = tmp_path_factory.mktemp("state")
    (state / "registry.db").write_text("every tenant's env secrets")
    (state / "admin-token").write_text("s3cret-admin-token")
    (state / "readable-by-all").write_text("not secret, just not in the jail")
    (state / "readable-by-all").chmod(0o644)
    state.chmod(0o755)
    return state


@pytest.fixture(scope="module")
def base(image_path):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("USETL_TEST_HOOKS", "1")
        mp.setenv(SECRET_VARIABLE, "in the server's environment only")
        t = Template.start(image_path)
    yield t
    t.close()


@pytest.fixture(scope="module")
def fn_template(base, tmp_path_factory):
    d = tmp_path_factory.mktemp("fn")  # mode 0700: shown through an idmapped mount
    (d / "fn.py").write_text(FUNCTION)
    t = base.load_function(LOAD, mounts={"fn": str(d)})
    yield t
    t.close()


def in_monitor(clone, code: str):
    """Run `code` in the clone's monitor process; its variable `result` is returned."""
    return clone.run_in_monitor(textwrap.dedent(code))


STATUS = """
fields = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines())
result = {k: fields[k].split()[0] for k in
          ("Uid", "Gid", "CapEff", "CapPrm", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")}
"""


@pytest.mark.parametrize("kind", ["base clone", "function clone"])
def test_a_clone_runs_as_an_unprivileged_uid_with_no_capabilities(base, fn_template, kind):
    template = base if kind == "base clone" else fn_template
    with template.fork() as clone:
        status = in_monitor(clone, STATUS)
        assert int(status["Uid"]) >= 100000 and int(status["Gid"]) >= 100000
        for caps in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
            assert int(status[caps], 16) == 0, status
        assert status["NoNewPrivs"] == "1"
        assert status["Seccomp"] == "2"  # a filter
        # And the guest still works, with its mounted code.
        if kind == "function clone":
            r = clone.run_code("import fn; print(fn.handler({'n': 21}, None)['twice'])")
            assert r.error is None and r.stdout == "42\n"


def test_each_function_template_and_base_clone_has_its_own_uid(base, fn_template):
    with base.fork() as a, base.fork() as b, fn_template.fork() as c, fn_template.fork() as d:
        uids = [in_monitor(x, STATUS)["Uid"] for x in (a, b, c, d)]
    assert len({uids[0], uids[1], uids[2]}) == 3
    assert uids[2] == uids[3]  # clones of one function template share its uid


def _uid(pid: int) -> int:
    """A process's real uid, as the host sees it."""
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Uid:")).split()[1])


def test_a_restored_template_is_jailed_once_as_the_one_saved_and_its_clones_share_it(
        fn_template, tmp_path):
    fn_template.save(tmp_path / "snap")
    loaded = Template.load(tmp_path / "snap")
    try:
        with loaded.fork() as a, loaded.fork() as b, fn_template.fork() as c:
            uids = [_uid(x.pid) for x in (loaded, a, b, c)]
    finally:
        loaded.close()
    assert uids[0] == uids[1] == uids[2] != 0
    assert uids[3] == _uid(fn_template.pid) != uids[0]


JAIL_VIEW = """
import os
result = {"pid": os.getpid(), "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
          "root": sorted(os.listdir("/")), "dev": sorted(os.listdir("/dev")),
          "kvm": os.stat("/dev/kvm").st_uid == os.getuid()}
"""


def test_a_restored_templates_clones_are_jailed_as_the_saved_ones(fn_template, tmp_path):
    fn_template.save(tmp_path / "snap")
    with pytest.MonkeyPatch.context() as mp:  # a snapshot loader whose clones take RunInMonitor
        mp.setenv("USETL_TEST_HOOKS", "1")
        LOADER.stop()
        loaded = [Template.load(tmp_path / "snap") for _ in range(2)]  # the 2nd: a root reused
    LOADER.stop()  # restored templates outlive their loader, as a jailer's clones outlive it
    try:
        with fn_template.fork() as original:
            expected = in_monitor(original, JAIL_VIEW)
        for template in loaded:
            with template.fork() as clone:
                seen = in_monitor(clone, JAIL_VIEW)
                r = clone.run_code("import fn; print(fn.handler({'n': 21}, None)['twice'])")
                assert r.error is None and r.stdout == "42\n"  # its 0700 code directory
            # In a PID namespace of its own, as the saved one's clones are: its pid there is
            # not the host's, and its /proc shows itself alone.
            assert seen["pid"] != clone.pid and seen["pids"] == [seen["pid"]]
            assert (seen["root"], seen["dev"], seen["kvm"]) == (
                expected["root"], expected["dev"], True)
    finally:
        for template in loaded:
            template.close()


def test_the_host_files_are_not_there(fn_template, host_secrets):
    with fn_template.fork() as clone:
        seen = in_monitor(clone, f"""
            import os
            result = {{
                "paths": [p for p in {[str(p) for p in host_secrets.iterdir()]!r}
                          if os.path.exists(p)],
                "state_dir": os.path.exists({str(host_secrets)!r}),
                "root": sorted(os.listdir("/")),
                "home": os.listdir("/root"),
                "write": None,
            }}
            try:
                open("/usetl-was-here", "w")
            except OSError as e:
                result["write"] = e.strerror
        """)
    assert seen["paths"] == [] and not seen["state_dir"]
    # The system's libraries, the interpreter, usetl and the function's code (under /tmp
    # here) are there; nothing else of the host, e.g. not /home, /var or /root's files.
    assert "home" not in seen["root"] and "var" not in seen["root"], seen["root"]
    assert set(seen["home"]) <= {".pyenv", ".cache"}, seen["home"]  # interpreter, image
    assert seen["write"] == "Read-only file system"


@pytest.mark.parametrize("other", ["another tenant's clone", "a sibling clone"])
def test_a_clone_sees_no_other_process_and_cannot_open_its_memory(base, fn_template, other):
    with (base if other.startswith("another") else fn_template).fork() as victim, \
            fn_template.fork() as clone:
        victim_pid = in_monitor(victim, "import os; result = os.getpid()")
        seen = in_monitor(clone, f"""
            import os
            try:
                open("/proc/{victim_pid}/mem", "rb")
                mem = "opened"
            except OSError as e:
                mem = e.strerror
            result = {{"pids": [int(p) for p in os.listdir("/proc") if p.isdigit()],
                      "me": os.getpid(), "mem": mem}}
        """)
    # Not even its function template: every jailed process is non-dumpable, so hidden
    # by hidepid=invisible and closed to ptrace and /proc/PID/mem, same uid or not.
    assert seen["pids"] == [seen["me"]]
    assert seen["mem"] == "No such file or directory"


def test_the_environment_is_empty_and_only_its_own_fds_are_open(base):
    with base.fork() as clone:
        seen = in_monitor(clone, """
            import ctypes, os
            ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # dumpable, to read its own /proc/self
            fds = {}
            for fd in os.listdir("/proc/self/fd"):
                try:
                    fds[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
                except FileNotFoundError:
                    pass  # the listing's own descriptor
            result = {"environ": dict(os.environ), "initial": open("/proc/self/environ").read(),
                      "fds": fds, "me": os.getpid()}
        """)
    assert seen["environ"] == {}
    assert SECRET_VARIABLE not in seen["initial"]
    own = [link for fd, link in seen["fds"].items() if fd > 2]
    # Its channel and its connection to the egress broker.
    assert sum(link.startswith("socket:") for link in own) == 2, own
    mine = ("socket:", "anon_inode:kvm", "/memfd:usetl", "/dev/kvm", f"/proc/{seen['me']}/pagemap")
    assert all(link.startswith(mine) for link in own), own


def _wait_for_exit(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # gone, and reaped by its template already
    try:
        assert select.select([fd], [], [], 30)[0], f"process {pid} is still alive"
    finally:
        os.close(fd)


@pytest.mark.parametrize("call", [
    "ctypes.CDLL(None).ptrace(0, 0, 0, 0)",
    "import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)",
    "ctypes.CDLL(None).unshare(0x10000000)",
])
def test_a_syscall_outside_the_allow_list_kills_the_clone_with_sigsys(
        image_path, monkeypatch, capfd, call):
    monkeypatch.setenv("USETL_TEST_HOOKS", "1")
    with Template.start(image_path) as template:  # its stderr is this test's
        clone = template.fork(warm=False)
        try:
            assert in_monitor(clone, "import os; result = os.getpid() > 0")
            with pytest.raises(HyperForkError, match="went away"):
                in_monitor(clone, f"import ctypes\n{call}\nresult = 'survived'")
            _wait_for_exit(clone.pid)
            with pytest.raises(HyperForkError):
                clone.run_code("print(1)")  # the controller sees an instance that failed
        finally:
            clone.close()
        template.memory_bytes()  # a request: the template has handled the SIGCHLD by now
    # The template, the clone's parent, says why it died.
    assert "killed by SIGSYS (a syscall outside the jail's seccomp allow-list)" in \
        capfd.readouterr().err


@pytest.fixture(scope="module")
def egress_server(module_http_server):
    module_http_server.add("/data/a", b"allowed bytes")
    module_http_server.add("/secret", b"not for this function")
    return module_http_server


@pytest.fixture(scope="module")
def broker():
    b = Broker()
    yield b
    b.close()


@pytest.fixture(scope="module")
def networked(image_path, egress_server, broker):
    """A template whose functions may fetch /data/ from the server and open raw TCP to it."""
    base = egress_server.base
    # Small memories, so that inspecting all of a clone's is quick.
    config = UsfConfig(allow=[f"{base}/data/", f"tcp://127.0.0.1:{egress_server.port}"],
                       allow_private=True, mem_mib=128, host_region_mib=16,
                       guest_region_mib=16)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("USETL_TEST_HOOKS", "1")
        t = Template.start(image_path, config=config, broker=broker)
    yield t
    t.close()


# Requests made from the monitor itself, straight to its broker connection, as a monitor that
# its guest took over would: the broker's policy and checks are all that stands in the way.
AS_TAKEN_OVER = """
import mmap, os
from usetl import hostmm
from usetl.etl import egress
broker = egress.current(None, 0.0)
fd = hostmm.sealed_memfd("probe", 1 << 20)
span = egress.Span(fd, 0, memoryview(mmap.mmap(fd, 1 << 20)))
# The host region's files: the clone's own (sealed) and the template's, which it still holds.
template_file = next(int(n) for n in os.listdir("/proc/self/fd")
                     if os.readlink(f"/proc/self/fd/{n}").startswith("/memfd:usetl-host")
                     and not hostmm.has_fixed_size(int(n)))
def outcome(call):
    try:
        call()
        return "done"
    except Exception as e:
        return [type(e).__name__, getattr(e, "kind", None), getattr(e, "reason", str(e))]
result = {
    "broker": type(broker).__name__,
    "secret": outcome(lambda: broker.get(SECRET, span, None)),
    "denied_port": outcome(lambda: broker.connect(2, ("127.0.0.1", 1), 1.0, None)),
    "into_the_template": outcome(lambda: broker.get(ALLOWED, egress.Span(
        template_file, 0, span.view), None)),
    "allowed": outcome(lambda: broker.get(ALLOWED, span, None)),
    "bytes": bytes(span.view[:13]),
    "net": open("/proc/self/net/dev").read(),
}
"""


def test_the_monitor_has_no_network_and_the_broker_enforces_the_policy(networked,
                                                                       egress_server):
    base = egress_server.base
    with networked.fork() as clone:
        seen = in_monitor(clone, "import ctypes\nctypes.CDLL(None).prctl(4, 1, 0, 0, 0)\n"
                          f"SECRET, ALLOWED = {base + '/secret'!r}, {base + '/data/a'!r}\n"
                          + AS_TAKEN_OVER)
    assert seen["broker"] == "BrokerEgress"
    assert seen["secret"] == ["EtlError", "denied", "not covered by the allow-list"]
    assert seen["denied_port"] == ["EtlError", "denied", "not covered by the allow-list"]
    # The template's memory file (which every clone maps) is refused: only a sealed file.
    assert seen["into_the_template"][1] == "invalid", seen["into_the_template"]
    assert seen["allowed"] == "done" and seen["bytes"] == b"allowed bytes"
    # An empty network namespace: a loopback device and nothing else.
    interfaces = [line.split(":")[0].strip() for line in seen["net"].splitlines()[2:]]
    assert interfaces == ["lo"]
    assert ("GET", "/secret") not in [r[:2] for r in egress_server.requests]


def test_a_monitor_that_connects_by_itself_dies(networked, egress_server, capfd):
    with networked.fork(warm=False) as clone:
        with pytest.raises(HyperForkError, match="went away"):
            in_monitor(clone, f"""
                import socket
                socket.create_connection(("127.0.0.1", {egress_server.port}), 5)
                result = "connected"
            """)
        _wait_for_exit(clone.pid)


def test_the_guest_reaches_what_its_policy_allows_through_the_broker(networked, egress_server):
    base = egress_server.base
    with networked.fork() as clone:
        r = clone.run_code(f"""
import urllib.request
from usetl import etl
print(bytes(etl.get({base + '/data/a'!r}).view()))
with urllib.request.urlopen({base + '/data/a'!r}) as response:  # a proxied socket
    print(response.read())
try:
    etl.get({base + '/secret'!r})
except etl.EtlError as e:
    print(e.kind)
import pathlib
pathlib.Path("/tmp/up").write_bytes(b"from /tmp")
for body in (b"from the guest region", pathlib.Path("/tmp/up")):  # read by the broker
    print(etl.post({base + '/data/up'!r}, body).json()["size"])
""")
    assert r.error is None, r.error
    assert r.stdout.splitlines() == ["b'allowed bytes'", "b'allowed bytes'", "denied", "21", "9"]
    assert [body for path, _, body in egress_server.posts if path == "/data/up"] == [
        b"from the guest region", b"from /tmp"]
    # Billed from the broker's account: three GETs (one refused, not counted), a connect
    # and two POSTs; plus the bytes the connected socket carried past the broker.
    uploaded = len(b"from the guest regionfrom /tmp")
    assert r.io.requests == 4
    assert r.io.bytes_out >= uploaded + len(b"GET /data/a HTTP/1.1\r\n")
    assert r.io.bytes_in > 2 * len(b"allowed bytes")  # the ETL body, the socket's response


def test_rollback_undoes_what_the_broker_wrote_into_the_clones_region(networked,
                                                                      egress_server):
    with networked.fork() as clone:
        r = clone.run_code(f"from usetl import etl\netl.get({egress_server.base + '/data/a'!r})")
        assert r.error is None, r.error
        assert clone.inspect(b"allowed bytes").found
        clone.rollback()
        after = clone.inspect(b"allowed bytes")
    assert after.found == []
    assert after.sha256 == networked.memory_digests()


def test_a_pipeline_stage_uploads_from_its_lent_region_and_still_hands_its_files_on(
        networked, egress_server, tmp_path):
    tmp_path.chmod(0o755)
    (tmp_path / "stage.py").write_text(f"""
from usetl import etl
def handler(event, context):
    etl.put("out", b"handed on")
    return etl.post({egress_server.base + '/data/up'!r}, b"from the lent region").json()["size"]
""")
    load = {"kind": "load", "source": "import sys; sys.path.insert(0, '/stage')\n"
            "from stage import handler", "filename": "/entry.py", "handler": "handler"}
    stage = networked.load_function(load, mounts={"stage": str(tmp_path)})
    try:
        with stage.fork() as clone:
            result, kept = clone.call_stage({}, {}, 30, None, keep_files=True)
    finally:
        stage.close()
    try:
        assert result.error is None, result.error
        assert result.value == len(b"from the lent region") and result.io.bytes_out == 20
        # The broker read the upload without keeping the file from being sealed.
        assert [f.name for f in kept.files.files] == ["out"]
    finally:
        kept.close()


def test_io_figures_a_taken_over_monitor_forges_are_ignored(networked, egress_server):
    with networked.fork() as clone:
        in_monitor(clone, """
            from usetl.invocation import IoUsage
            from usetl.usf import running
            running.Usf._io = lambda self: IoUsage(requests=10**6, bytes_in=10**12,
                                                   host_cpu_s=-1e9, wall_s=-1e9)
            result = None
        """)
        r = clone.run_code(f"from usetl import etl\netl.get({egress_server.base + '/data/a'!r})")
    assert r.error is None, r.error
    assert r.io.requests == 1 and r.io.bytes_in == len(b"allowed bytes")
    assert r.io.host_cpu_s >= 0 and r.io.wall_s > 0


def test_a_dead_broker_fails_its_instances_clearly_and_is_started_again(networked, broker,
                                                                        egress_server):
    url = egress_server.base + "/data/a"
    fetch = f"from usetl import etl\nprint(bytes(etl.get({url!r}).view()))"
    with networked.fork() as clone:
        assert broker.alive
        broker.process.kill()
        broker.process.wait()
        with pytest.raises(HyperForkError, match="cannot be billed"):
            clone.run_code(fetch)
    with networked.fork() as fresh:
        r = fresh.run_code(fetch)
    assert r.error is None and r.stdout == "b'allowed bytes'\n"
    assert broker.restarts == 1


def _own_cgroup_limits(pid: int) -> tuple[int, int]:
    """The memory and pids limits of the cgroups `pid` is in: this controller's, and holding
    that process alone."""
    cgroups = JAILS.cgroups
    limit_file = "memory.max" if cgroups.version == 2 else "memory.limit_in_bytes"
    with open(f"/proc/{pid}/cgroup") as f:
        groups = dict(line.strip().split(":", 2)[1:] for line in f)
    own = {kind: groups.get(kind) or groups[""] for kind in ("memory", "pids")}
    assert all(os.path.dirname(path).endswith(f"/usetl/{os.getpid()}")
               for path in own.values())
    dirs = {kind: f"{cgroups.dirs[kind]}/{os.path.basename(path)}" for kind, path in own.items()}
    def alone(path: str) -> bool:
        with open(f"{path}/cgroup.procs") as f:
            return f.read().split() == [str(pid)]

    for path in dirs.values():
        # A template's shell starts in its cgroup and moves itself into its own at once.
        wait_until(lambda p=path: alone(p), f"{pid} alone in {path}", timeout=30)
    with open(f"{dirs['memory']}/{limit_file}") as f:
        limit = int(f.read())
    with open(f"{dirs['pids']}/pids.max") as f:
        return limit, int(f.read())


def test_the_clone_is_in_a_cgroup_of_its_own_with_limits(fn_template):
    """Forked on demand (placed by the controller) or made ahead by its idle template (it
    moved itself into a cgroup the controller prepared), a clone is alone in its cgroup."""
    made_ahead = []
    expected = (2 * fn_template.info.guest_bytes + MONITOR_ALLOWANCE, PIDS_PER_PROCESS)
    for _ in range(2):
        with fn_template.fork() as clone:
            made_ahead.append("made_ahead" in clone.timings)
            assert _own_cgroup_limits(clone.pid) == expected
        wait_until(lambda: live_children(fn_template.pid) - {clone.pid}, "a shell")
    assert made_ahead[1]


def test_a_restored_template_and_its_first_clone_are_each_in_a_cgroup_of_their_own(
        fn_template, tmp_path):
    """Both moved themselves into cgroups the controller prepared with the load."""
    fn_template.save(tmp_path / "snap")
    loaded = Template.load(tmp_path / "snap")
    try:
        expected = (2 * loaded.info.guest_bytes + MONITOR_ALLOWANCE, PIDS_PER_PROCESS)
        assert _own_cgroup_limits(loaded.pid) == expected
        with loaded.fork() as clone:
            assert clone.timings["made_ahead"] == 1  # the shell it made at load
            assert _own_cgroup_limits(clone.pid) == expected
            r = clone.run_code("import fn; print(fn.handler({'n': 21}, None)['twice'])")
            assert r.error is None and r.stdout == "42\n"
    finally:
        loaded.close()


def test_the_loader_makes_its_next_template_process_ahead_and_still_checks_a_changed_file(
        fn_template, tmp_path):
    """After a jailed load the snapshot loader forks the next template process ahead (its
    spare), which moves itself into a cgroup the controller sent with that load: the next
    load of the snapshot unchanged is that process, alone in a cgroup with its limits, and
    its clones are as any restored template's; a memory file changed since is checked again
    all the same."""
    snap = tmp_path / "snap"
    fn_template.save(snap)
    LOADER.stop()
    Template.prepare_load()
    loader = LOADER._process.pid
    made = wait_until(lambda: live_children(loader), "the loader's PID namespace's init")
    first = Template.load(snap)
    made.add(first.pid)
    first.close()
    spare = wait_until(lambda: live_children(loader) - made, "the loader's spare")
    loaded = Template.load(snap)
    try:
        assert {loaded.pid} == spare
        expected = (2 * loaded.info.guest_bytes + MONITOR_ALLOWANCE, PIDS_PER_PROCESS)
        assert _own_cgroup_limits(loaded.pid) == expected
        with loaded.fork() as clone:
            assert _own_cgroup_limits(clone.pid) == expected
            r = clone.run_code("import fn; print(fn.handler({'n': 21}, None)['twice'])")
            assert r.error is None and r.stdout == "42\n"
    finally:
        made.add(loaded.pid)
        loaded.close()
    wait_until(lambda: live_children(loader) - made, "the loader's next spare")
    with open(snap / "ram.mem", "r+b") as f:  # one byte of the data, the size unchanged
        at = os.lseek(f.fileno(), 0, os.SEEK_DATA)
        os.pwrite(f.fileno(), bytes([os.pread(f.fileno(), 1, at)[0] ^ 0xFF]), at)
    with pytest.raises(HyperForkError, match="fails its checksum"):
        Template.load(snap)


PTY_CHILD = """
import fcntl, os, pty, struct, termios
pid, master = pty.fork()
if pid == 0:
    line = input("name? ")
    print("hello", line, os.open(os.ttyname(0), os.O_RDWR) > 2, tuple(os.get_terminal_size(0)),
          flush=True)
    os._exit(3)
seen = b""
while b"name? " not in seen:
    seen += os.read(master, 100)
fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
os.write(master, b"jail\\n")
while b"(80, 24)" not in seen:
    seen += os.read(master, 100)
print(seen.decode().splitlines(), os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def test_a_pseudo_terminal_is_shared_with_a_forked_child_on_the_jails_own_devpts(base):
    with base.fork() as clone:
        r = clone.run_code(PTY_CHILD, timeout=30)
        assert r.error is None, r.error
        assert r.stdout == "['name? jail', 'hello jail True (80, 24)'] 3\n", r.stdout
        own = in_monitor(clone, "import os; result = os.stat('/dev/pts').st_dev")
    assert own != os.stat("/dev/pts").st_dev  # a devpts instance of the jail's, not the host's
