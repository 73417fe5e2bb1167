"""A rollback puts the monitor's own state back in place (monitor_state.InPlace): after any
request the clone's monitor state pickles to exactly the bytes its template froze, and the
guest sees none of what the request left behind.

The clones take RunInMonitor requests (USETL_TEST_HOOKS=1) to read their own state.
"""

import os
import textwrap

import pytest

from usetl.hyperfork import Template

# What a request leaves in the monitor's state: files and open fds, the working directory,
# the umask, signal handlers and a timer, mappings, a thread left waiting, a host pipe.
LEFT_BEHIND = {
    "an open file in /tmp": "f = open('/tmp/left', 'w'); f.write('secret'); f.flush()",
    "a directory and the cwd": "import os; os.mkdir('/tmp/dir'); os.chdir('/tmp/dir')",
    "the umask": "import os; os.umask(0o077)",
    "a signal handler and a timer": (
        "import signal; signal.signal(signal.SIGUSR1, lambda *a: None); "
        "signal.setitimer(signal.ITIMER_REAL, 300)"),
    "a mapping": "import mmap; m = mmap.mmap(-1, 1 << 20); m[0] = 1",
    "a waiting thread": (
        "import threading; e = threading.Event(); "
        "threading.Thread(target=e.wait, daemon=True).start()"),
    "a pipe": "import os; r, w = os.pipe(); os.write(w, b'secret')",
}

# The guest's view of the same things, as its template shows them.
SEEN = """
import os, signal, threading

def is_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True

print(os.path.exists('/tmp/left'), os.path.exists('/tmp/dir'), os.getcwd(), os.umask(0o022),
      signal.getsignal(signal.SIGUSR1), signal.getitimer(signal.ITIMER_REAL)[0],
      threading.active_count(), [fd for fd in range(64) if is_open(fd)])
"""

# In the clone's monitor: does its state pickle to the template's frozen bytes? The fresh
# identity the next request carries is the one difference a rollback makes on purpose.
STATE_IS_FROZEN = textwrap.dedent("""
    import gc
    from usetl.hyperfork import monitor_state
    clone = next(o for o in gc.get_objects() if type(o).__name__ == "CloneProcess")
    due, clone.usf.identity_due = clone.usf.identity_due, None
    try:
        result = monitor_state.dumps(clone.usf) == clone.frozen.state
    finally:
        clone.usf.identity_due = due
""")


@pytest.fixture(scope="module")
def base(image_path):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("USETL_TEST_HOOKS", "1")
        t = Template.start(image_path)
    yield t
    t.close()


def out(result):
    assert result.error is None, result.error
    return result.stdout


def test_after_a_rollback_the_monitor_state_is_the_frozen_one(base):
    with base.fork() as clone:
        assert clone.run_in_monitor(STATE_IS_FROZEN)
        seen = out(clone.run_code(SEEN))
        clone.rollback()
        for what, code in LEFT_BEHIND.items():
            out(clone.run_code(code))
            assert not clone.run_in_monitor(STATE_IS_FROZEN), what  # the request changed it
            clone.rollback()
            assert clone.run_in_monitor(STATE_IS_FROZEN), what
            assert out(clone.run_code(SEEN)) == seen, what
            clone.rollback()



# Requests that leave host fds and threads in the clone's monitor process: a child with
# pipes (its tree's tables, the thread that watches it), pipes left open across a fork
# (host pipes then), a socketpair likewise.
LEAVE_ON_THE_HOST = textwrap.dedent("""
    import os, socket, subprocess
    subprocess.run(["true"], capture_output=True, check=True)
    r, w = os.pipe()
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
""")


def test_a_rollback_leaves_no_host_fd_or_thread_of_the_request_behind(base):
    def host_side(pid):
        return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))

    with base.fork() as clone:
        out(clone.run_code(LEAVE_ON_THE_HOST))
        clone.rollback()
        after_one = host_side(clone.pid)
        for _ in range(3):
            out(clone.run_code(LEAVE_ON_THE_HOST))
            assert host_side(clone.pid) > after_one  # the request's own, while it runs on
            clone.rollback()
            assert host_side(clone.pid) == after_one


# In the clone's monitor, after a rollback: the vCPU state the next KVM_RUN starts from
# (settle() is a KVM_RUN that loads what reset_to() left in kvm_run and runs no guest
# instruction), against the template's.
VCPU_IS_FROZEN = textwrap.dedent("""
    import gc
    from usetl.vm.layout import MSR_FS_BASE
    clone = next(o for o in gc.get_objects() if type(o).__name__ == "CloneProcess")
    vm, frozen = clone.vm, clone.frozen.vcpu
    vm.settle()
    result = (bytes(vm.vcpu.get_sregs()) == bytes(frozen.sregs),
              vm.fs_base() == frozen.msrs[MSR_FS_BASE])
""")

# The monitor writes FS_BASE after the last exit stored the segment registers in kvm_run
# (as a switch between guest threads does): that copy no longer shows the vCPU's.
MONITOR_MOVES_FS = textwrap.dedent("""
    import gc
    clone = next(o for o in gc.get_objects() if type(o).__name__ == "CloneProcess")
    clone.vm.set_fs_base(clone.vm.fs_base() + 4096)
    result = None
""")


def test_after_a_rollback_the_vcpu_is_the_frozen_one(base):
    threads = ("import threading; ts = [threading.Thread(target=sum, args=(range(99),)) "
               "for _ in range(3)]; [t.start() for t in ts]; [t.join() for t in ts]")
    with base.fork() as clone:
        for what in ("a request", "threads", "the monitor's FS_BASE write"):
            out(clone.run_code(threads if what == "threads" else "x = 1", timeout=30))
            if what == "the monitor's FS_BASE write":
                clone.run_in_monitor(MONITOR_MOVES_FS)
            clone.rollback()
            assert clone.run_in_monitor(VCPU_IS_FROZEN) == [True, True], what
            assert out(clone.run_code("print(1)")) == "1\n", what
            clone.rollback()


# In the guest: whether each function of the agent's request path runs quickened (CPython
# 3.11 specialises a function's bytecode once it has been called 8 times), and the instance id
# the request's identity gave it.
AGENT_PATH_WARM = """
import dis, os, sys
agent = sys.modules["__main__"]
path = (agent.answer, agent.take_identity, agent.run_code, agent.encode_reply)
print(all(any(a.opname != b.opname for a, b in zip(dis.get_instructions(f, adaptive=True),
                                                    dis.get_instructions(f)))
          for f in path), os.environ["USETL_INSTANCE_ID"])
"""


def test_a_clone_runs_the_agents_request_path_warm_with_its_own_identity(base):
    """The template is captured after the agent answered no-op requests in the guest
    (agent.warm_up): a new clone's first request and each request after a rollback run
    bytecode CPython has specialised already, and see the clone's instance id, not the
    warm-up's."""
    with base.fork() as clone:
        first = out(clone.run_code(AGENT_PATH_WARM))
        clone.rollback()
        again = out(clone.run_code(AGENT_PATH_WARM))
    assert first == again == f"True {clone.instance}\n"


def test_a_rolled_back_clones_large_blocks_come_from_its_heap(base):
    """malloc's mmap threshold is raised in the template (agent.warm_up), as in a process that
    has run a while: a block of 200 kB (over glibc's initial 128 KiB) costs no mmap and munmap
    on each request after a rollback, at most a brk to grow the heap."""
    code = "for _ in range(10): bytearray(200000)"
    with base.fork() as clone:
        for _ in range(3):
            assert clone.run_code(code).syscalls <= 1
            clone.rollback()
