"""/tmp is one live directory for an invocation's process tree (libos/sharedtmp.py)."""

import glob

import pytest

from guest_code import run_lines as run

pytestmark = pytest.mark.kvm


def test_a_pools_workers_files_are_there_while_they_live(usf):
    out = run(usf, """
        import multiprocessing, os
        from pathlib import Path

        with multiprocessing.get_context("fork").Pool(2) as pool:
            pool.starmap(Path.write_text, [(Path(f"/tmp/pool-{i}.txt"), str(i * i))
                                           for i in range(4)])
            names = sorted(n for n in os.listdir("/tmp") if n.startswith("pool-"))
            print(names, [open("/tmp/" + n).read() for n in names])
    """, timeout=120)
    assert out == ["['pool-0.txt', 'pool-1.txt', 'pool-2.txt', 'pool-3.txt'] "
                   "['0', '1', '4', '9']"]


def test_processes_inserting_into_one_sqlite_file_keep_every_row(usf):
    out = run(usf, """
        import os, sqlite3
        for mode in ("wal", "delete"):
            path = f"/tmp/rows-{mode}.db"
            db = sqlite3.connect(path)
            db.execute(f"pragma journal_mode={mode}")
            db.execute("create table t (who int, n int)")
            db.commit()
            db.close()
            pids = []
            for who in range(4):
                pid = os.fork()
                if pid == 0:
                    db = sqlite3.connect(path, timeout=60)
                    for n in range(5):
                        with db:
                            db.execute("insert into t values (?, ?)", (who, n))
                    db.close()
                    os._exit(0)
                pids.append(pid)
            print(mode, [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids],
                  sqlite3.connect(path).execute("select count(*), count(distinct who) from t")
                  .fetchone())
    """, timeout=180)
    assert out == ["wal [0, 0, 0, 0] (20, 4)", "delete [0, 0, 0, 0] (20, 4)"]


def test_record_locks_and_flock_exclude_between_parent_and_child(usf):
    out = run(usf, """
        import fcntl, os, struct
        fd = os.open("/tmp/locked", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(os.open("/tmp/locked", os.O_RDONLY), fcntl.LOCK_EX)  # taken alone
        go, start = os.pipe()
        told, tell = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.read(go, 1)
            mine = os.open("/tmp/locked", os.O_RDWR)
            results = []
            for take in (lambda: fcntl.lockf(mine, fcntl.LOCK_EX | fcntl.LOCK_NB),
                         lambda: fcntl.flock(mine, fcntl.LOCK_EX | fcntl.LOCK_NB)):
                try:
                    take()
                    results.append("taken")
                except BlockingIOError:
                    results.append("held")
            os.write(tell, " ".join(results).encode() + b"\\n")
            fcntl.lockf(mine, fcntl.LOCK_EX)  # waits for the parent's unlock
            os.write(tell, b"got it\\n")
            os._exit(0)
        fcntl.lockf(fd, fcntl.LOCK_EX)
        os.write(start, b"x")
        print(os.read(told, 100).decode().strip())
        probe = struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0)
        print(struct.unpack("hhqqi", fcntl.fcntl(os.open("/tmp/locked", os.O_RDONLY),
                                                 fcntl.F_OFD_GETLK, probe))[0] == fcntl.F_WRLCK)
        fcntl.lockf(fd, fcntl.LOCK_UN)
        print(os.read(told, 100).decode().strip())
        os.waitpid(pid, 0)
    """, timeout=60)
    assert out == ["held held", "True", "got it"]


def test_a_shared_mapping_of_a_tmp_file_is_shared_with_a_child(usf):
    out = run(usf, """
        import mmap, os
        with open("/tmp/mapped", "wb") as f:
            f.write(bytes(4096))
        f = open("/tmp/mapped", "r+b")
        m = mmap.mmap(f.fileno(), 4096)
        told, tell = os.pipe()
        back, answer = os.pipe()
        pid = os.fork()
        if pid == 0:
            c = mmap.mmap(os.open("/tmp/mapped", os.O_RDWR), 4096)
            os.read(told, 1)
            seen = c[:6]
            c[6:11] = b"child"
            os.write(answer, seen)
            os._exit(0)
        m[:6] = b"parent"
        os.write(tell, b"x")
        print(os.read(back, 6), m[6:11], open("/tmp/mapped", "rb").read(11))
        os.waitpid(pid, 0)
    """, timeout=60)
    assert out == ["b'parent' b'child' b'parentchild'"]


def test_names_and_paths_stay_in_the_guests_view(usf):
    out = run(usf, """
        import errno, os
        open("/tmp/before", "w").write("made alone")
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        os.symlink("/", "/tmp/root")
        os.mkdir("/tmp/d")
        os.symlink("../../../../etc", "/tmp/d/up")
        os.chdir("/tmp/d")
        print(open("../before").read(), sorted(os.listdir("/tmp/root")) == sorted(os.listdir("/")))
        print(os.path.exists("/tmp/../etc/passwd"), os.path.realpath("/tmp/d/up"))
        print(open("/tmp/d/up/passwd").read() == open("/etc/passwd").read())
        dirfd = os.open("/tmp/d", os.O_RDONLY | os.O_DIRECTORY)
        open("rel", "w").write("by cwd")
        print(open("rel", opener=lambda p, fl: os.open(p, fl, dir_fd=dirfd)).read())
        try:
            os.rename("/tmp/before", "/dev/shm/before")
        except OSError as e:
            print(errno.errorcode[e.errno])
        try:
            os.link("/tmp/before", "/dev/shm/linked")
        except OSError as e:
            print(errno.errorcode[e.errno])
        os.rename("/tmp/before", "/tmp/d/after")
        print(sorted(os.listdir("/tmp/d")), oct(os.stat("/tmp/d").st_mode))
    """, timeout=60)
    assert out == ["made alone True", "True /etc", "True", "by cwd", "EXDEV", "EXDEV",
                   "['after', 'rel', 'up'] 0o40755"]


def test_the_next_invocation_sees_none_of_the_last_ones_tmp(template):
    with template.fork() as clone:
        out = run(clone, """
            import os
            open("/tmp/first", "w").write("1")
            pid = os.fork()
            if pid == 0:
                open("/tmp/from-child", "w").write("2")
                os._exit(0)
            os.waitpid(pid, 0)
            print(sorted(os.listdir("/tmp")))
        """, timeout=60)
        assert out == ["['first', 'from-child']"]
        clone.rollback()
        assert run(clone, "import os; print(os.listdir('/tmp'))") == ["[]"]


def test_the_tree_s_directory_goes_at_the_invocation_s_end(usf):
    before = set(glob.glob("/dev/shm/usetl-tmp-*"))
    out = run(usf, """
        import os
        fd = os.open("/tmp/kept-open", os.O_RDWR | os.O_CREAT)
        os.write(fd, b"abc")
        import builtins; builtins.kept_fd = fd  # kept for the next invocation
        pid = os.fork()
        if pid == 0:
            os.write(fd, b"def")
            os._exit(0)
        os.waitpid(pid, 0)
        print(os.pread(fd, 6, 0))
    """, timeout=60)
    assert out == ["b'abcdef'"]
    assert set(glob.glob("/dev/shm/usetl-tmp-*")) <= before
    out = run(usf, """
        import os
        fd = kept_fd
        os.write(fd, b"!")
        print(os.pread(fd, 10, 0), open("/tmp/kept-open").read())
    """)
    assert out == ["b'abcdef!' abcdef!"]


def test_open_files_a_socket_name_and_a_manager_work_across_the_tree(usf):
    out = run(usf, """
        import multiprocessing, os, socket, subprocess, sys, tempfile
        unnamed = tempfile.TemporaryFile()  # no name: a host O_TMPFILE file once shared
        unnamed.write(b"before ")
        unnamed.flush()
        listener = socket.socket(socket.AF_UNIX)
        listener.bind("/tmp/sock")
        listener.listen()
        pid = os.fork()
        if pid == 0:
            os.write(unnamed.fileno(), b"child ")
            c = socket.socket(socket.AF_UNIX)
            c.connect("/tmp/sock")
            c.sendall(open("/tmp/sock.txt", "rb").read() if os.path.exists("/tmp/sock.txt")
                      else b"connected")
            os._exit(0)
        conn, _ = listener.accept()
        print(conn.recv(100), os.waitpid(pid, 0)[1])
        unnamed.write(b"after")
        unnamed.seek(0)
        print(unnamed.read())
        listing = "import os; print('sock' in os.listdir('/tmp'))"  # a program sees the name
        print(subprocess.run([sys.executable, "-c", listing], capture_output=True,
                             text=True).stdout.strip())
        with multiprocessing.get_context("fork").Manager() as manager:
            d = manager.dict()
            d["k"] = "from a manager"
            print(d["k"])
    """, timeout=120)
    assert out == ["b'connected' 0", "b'before child after'", "True", "from a manager"]


def test_a_jailed_clones_tree_shares_its_tmp_too(template):
    """Under the jail (its own tmpfs at /run/usetl-tmp, the seccomp allow-list): files,
    SQLite, locks, a shared mapping, a FIFO and a socket's name across the tree."""
    with template.fork() as clone:
        out = run(clone, """
            import fcntl, mmap, os, sqlite3, subprocess
            db = sqlite3.connect("/tmp/j.db")
            db.execute("pragma journal_mode=wal")
            db.execute("create table t (n int)")
            db.commit()
            with open("/tmp/m", "wb") as f:
                f.write(bytes(4096))
            m = mmap.mmap(os.open("/tmp/m", os.O_RDWR), 4096)
            os.mkfifo("/tmp/fifo")
            told, tell = os.pipe()
            go, start = os.pipe()
            pid = os.fork()
            if pid == 0:
                c = sqlite3.connect("/tmp/j.db", timeout=30)
                with c:
                    c.execute("insert into t values (1)")
                m[:5] = b"child"
                os.read(go, 1)  # the parent holds its lock
                fd = os.open("/tmp/m", os.O_RDWR)
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    held = b"free"
                except BlockingIOError:
                    held = b"held"
                os.write(tell, held)
                with open("/tmp/fifo", "w") as f:
                    f.write("through a fifo")
                os._exit(0)
            fcntl.lockf(os.open("/tmp/m", os.O_RDWR), fcntl.LOCK_EX)
            os.write(start, b"x")
            with open("/tmp/fifo") as f:
                print(f.read())
            print(os.read(told, 4), os.waitpid(pid, 0)[1])
            with db:
                db.execute("insert into t values (2)")
            print(db.execute("select count(*) from t").fetchone()[0], m[:5])
            print(subprocess.run(["ls", "/tmp"], capture_output=True, text=True).stdout.split())
        """, timeout=120)
        assert out == ["through a fifo", "b'held' 0", "2 b'child'",
                       "['fifo', 'j.db', 'j.db-shm', 'j.db-wal', 'm']"]


XATTRS_ACROSS_THE_TREE = """
    import errno, os
    open("/tmp/attrs", "w").close()
    os.mkdir("/tmp/attrs.d")
    os.setxattr("/tmp/attrs", "user.before", b"alone")  # on the tmpfs, carried out
    os.setxattr("/tmp/attrs.d", "user.dir", b"d")
    pid = os.fork()
    if pid == 0:
        os.setxattr("/tmp/attrs", "user.child", os.getxattr("/tmp/attrs", "user.before") + b"!")
        os._exit(0)
    os.waitpid(pid, 0)
    print(sorted(os.listxattr("/tmp/attrs")), os.getxattr("/tmp/attrs", "user.child"),
          os.getxattr("/tmp/attrs.d", "user.dir"))
    fd = os.open("/tmp/attrs", os.O_RDONLY)
    os.setxattr(fd, "user.by-fd", b"fd")
    os.removexattr("/tmp/attrs", "user.before")
    for call in (lambda: os.setxattr("/tmp/attrs", "user.child", b"", os.XATTR_CREATE),
                 lambda: os.getxattr("/tmp/attrs", "user.before"),
                 lambda: os.setxattr("/tmp/attrs", "trusted.t", b"")):
        try:
            call()
        except OSError as e:
            print(errno.errorcode[e.errno])
    print(sorted(os.listxattr(fd)))
"""


def test_user_attributes_are_the_trees_and_carried_in_and_out(usf):
    out = run(usf, XATTRS_ACROSS_THE_TREE, timeout=60)
    assert out == ["['user.before', 'user.child'] b'alone!' b'd'", "EEXIST", "ENODATA",
                   "EPERM", "['user.by-fd', 'user.child']"]
    # The invocation's end read /tmp back into memory, with its files' attributes.
    assert run(usf, "import os; print(os.getxattr('/tmp/attrs', 'user.by-fd'), "
                    "os.getxattr('/tmp/attrs.d', 'user.dir'))") == ["b'fd' b'd'"]


def test_a_jailed_clones_tree_keeps_user_attributes_too(template):
    with template.fork() as clone:
        out = run(clone, XATTRS_ACROSS_THE_TREE, timeout=60)
    assert out[0] == "['user.before', 'user.child'] b'alone!' b'd'"
    assert out[-1] == "['user.by-fd', 'user.child']"
