"""HyperFork: templates, copy-on-write clones, rollback and snapshots, with real VMs."""

import json
import os
import struct
import time
import uuid

import pytest

from usetl.hyperfork import HyperForkError, Template
from usetl.hyperfork.protocol import WarmUp
from usetl.hyperfork.template import LOADER
from usetl.usf import UsfConfig
from waiting import ended, live_children, wait_until, waits_for_a_message

pytestmark = pytest.mark.kvm

FUNCTION = '''
import json, csv, decimal, random, uuid, time
LOADED_AT = time.time()
IMPORTS = 1
def handler(event, context):
    return {"sum": sum(event["values"])}
'''

LOAD = {"kind": "exec", "code": "import sys; sys.path.insert(0, '/fn'); import fn"}


@pytest.fixture(scope="module")
def base(image_path):
    t = Template.start(image_path)
    yield t
    t.close()


@pytest.fixture(scope="module")
def function_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fn")
    (d / "fn.py").write_text(FUNCTION)
    d.chmod(0o755)  # a jailed monitor's uid reads it as "others" do (mktemp gives 0700)
    return d


@pytest.fixture(scope="module")
def fn_template(base, function_dir):
    t = base.load_function(LOAD, mounts={"fn": str(function_dir)})
    yield t
    t.close()


LAZY = '''
import random, sys
CALLS = 0
OWN = random.Random()
def handler(event, context):
    global CALLS
    CALLS += 1
    imported_before = "fractions" in sys.modules
    import fractions  # a lazy import: done once by the warm-up, then in every clone
    if event == "fail":
        raise RuntimeError("the warm-up event is refused")
    return {"calls": CALLS, "imported_before": imported_before, "event": event,
            "request_id": context.request_id}
'''
LAZY_LOAD = {"kind": "load", "path": "/lazy/lazy.py", "handler": "handler"}


@pytest.fixture(scope="module")
def lazy_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("lazy")
    (d / "lazy.py").write_text(LAZY)
    return d


@pytest.fixture(scope="module")
def warm_template(base, lazy_dir):
    warmup = WarmUp({"deployer": True}, {"request_id": "warmup"})
    t = base.load_function(LAZY_LOAD, mounts={"lazy": str(lazy_dir)}, warmup=warmup)
    yield t
    t.close()


def out(result):
    assert result.error is None, result.error
    return result.stdout


def running(pid: int) -> bool:
    """Whether the process runs (an exited one may stay a zombie until its parent reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def test_a_clone_runs_code_and_is_a_separate_process(base):
    with base.fork() as clone:
        assert clone.pid not in (os.getpid(), base.pid)
        assert out(clone.run_code("print(6 * 7)")) == "42\n"


def test_a_warmed_clone_ran_its_warm_up_and_then_took_a_fresh_identity(base):
    with base.fork(warm=True) as a, base.fork(warm=False) as b:
        code = "import os; print(os.environ['USETL_INSTANCE_ID'])"
        assert out(a.run_code(code)).strip() == a.instance
        assert out(b.run_code(code)).strip() == b.instance


@pytest.mark.parametrize("frozen", ["fn_template", "warm_template"])
def test_one_hundred_clones_never_share_random_values(frozen, request):
    template = request.getfixturevalue(frozen)
    code = "import os, random, uuid; print(os.urandom(16).hex(), random.random(), uuid.uuid4())"
    seen = []
    for _ in range(100):
        with template.fork(warm=False) as clone:
            seen.append(out(clone.run_code(code)).split())
    for column in range(3):
        values = [row[column] for row in seen]
        assert len(set(values)) == 100, f"column {column} repeats across clones"


def test_a_clone_has_its_own_instance_id_and_the_host_clock(base):
    with base.fork() as a, base.fork() as b:
        code = "import os, time; print(os.environ['USETL_INSTANCE_ID'], time.time())"
        before = time.time()
        ida, ta = out(a.run_code(code)).split()
        after = time.time()
        idb, _ = out(b.run_code(code)).split()
        assert ida == a.instance and idb == b.instance and ida != idb
        assert before - 0.05 <= float(ta) <= after + 0.05  # the host's clock, read live


def test_a_function_clone_does_not_import_again(fn_template):
    code = "import sys, fn; print(len(sys.modules), fn.LOADED_AT, fn.IMPORTS)"
    with fn_template.fork() as clone:
        before = time.time()
        modules, loaded_at, imports = out(clone.run_code(code)).split()
        again = out(clone.run_code(code)).split()
    assert float(loaded_at) < before  # module-level code ran in the template, not here
    assert imports == "1" and again[0] == modules  # nothing new was imported
    with fn_template.fork() as clone:
        first = clone.run_code(code)
    # No import work: loading the function made the file syscalls imports make.
    assert first.syscalls < fn_template.info.load.syscalls
    assert "csv" in out_modules(fn_template)


def out_modules(template):
    with template.fork() as clone:
        return out(clone.run_code("import sys; print(sorted(sys.modules))"))


def test_rollback_restores_memory_exactly_and_leaves_no_secret(fn_template):
    template_digests = fn_template.memory_digests()
    with fn_template.fork() as clone:
        secret = out(clone.run_code(
            "import os\n"
            "SECRET = os.urandom(24).hex()\n"
            "heap = [SECRET * 50 for _ in range(100)]\n"
            "open('/tmp/secret', 'w').write(SECRET)\n"
            "print(SECRET)\n"
        )).strip()
        assert clone.inspect(secret.encode()).found, "the secret should be in guest memory"
        info = clone.rollback()
        assert info.pages > 0
        after = clone.inspect(secret.encode())
        assert after.sha256 == template_digests
        assert after.found == []
        code = "import os\nprint(os.path.exists('/tmp/secret'), 'SECRET' in globals())"
        assert out(clone.run_code(code)) == "False False\n"
        assert clone.inspect(secret.encode()).found == []


def test_killing_a_clone_leaves_the_template_and_other_clones_working(base):
    with base.fork() as survivor:
        victim = base.fork()
        victim.kill()
        wait_until(lambda: not running(victim.pid), "the killed clone's process to end")
        with pytest.raises(HyperForkError):
            victim.run_code("print(1)")
        victim.close()
        assert out(survivor.run_code("print('alive')")) == "alive\n"
        with base.fork() as fresh:
            assert out(fresh.run_code("print('fresh')")) == "fresh\n"


def test_a_crashed_guest_ends_its_clone_only(base):
    with base.fork() as clone:
        result = clone.run_code("import ctypes; ctypes.string_at(8)")
        assert result.error.type == "GuestFault"
        with pytest.raises(HyperForkError, match="died"):
            clone.rollback()
    with base.fork() as other:
        assert out(other.run_code("print(3)")) == "3\n"


def test_a_new_clone_is_served_by_the_process_its_template_made_ahead(base, function_dir):
    """An idle template holds its next clone's process made ahead (a shell), its request
    path run once and rolled back; the next fork gets it, and it is a clone like any: the
    working set learnt since it was made, its own identity, its template's bytes after a
    rollback, but fewer pages of its new VM touched the first time. Closing the template
    ends the shell."""
    fn = base.load_function(LOAD, mounts={"fn": str(function_dir)})
    code = "import fn; print(fn.handler({'values': [1, 2, 3]}, None)['sum'])"
    try:
        with fn.fork(warm=False) as first:
            assert "made_ahead" not in first.timings
            cold = first.run_code(code)
            assert out(cold) == "6\n"
        shell = wait_until(lambda: live_children(fn.pid) - {first.pid}, "the template's shell")
        wait_until(lambda: all(waits_for_a_message(p) for p in shell), "the shell made")
        with fn.fork(warm=False) as clone:
            assert {clone.pid} == shell and clone.timings["made_ahead"] == 1
            assert clone.timings["prefetched_pages"] > 0 and "warmed_ahead_ms" in clone.timings
            warmed = clone.run_code(code)
            assert out(warmed) == "6\n"
            assert warmed.first_touches < cold.first_touches / 2
            # The first clone may still be ending: only a process made since is a shell.
            other = wait_until(lambda: live_children(fn.pid) - {first.pid, clone.pid},
                               "the next shell")
            with fn.fork() as second:
                assert {second.pid} == other
                assert out(clone.run_code("import uuid; print(uuid.uuid4())")) != out(
                    second.run_code("import uuid; print(uuid.uuid4())"))
            clone.rollback()
            assert clone.inspect().sha256 == fn.memory_digests()
        last = wait_until(lambda: live_children(fn.pid) - {first.pid, clone.pid, second.pid},
                          "a third shell")
    finally:
        fn.close()
    wait_until(lambda: all(ended(p) for p in last), "the shell's end with its template")


def test_clones_after_the_first_prefetch_what_its_first_request_wrote(base, function_dir):
    fn = base.load_function(LOAD, mounts={"fn": str(function_dir)})
    try:
        code = "import fn; print(fn.handler({'values': [1, 2, 3]}, None)['sum'])"
        with fn.fork(warm=False) as first:  # the recorder: its first request's pages
            assert first.timings["prefetched_pages"] == 0
            assert out(first.run_code(code)) == "6\n"
        with fn.fork(warm=False) as clone, fn.fork(warm=False) as other:
            assert clone.timings["prefetched_pages"] > 0
            assert out(clone.run_code(code)) == "6\n"
            assert out(clone.run_code("import uuid; print(uuid.uuid4())")) != out(
                other.run_code("import uuid; print(uuid.uuid4())"))
            clone.rollback()
            assert clone.inspect().sha256 == fn.memory_digests()
    finally:
        fn.close()


def test_a_failing_load_is_a_clear_error(base):
    with pytest.raises(HyperForkError, match="ModuleNotFoundError"):
        base.load_function({"kind": "exec", "code": "import no_such_module_here"})


def test_snapshot_round_trip_needs_no_start(fn_template, tmp_path):
    fn_template.save(tmp_path / "snap")
    loaded = Template.load(tmp_path / "snap")
    try:
        assert loaded.memory_digests() == fn_template.memory_digests()
        with loaded.fork() as clone:
            code = "import fn; print(fn.handler({'values': [1, 2, 3]}, None)['sum'], fn.IMPORTS)"
            assert out(clone.run_code(code)) == "6 1\n"
            clone.rollback()
            assert out(clone.run_code("print('ok')")) == "ok\n"
    finally:
        loaded.close()


def test_a_restored_templates_first_clone_is_made_at_once_and_prefetches_the_saved_working_set(
        base, function_dir, tmp_path):
    """A template saved before any clone of it ran records its working set in a clone of its
    own; the snapshot keeps it, and the restored template's first clone (its first shell,
    made at load) copies it before its guest runs."""
    fn = base.load_function(LOAD, mounts={"fn": str(function_dir)})
    try:
        fn.save(tmp_path / "snap")
    finally:
        fn.close()
    loaded = Template.load(tmp_path / "snap")
    try:
        with loaded.fork(warm=False) as clone:
            assert clone.timings["made_ahead"] == 1 and clone.timings["prefetched_pages"] > 0
            code = "import fn; print(fn.handler({'values': [1, 2, 3]}, None)['sum'], fn.IMPORTS)"
            assert out(clone.run_code(code)) == "6 1\n"
            clone.rollback()
            assert clone.inspect().sha256 == loaded.memory_digests()
    finally:
        loaded.close()


def test_a_prepared_loader_makes_the_next_load(fn_template, tmp_path):
    """prepare_load() starts the snapshot loader ahead: the next load is made by that
    process, not by one started on the load's time."""
    fn_template.save(tmp_path / "snap")
    LOADER.stop()
    Template.prepare_load()
    prepared = LOADER._process.pid
    Template.load(tmp_path / "snap").close()
    assert LOADER._process.pid == prepared


def _merged_by_ksm(pid: int) -> bool:
    """Whether the kernel's KSM may merge every private page of the process."""
    with open(f"/proc/{pid}/ksm_stat") as f:
        return "ksm_merge_any: yes" in f.read().splitlines()


def test_merge_pages_makes_a_template_and_its_clones_mergeable(image_path, base):
    with base.fork() as clone:
        assert not _merged_by_ksm(base.pid) and not _merged_by_ksm(clone.pid)
    merging = Template.start(image_path, config=UsfConfig(merge_pages=True))
    try:
        with merging.fork() as clone:
            assert _merged_by_ksm(merging.pid) and _merged_by_ksm(clone.pid)
            assert out(clone.run_code("print(6 * 7)")) == "42\n"
            clone.rollback()
            assert out(clone.run_code("print('again')")) == "again\n"
    finally:
        merging.close()


def _corrupt_state(path):
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))


def _other_version(path):
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 8, 99)
    path.write_bytes(bytes(data))


def _truncate_memory(path):
    mem = path.parent / "ram.mem"
    os.truncate(mem, os.path.getsize(mem) // 2)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_corrupt_state, "checksum"),
        (_other_version, "format version 99"),
        (_truncate_memory, "truncated or has the wrong size"),
        (lambda p: p.write_bytes(p.read_bytes()[:40]), "truncated"),
        (lambda p: p.unlink(), "no snapshot"),
    ],
)
def test_a_damaged_snapshot_is_refused(base, tmp_path, damage, message):
    snap = tmp_path / "snap"
    base.save(snap)
    damage(snap / "state.usetl")
    with pytest.raises(HyperForkError, match=message):
        Template.load(snap)


def test_a_snapshot_changed_after_a_load_is_checked_again(fn_template, tmp_path):
    snap = tmp_path / "snap"
    fn_template.save(snap)
    Template.load(snap).close()  # checks every file: the loader remembers them unchanged
    again = Template.load(snap)  # read no more, and the same template
    try:
        assert again.memory_digests() == fn_template.memory_digests()
        with again.fork() as clone:
            assert out(clone.run_code("import fn; print(fn.IMPORTS)")) == "1\n"
    finally:
        again.close()
    with open(snap / "ram.mem", "r+b") as f:  # one byte of the data, the size unchanged
        at = os.lseek(f.fileno(), 0, os.SEEK_DATA)
        byte = os.pread(f.fileno(), 1, at)
        os.pwrite(f.fileno(), bytes([byte[0] ^ 0xFF]), at)
    with pytest.raises(HyperForkError, match="fails its checksum"):
        Template.load(snap)


def test_a_snapshot_saved_again_over_one_loaded_is_loaded_anew(base, fn_template, tmp_path):
    """The loader keeps a snapshot it loaded thawed for its next loads of the same files: a
    snapshot saved again in that directory (new files) is the one the next load restores."""
    snap = tmp_path / "snap"
    base.save(snap)
    for _ in range(2):  # thawed on the first load, kept for the second
        loaded = Template.load(snap)
        try:
            with loaded.fork() as clone:
                result = clone.run_code("import fn")
                assert result.error is not None and result.error.type == "ModuleNotFoundError"
        finally:
            loaded.close()
    base.fork(warm=False).close()  # the base as other tests find it (the save's clone trimmed)
    fn_template.save(snap)
    loaded = Template.load(snap)
    try:
        assert loaded.memory_digests() == fn_template.memory_digests()
        with loaded.fork() as clone:
            assert out(clone.run_code("import fn; print(fn.IMPORTS)")) == "1\n"
    finally:
        loaded.close()


def test_the_cli_runs_one_invocation_in_n_clones(image_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "usetl", "vm", "run", "--image", str(image_path), "--fork", "3",
         "--json", "--", "import os; print(os.environ['USETL_INSTANCE_ID'])"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    ids = [clone["stdout"].strip() for clone in report["clones"]]
    assert len(ids) == 3 and len(set(ids)) == 3
    assert all(uuid.UUID(i) for i in ids)


def test_clones_touching_memory_do_not_grow_the_template_for_good(base):
    frozen = base.memory_bytes()
    with base.fork(warm=False) as clone:
        out(clone.run_code("b = bytearray(96 << 20); b[::4096] = b'x' * len(b[::4096])"))
    assert base.memory_bytes() > frozen + (64 << 20)  # the clone's faults added zero pages
    base.fork(warm=False).close()  # a fork trims them
    assert base.memory_bytes() <= frozen + (1 << 20)


def test_template_and_clone_processes_are_confined(base):
    with base.fork(warm=False) as clone:
        for pid in (base.pid, clone.pid):  # "Max core file size  0  0  bytes"
            status = open(f"/proc/{pid}/status").read()
            assert "NoNewPrivs:\t1" in status
            limits = open(f"/proc/{pid}/limits").read()
            core = next(line for line in limits.splitlines() if line.startswith("Max core"))
            assert core.split()[4:6] == ["0", "0"]


def test_a_loaded_handler_is_invoked_in_clones_and_rollback_resets_its_globals(base, tmp_path):
    (tmp_path / "handler.py").write_text(
        "CALLS = 0\n"
        "def handler(event, context):\n"
        "    global CALLS\n"
        "    CALLS += 1\n"
        "    return {'sum': sum(event['values']), 'calls': CALLS, 'id': context.request_id}\n"
    )
    load = {"kind": "load", "path": "/code/handler.py", "handler": "handler"}
    with base.load_function(load, mounts={"code": str(tmp_path)}) as fn, fn.fork() as clone:
        first = clone.invoke({"values": [1, 2, 3]}, {"request_id": "a"})
        second = clone.invoke({"values": [4]}, {"request_id": "b"})
        assert (first.value, second.value) == (
            {"sum": 6, "calls": 1, "id": "a"}, {"sum": 4, "calls": 2, "id": "b"})
        clone.rollback()
        assert clone.invoke({"values": []}, {"request_id": "c"}).value["calls"] == 1


def test_the_cli_forks_a_function_template_for_a_handler(image_path, tmp_path):
    import subprocess
    import sys

    (tmp_path / "fn.py").write_text("def main(event, context):\n    return sum(event)\n")
    proc = subprocess.run(
        [sys.executable, "-m", "usetl", "vm", "run", "--image", str(image_path), "--fork", "2",
         "--json", "--handler", f"{tmp_path / 'fn.py'}:main", "--event", "[1, 2, 3]"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert [c["value"] for c in json.loads(proc.stdout)["clones"]] == [6, 6]


def test_the_cli_runs_a_package_handler_with_its_data_files(image_path, tmp_path):
    import subprocess
    import sys

    package = tmp_path / "report"
    (package / "templates").mkdir(parents=True)
    (package / "__init__.py").write_text(
        "from pathlib import Path\n"
        "def main(event, context):\n"
        "    text = (Path(__file__).parent / 'templates' / 'line.txt').read_text()\n"
        "    return text.format(**event)\n")
    (package / "templates" / "line.txt").write_text("{name} sold {n}")
    proc = subprocess.run(
        [sys.executable, "-m", "usetl", "vm", "run", "--image", str(image_path), "--json",
         "--handler", f"{package}:main", "--event", '{"name": "ann", "n": 3}'],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["value"] == "ann sold 3"


def test_rollback_runs_no_guest_and_the_next_request_takes_a_fresh_identity(base):
    code = "import os, random; print(os.environ['USETL_INSTANCE_ID'], random.random())"
    digests = base.memory_digests()
    with base.fork(warm=False) as clone:
        assert clone.inspect().sha256 == digests  # the identity waits for the first request
        seen = [out(clone.run_code(code)).split()]
        for _ in range(2):
            info = clone.rollback()
            assert info.ms >= info.restore_ms >= info.copy_ms > 0 and info.exits == 0
            assert clone.inspect().sha256 == digests
            seen.append(out(clone.run_code(code)).split())
    assert {instance for instance, _ in seen} == {clone.instance}
    assert len({number for _, number in seen}) == 3  # reseeded after every rollback


def test_pages_first_written_after_recycled_requests_are_rolled_back_too(base):
    """Recycled no-ops take no page fault, so their rollbacks reuse the last page-table
    scan; a request that writes fresh pages (KVM's faults, on the vCPU's thread) must be
    seen all the same."""
    digests = base.memory_digests()
    with base.fork() as clone:
        for _ in range(5):
            clone.rollback()
            assert clone.run_code("pass").error is None
        pages = clone.rollback().pages
        assert clone.inspect().sha256 == digests
        assert out(clone.run_code("x = bytearray(b'w' * (1 << 20)); print(len(x))")) == \
            "1048576\n"
        rolled = clone.rollback()
        assert rolled.pages >= pages + 256
        assert clone.inspect().sha256 == digests


# Rounding toward zero (FE_TOWARDZERO) in the x87 control word and MXCSR: vCPU state only a
# rollback's XSAVE restore puts back.
ROUNDING = """
import ctypes
libm = ctypes.CDLL("libm.so.6")
print(libm.fegetround())
libm.fesetround(0xC00)
"""


def test_rollback_puts_back_the_floating_point_state_a_request_changed(base):
    with base.fork() as clone:
        for _ in range(3):
            assert out(clone.run_code(ROUNDING)).split() == ["0"]  # to nearest, as frozen
            clone.rollback()


def test_a_warm_template_is_frozen_after_its_warm_up_run(warm_template):
    assert warm_template.info.warmup.value == {
        "calls": 1, "imported_before": False, "event": {"deployer": True},
        "request_id": "warmup"}
    with warm_template.fork() as clone:
        for n in range(2):
            r = clone.invoke(n, {"request_id": f"call-{n}"})
            assert r.error is None, r.error
            # The warm-up's lazy import is in the template; the invocation's own state is not.
            assert r.value == {"calls": 2, "imported_before": True, "event": n,
                               "request_id": f"call-{n}"}
            clone.rollback()


def test_a_cold_template_imports_lazily_on_every_call(base, lazy_dir):
    with base.load_function(LAZY_LOAD, mounts={"lazy": str(lazy_dir)}) as cold:
        assert cold.info.warmup is None
        with cold.fork() as clone:
            assert clone.invoke(1).value["imported_before"] is False
            clone.rollback()
            again = clone.invoke(2).value
            assert (again["calls"], again["imported_before"]) == (1, False)  # imported again


def test_a_failing_warm_up_refuses_the_template(base, lazy_dir):
    with pytest.raises(HyperForkError, match="warm-up invocation failed") as failed:
        base.load_function(LAZY_LOAD, mounts={"lazy": str(lazy_dir)},
                           warmup=WarmUp("fail", {}))
    assert "the warm-up event is refused" in failed.value.error.traceback


HOOKS = '''
import os
from usetl import runtime
EVENTS = []

@runtime.before_freeze
def frozen():
    EVENTS.append("freeze")
    if os.path.exists("/hooks/refuse"):
        raise RuntimeError("cannot freeze")

@runtime.after_clone
def cloned():
    EVENTS.append("clone " + os.environ["USETL_INSTANCE_ID"])

def handler(event, context):
    return EVENTS
'''


def test_runtime_hooks_run_before_the_freeze_and_in_each_clone(base, tmp_path):
    (tmp_path / "hooks.py").write_text(HOOKS)
    load = {"kind": "load", "path": "/hooks/hooks.py", "handler": "handler"}
    with base.load_function(load, mounts={"hooks": str(tmp_path)}) as template:
        for _ in range(2):
            with template.fork() as clone:
                assert clone.invoke(None).value == ["freeze", f"clone {clone.instance}"]
    (tmp_path / "refuse").write_text("")
    with pytest.raises(HyperForkError, match="a before-freeze hook failed: cannot freeze"):
        base.load_function(load, mounts={"hooks": str(tmp_path)})


def test_a_failing_after_clone_hook_refuses_each_request_until_the_next_identity(base, tmp_path):
    (tmp_path / "hooks.py").write_text(
        "import os\n"
        "from usetl import runtime\n"
        "runtime.after_clone(lambda: 1 / int(os.path.exists('/hooks/ok')))\n"
        "def handler(event, context):\n"
        "    return event\n")
    load = {"kind": "load", "path": "/hooks/hooks.py", "handler": "handler"}
    with base.load_function(load, mounts={"hooks": str(tmp_path)}) as template, \
            template.fork(warm=False) as clone:
        for _ in range(2):  # refused at its identity, then still refused without one
            error = clone.invoke(1).error
            assert error.type == "ZeroDivisionError" and error.kind == "handler"
            assert error.message.startswith("an after-clone hook failed: ")
        (tmp_path / "ok").write_text("")
        clone.rollback()  # back to before the hook: the next request runs it again
        assert clone.invoke(2).value == 2


def test_a_timed_wait_captured_in_a_template_keeps_its_time_left_in_a_later_clone(base, tmp_path):
    (tmp_path / "waiter.py").write_text(
        "import threading, time\n"
        "woke = []\n"
        "waiter = threading.Thread(target=lambda: woke.append(\n"
        "    (threading.Event().wait(2.0), time.monotonic())))\n"
        "waiter.start()  # frozen with the template, 2 s left on its wait\n"
        "def handler(event, context):\n"
        "    start, waiting = time.monotonic(), waiter.is_alive()\n"
        "    waiter.join()\n"
        "    return {'waiting': waiting, 'result': woke[0][0], 'after': woke[0][1] - start}\n"
    )
    load = {"kind": "load", "path": "/code/waiter.py", "handler": "handler"}
    with base.load_function(load, mounts={"code": str(tmp_path)}) as fn:
        time.sleep(2.2)  # the wait's whole time passes on the host before the clone is made
        with fn.fork(warm=False) as clone:  # the template's live state, inherited by fork
            values = [clone.invoke({}, {"request_id": "a"}).value]
            clone.rollback()  # the template's state unpickled
            values.append(clone.invoke({}, {"request_id": "b"}).value)
    # Still waiting when the clone ran, and its wait went on for the time it had left.
    for value in values:
        assert value["waiting"] and value["result"] is False and value["after"] >= 1.0
