"""Shared memory with Linux's semantics in a USF: MAP_SHARED mappings of one file show
the same pages (to each other, to read and write, to forked and exec'd children), so
multiprocessing's SharedMemory, its spawn start method and named semaphores work, in a
jailed clone."""

import pytest
from test_process_tree import run_in_clone

pytestmark = pytest.mark.kvm


# What a spawned child runs (by name, from a module in the clone's /tmp).
WORK = """
from multiprocessing import shared_memory
def square(x):
    return x * x
def spawned(name, q, lock):
    with lock:
        shm = shared_memory.SharedMemory(name=name)
        shm.buf[:5] = b"spawn"
        q.put(bytes(shm.buf[1:5]))
        shm.close()
"""
IMPORT_WORK = f"""
import sys
with open("/tmp/work.py", "w") as f:
    f.write({WORK!r})
sys.path.insert(0, "/tmp")
import work
"""


def test_two_shared_mappings_of_one_file_and_its_reads_and_writes_see_each_others_bytes(
        template):
    out = run_in_clone(template, """
        import mmap, os
        from multiprocessing import shared_memory
        a = shared_memory.SharedMemory(create=True, size=10000)
        b = shared_memory.SharedMemory(name=a.name)
        a.buf[:5] = b"hello"
        b.buf[8192:8195] = b"xyz"
        fd = os.open("/dev/shm/" + a.name, os.O_RDWR)
        print(bytes(b.buf[:5]), bytes(a.buf[8192:8195]), os.pread(fd, 5, 0))
        os.pwrite(fd, b"WORLD", 0)
        print(bytes(a.buf[:5]), bytes(b.buf[:5]))
        os.ftruncate(fd, 4096)
        os.ftruncate(fd, 10000)
        print(bytes(a.buf[8192:8195]))
        os.close(fd)
        b.close()
        a.close()
        a.unlink()
        f = os.open("/tmp/m", os.O_RDWR | os.O_CREAT)
        os.ftruncate(f, 8192)
        rw, ro = mmap.mmap(f, 8192), mmap.mmap(f, 4096, prot=mmap.PROT_READ, offset=4096)
        rw[4096:4099] = b"abc"
        moved = mmap.mmap(-1, 4096)  # the next mapping below: mremap must move rw
        rw.resize(3 * 4096)
        rw[4099:4102] = b"def"
        print(ro[:6], os.pread(f, 6, 4096))
        ro.close()
        rw.close()
        moved.close()
        print(os.pread(f, 6, 4096))
    """)
    assert out == ["b'hello' b'xyz' b'hello'", "b'WORLD' b'WORLD'", "b'\\x00\\x00\\x00'",
                   "b'abcdef' b'abcdef'", "b'abcdef'"]


def test_a_file_mapped_shared_is_shared_with_forked_and_spawned_children(template):
    out = run_in_clone(template, """
        import mmap, os
        import multiprocessing as mp
        from multiprocessing import shared_memory
        shm = shared_memory.SharedMemory(create=True, size=64)
        if os.fork() == 0:  # maps it by name after the fork, and writes it
            other = shared_memory.SharedMemory(name=shm.name)
            other.buf[:5] = b"child"
            os.write(os.open("/dev/shm/" + shm.name, os.O_WRONLY), b"C")
            os._exit(0)
        os.wait()
        print(bytes(shm.buf[:5]))
        ctx = mp.get_context("spawn")
        q, lock = ctx.Queue(), ctx.Lock()
        p = ctx.Process(target=work.spawned, args=(shm.name, q, lock))
        p.start()
        print(q.get(timeout=60), bytes(shm.buf[:5]))
        p.join()
        with ctx.Pool(2) as pool:
            print(pool.map(work.square, range(5)), p.exitcode)
        shm.close()
        shm.unlink()
    """, IMPORT_WORK)
    assert out == ["b'Child'", "b'pawn' b'spawn'", "[0, 1, 4, 9, 16] 0"]


def test_a_shared_anonymous_mapping_made_before_fork_is_shared_with_the_child(template):
    out = run_in_clone(template, """
        import mmap, os
        m = mmap.mmap(-1, 8192)  # MAP_SHARED|MAP_ANONYMOUS
        m[:3] = b"par"
        r, w = os.pipe()
        if os.fork() == 0:
            os.write(w, m[:3])
            m[:3] = b"chd"
            m[4096:4099] = b"two"
            os._exit(0)
        os.wait()
        m.resize(3 * 4096)
        print(os.read(r, 3), m[:3], m[4096:4099], m[8192:8195])
    """)
    assert out == ["b'par' b'chd' b'two' b'\\x00\\x00\\x00'"]


def test_a_name_a_child_makes_in_dev_shm_is_its_parents_too(template):
    """/dev/shm is one namespace for the tree, as one machine's: SharedMemory(create=True)
    in a forked child and in a program, attached by name in the parent, shows the same
    bytes both ways while both run; O_EXCL of a name the child holds is EEXIST, and the
    parent's unlink removes the name for the child too."""
    out = run_in_clone(template, """
        import os, subprocess, sys
        from multiprocessing import shared_memory
        r, w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            shm = shared_memory.SharedMemory(name="made-by-fork", create=True, size=10000)
            shm.buf[:4] = b"fork"
            os.write(w, b"made")
            os.read(go_r, 1)
            os.write(w, bytes(shm.buf[4:10]))  # what the parent stored meanwhile
            os.read(go_r, 1)
            os.write(w, str(os.path.exists("/dev/shm/made-by-fork")).encode())
            os._exit(0)
        os.read(r, 4)
        seen = shared_memory.SharedMemory(name="made-by-fork")
        print(seen.size >= 10000, bytes(seen.buf[:4]))
        seen.buf[4:10] = b"parent"
        os.write(go_w, b"x")
        print(os.read(r, 6))
        try:
            os.open("/dev/shm/made-by-fork", os.O_CREAT | os.O_EXCL | os.O_RDWR)
        except FileExistsError:
            print("EEXIST")
        seen.close()
        seen.unlink()
        os.write(go_w, b"x")
        print(os.read(r, 10).decode())
        os.waitpid(pid, 0)
        program = subprocess.Popen([sys.executable, "-c", "\\n".join([
            "import sys",
            "from multiprocessing import shared_memory",
            "shm = shared_memory.SharedMemory(name='made-by-program', create=True, size=4096)",
            "shm.buf[:7] = b'program'",
            "print('made', flush=True)",
            "sys.stdin.readline()",
            "print(bytes(shm.buf[7:13]).decode(), flush=True)"])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        program.stdout.readline()
        seen = shared_memory.SharedMemory(name="made-by-program")
        print(bytes(seen.buf[:7]))
        seen.buf[7:13] = b"parent"
        print(program.communicate("go\\n")[0].strip())
        seen.close()
        seen.unlink()
    """)
    assert out == ["True b'fork'", "b'parent'", "EEXIST", "False", "b'program'", "parent"], out
