"""The small OS pieces real code reads: file metadata, links, /proc, /sys, users, tz, CAs."""

import os
import platform

import pytest

from guest_code import run_lines as run
from usetl.image.inputs import host_executable
from usetl.usf import UsfConfig, start_usf

pytestmark = pytest.mark.kvm


def test_chmod_utime_and_shutil_copies_work_in_tmp(usf):
    out = run(usf, """
        import os, pathlib, shutil, stat
        p = pathlib.Path("/tmp/meta/a.txt"); p.parent.mkdir(); p.write_text("hi")
        p.chmod(0o640); os.utime(p, (1000, 2000.5))
        s = os.stat(p); print(oct(stat.S_IMODE(s.st_mode)), s.st_atime, s.st_mtime)
        shutil.copy2(p, "/tmp/meta/b.txt"); s = os.stat("/tmp/meta/b.txt")
        print(oct(stat.S_IMODE(s.st_mode)), s.st_mtime, open("/tmp/meta/b.txt").read())
        shutil.copy(p, "/tmp/meta/c.txt"); os.makedirs("/tmp/meta/sub/deep")
        shutil.copytree("/tmp/meta", "/tmp/meta2"); print(sorted(os.listdir("/tmp/meta2")))
        os.utime("/tmp/meta/c.txt", ns=(5, 7)); print(os.stat("/tmp/meta/c.txt").st_mtime_ns)
        fd = os.open("/tmp/meta/c.txt", os.O_RDONLY); os.fchmod(fd, 0o600)
        print(oct(stat.S_IMODE(os.fstat(fd).st_mode)))
        for action in (lambda: os.chmod("/usr", 0o777), lambda: os.utime("/usr"),
                       lambda: os.chmod("/nope", 0o777)):
            try:
                action()
            except OSError as e:
                print(type(e).__name__, e.errno)
    """)
    assert out == [
        "0o640 1000.0 2000.5",
        "0o640 2000.5 hi",
        "['a.txt', 'b.txt', 'c.txt', 'sub']",
        "7",
        "0o600",
        "OSError 30", "OSError 30", "FileNotFoundError 2",
    ]


def test_symlinks_and_hard_links_under_tmp(usf):
    out = run(usf, """
        import os, sys
        os.mkdir("/tmp/ln"); open("/tmp/ln/f", "w").write("data")
        os.symlink("f", "/tmp/ln/rel"); os.symlink("/tmp/ln", "/tmp/ln/dir")
        os.symlink("missing", "/tmp/ln/dangling")
        print(os.readlink("/tmp/ln/rel"), open("/tmp/ln/rel").read(),
              open("/tmp/ln/dir/dir/f").read(), os.path.islink("/tmp/ln/rel"),
              os.path.exists("/tmp/ln/dangling"), os.path.lexists("/tmp/ln/dangling"))
        os.link("/tmp/ln/f", "/tmp/ln/g"); print(os.stat("/tmp/ln/f").st_nlink)
        os.unlink("/tmp/ln/f"); print(open("/tmp/ln/g").read(), os.stat("/tmp/ln/g").st_nlink)
        os.symlink("/tmp/ln/g", "/tmp/ln/viasym", dir_fd=None)
        os.link("/tmp/ln/viasym", "/tmp/ln/h")  # link(2) links the symlink itself
        print(os.path.islink("/tmp/ln/h"), os.stat("/tmp/ln/g").st_nlink)
        os.link("/tmp/ln/viasym", "/tmp/ln/i", src_dir_fd=os.open("/", os.O_RDONLY),
                follow_symlinks=True)  # linkat(AT_SYMLINK_FOLLOW) links its target
        print(os.path.islink("/tmp/ln/i"), os.stat("/tmp/ln/g").st_nlink)
        for action in (lambda: os.symlink("x", "/usr/x"), lambda: os.link("/usr", "/tmp/u"),
                       lambda: os.link("/tmp/ln/g", "/tmp/ln/h"),
                       lambda: os.link(sys.executable, "/tmp/ln/os")):
            try:
                action()
            except OSError as e:
                print(e.errno)
    """)
    assert out == ["f data data True False True", "2", "data 1", "True 1", "False 2",
                   "30", "1", "17", "18"]


def test_o_tmpfile_makes_a_nameless_file_that_linkat_names_once(usf):
    out = run(usf, """
        import errno, os
        os.mkdir("/tmp/tf")
        def attempt(fn):
            try:
                return fn()
            except OSError as e:
                return errno.errorcode[e.errno]
        fd = os.open("/tmp/tf", os.O_TMPFILE | os.O_RDWR, 0o640)
        os.write(fd, b"staged")
        st = os.fstat(fd)
        print(os.listdir("/tmp/tf"), st.st_nlink, oct(st.st_mode & 0o777),
              os.readlink(f"/proc/self/fd/{fd}").endswith(" (deleted)"))
        print(attempt(lambda: os.link(f"/proc/self/fd/{fd}", "/tmp/tf/no-follow")))
        d = os.open("/tmp/tf", os.O_RDONLY | os.O_DIRECTORY)
        os.link(f"/proc/self/fd/{fd}", "named", dst_dir_fd=d)  # linkat(AT_SYMLINK_FOLLOW)
        print(os.listdir("/tmp/tf"), os.fstat(fd).st_nlink, open("/tmp/tf/named").read())
        os.unlink("/tmp/tf/named")
        print(attempt(lambda: os.link(f"/proc/self/fd/{fd}", "again", dst_dir_fd=d)))
        excl = os.open("/tmp/tf", os.O_TMPFILE | os.O_WRONLY | os.O_EXCL)
        print(attempt(lambda: os.link(f"/proc/self/fd/{excl}", "excl", dst_dir_fd=d)))
        print(attempt(lambda: os.open("/tmp/tf", os.O_TMPFILE | os.O_RDONLY)),
              attempt(lambda: os.open("/usr", os.O_TMPFILE | os.O_WRONLY)),
              attempt(lambda: os.open("/tmp/none", os.O_TMPFILE | os.O_WRONLY)))
        for f in (fd, d, excl):
            os.close(f)
    """)
    assert out == ["[] 0 0o640 True", "EXDEV", "['named'] 1 staged", "ENOENT", "ENOENT",
                   "EINVAL EROFS ENOENT"]


def test_a_sparse_files_holes_are_found_and_left_out_of_its_blocks(usf):
    """tmpfs's holes: SEEK_HOLE and SEEK_DATA, st_blocks, after writes past the end, a
    truncate, fallocate (its pages held, still holes to SEEK_DATA) and a punched hole.
    The expected lines are this program's output on Linux 6.18 in a tmpfs (/dev/shm)."""
    out = run(usf, """
        import ctypes, errno, os
        P = 4096
        libc = ctypes.CDLL(None, use_errno=True)
        def attempt(fn):
            try:
                return fn()
            except OSError as e:
                return errno.errorcode[e.errno]
        def at(offset, whence):
            return attempt(lambda: os.lseek(fd, offset, whence))
        def blocks():
            return os.fstat(fd).st_blocks
        fd = os.open("/tmp/sparse", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        os.pwrite(fd, b"head", 0)
        os.pwrite(fd, b"tail", 64 * P)
        print(os.fstat(fd).st_size, blocks(), at(0, os.SEEK_HOLE), at(5, os.SEEK_HOLE),
              at(P, os.SEEK_DATA), at(3 * P, os.SEEK_HOLE), os.pread(fd, 4, 64 * P),
              os.pread(fd, 4, 10 * P))
        os.ftruncate(fd, 128 * P)  # a hole at the end
        print(blocks(), at(64 * P, os.SEEK_HOLE), at(65 * P, os.SEEK_DATA))
        os.pwrite(fd, b"x" * P, 100 * P)
        print(blocks(), at(65 * P, os.SEEK_DATA), at(100 * P, os.SEEK_HOLE))
        os.posix_fallocate(fd, 0, 32 * P)
        print(blocks(), at(0, os.SEEK_HOLE))
        libc.fallocate(fd, 3, ctypes.c_long(8 * P), ctypes.c_long(8 * P))  # KEEP_SIZE|PUNCH
        print(blocks(), at(0, os.SEEK_HOLE), at(8 * P, os.SEEK_DATA), os.pread(fd, 2, 8 * P))
        os.ftruncate(fd, 50 * P)
        print(blocks(), at(40 * P, os.SEEK_HOLE), at(40 * P, os.SEEK_DATA))
    """)
    assert out == ["262148 16 4096 4096 262144 12288 b'tail' b'\\x00\\x00\\x00\\x00'",
                   "16 266240 ENXIO", "24 409600 413696", "272 4096",
                   "208 4096 262144 b'\\x00\\x00'", "192 163840 ENXIO"]


def test_dev_shm_is_a_filesystem_of_its_own(usf):
    """As on Linux: /tmp and /dev/shm have their own st_dev, and a rename or link between
    them is EXDEV (shutil.move copies instead); within /dev/shm both work."""
    out = run(usf, """
        import errno, os, shutil
        os.makedirs("/tmp/fs-a/sub")
        open("/tmp/fs-a/f", "w").write("moved")
        devs = {os.stat(p).st_dev for p in ("/tmp", "/tmp/fs-a/f")}
        shm = {os.stat(p).st_dev for p in ("/dev/shm",)}
        fd = os.open("/dev/shm", os.O_TMPFILE | os.O_RDWR)
        dfd = os.open("/dev/shm", os.O_RDONLY | os.O_DIRECTORY)  # linkat, AT_SYMLINK_FOLLOW
        os.link(f"/proc/self/fd/{fd}", "linked", dst_dir_fd=dfd)
        shm.add(os.stat("/dev/shm/linked").st_dev)
        print(len(devs), len(shm), devs != shm)
        for call in (lambda: os.rename("/tmp/fs-a/f", "/dev/shm/f"),
                     lambda: os.rename("/tmp/fs-a", "/dev/shm/fs-a"),
                     lambda: os.link("/tmp/fs-a/f", "/dev/shm/f"),
                     lambda: os.rename("/dev/shm/linked", "/tmp/linked")):
            try:
                call()
            except OSError as e:
                print(errno.errorcode[e.errno])
        os.rename("/dev/shm/linked", "/dev/shm/renamed")
        shutil.move("/tmp/fs-a", "/dev/shm/fs-a")
        print(sorted(os.listdir("/dev/shm/fs-a")), open("/dev/shm/fs-a/f").read(),
              os.stat("/dev/shm/fs-a/sub").st_dev in shm, os.path.exists("/tmp/fs-a"))
    """)
    assert out == ["1 1 True", "EXDEV", "EXDEV", "EXDEV", "EXDEV",
                   "['f', 'sub'] moved True False"]


def test_fallocate_seek_data_and_hole_and_rename_over_directories(usf):
    # Linux's answers (this program's output on the host, tmpfs or ext4 alike)
    out = run(usf, """
        import ctypes, errno, os
        libc = ctypes.CDLL(None, use_errno=True)
        def fallocate(fd, mode, offset, length):
            if libc.fallocate(fd, mode, ctypes.c_long(offset), ctypes.c_long(length)) != 0:
                raise OSError(ctypes.get_errno(), "fallocate")
        def attempt(fn):
            try:
                return fn()
            except OSError as e:
                return errno.errorcode[e.errno]
        os.makedirs("/tmp/fa/full/x"); os.mkdir("/tmp/fa/empty"); open("/tmp/fa/file", "w").close()
        fd = os.open("/tmp/fa/data", os.O_RDWR | os.O_CREAT)
        os.write(fd, b"abcdefgh")
        print(os.lseek(fd, 2, os.SEEK_DATA), os.lseek(fd, 2, os.SEEK_HOLE),
              attempt(lambda: os.lseek(fd, 8, os.SEEK_DATA)),
              attempt(lambda: os.lseek(fd, -1, os.SEEK_HOLE)))
        os.posix_fallocate(fd, 4, 12)
        print(os.fstat(fd).st_size, os.pread(fd, 20, 0))
        fallocate(fd, 1, 0, 100)  # FALLOC_FL_KEEP_SIZE
        print(os.fstat(fd).st_size)
        fallocate(fd, 3, 1, 2)  # KEEP_SIZE | PUNCH_HOLE
        print(os.pread(fd, 8, 0), os.fstat(fd).st_size)
        r, w = os.pipe()
        ro = os.open("/tmp/fa/data", os.O_RDONLY)
        print(attempt(lambda: os.posix_fallocate(w, 0, 10)),
              attempt(lambda: os.posix_fallocate(ro, 0, 10)),
              attempt(lambda: fallocate(fd, 2, 0, 1)), attempt(lambda: fallocate(fd, 0, 0, 0)))
        print(attempt(lambda: os.rename("/tmp/fa/empty", "/tmp/fa/full")),
              attempt(lambda: os.rename("/tmp/fa/empty", "/tmp/fa/file")),
              attempt(lambda: os.rename("/tmp/fa/file", "/tmp/fa/empty")))
        os.link("/tmp/fa/file", "/tmp/fa/file2")
        os.rename("/tmp/fa/file", "/tmp/fa/file2")
        print(sorted(os.listdir("/tmp/fa")))
        os.rename("/tmp/fa/empty", "/tmp/fa/full/x")
        print(os.listdir("/tmp/fa/full"), "empty" in os.listdir("/tmp/fa"))
        os.mkdir("/tmp/fa/full/y")
        print(os.stat("/tmp/fa").st_nlink, os.stat("/tmp/fa/full").st_nlink,
              os.stat("/tmp/fa/full/y").st_nlink)
        for f in (fd, r, w, ro):
            os.close(f)
    """)
    assert out == ["2 8 ENXIO ENXIO", "16 b'abcdefgh\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00'",
                   "16", "b'a\\x00\\x00defgh' 16", "ESPIPE EBADF ENOTSUP EINVAL",
                   "ENOTEMPTY ENOTDIR EISDIR", "['data', 'empty', 'file', 'file2', 'full']",
                   "['x'] False", "3 4 2"]


def test_inotify_reports_tmpfs_changes_as_linux_does(usf):
    # The expected lines are this program's output on Linux (a host's /tmp)
    out = run(usf, """
        import ctypes, os, select, struct
        libc = ctypes.CDLL(None, use_errno=True)
        IN = dict(ACCESS=1, MODIFY=2, ATTRIB=4, CLOSE_WRITE=8, CLOSE_NOWRITE=0x10, OPEN=0x20,
                  MOVED_FROM=0x40, MOVED_TO=0x80, CREATE=0x100, DELETE=0x200, DELETE_SELF=0x400,
                  MOVE_SELF=0x800, IGNORED=0x8000, ISDIR=0x40000000)
        def names(mask):
            return "|".join(k for k, v in IN.items() if mask & v)
        def events(fd, wds):
            out, cookies = [], {}
            while select.select([fd], [], [], 0.2)[0]:
                data = os.read(fd, 65536)
                i = 0
                while i < len(data):
                    wd, mask, cookie, size = struct.unpack_from("iIII", data, i)
                    name = data[i + 16:i + 16 + size].rstrip(b"\\0").decode()
                    i += 16 + size
                    if cookie:
                        cookie = cookies.setdefault(cookie, len(cookies) + 1)
                    out.append(f"{wds.get(wd, wd)} {names(mask)} {name} {cookie or ''}".strip())
            return out
        os.makedirs("/tmp/w/sub")
        fd = libc.inotify_init1(os.O_NONBLOCK)
        wds = {libc.inotify_add_watch(fd, b"/tmp/w", 0xFFF): "w",
               libc.inotify_add_watch(fd, b"/tmp/w/sub", 0xFFF): "sub"}
        with open("/tmp/w/a.csv", "w") as f:
            f.write("x")
        print(*events(fd, wds), sep="\\n")
        wds[libc.inotify_add_watch(fd, b"/tmp/w/a.csv", 0xFFF)] = "a"
        with open("/tmp/w/a.csv", "a") as f:
            f.write("y")
        open("/tmp/w/a.csv").read()
        print(*events(fd, wds), sep="\\n")
        os.rename("/tmp/w/a.csv", "/tmp/w/sub/b.csv")
        os.mkdir("/tmp/w/d")
        os.symlink("x", "/tmp/w/l")
        print(*events(fd, wds), sep="\\n")
        os.unlink("/tmp/w/sub/b.csv")
        os.rmdir("/tmp/w/d")
        os.unlink("/tmp/w/l")
        print(*events(fd, wds), sep="\\n")
        wd = [k for k, v in wds.items() if v == "sub"][0]
        print(libc.inotify_rm_watch(fd, wd), events(fd, wds))
        print(libc.inotify_rm_watch(fd, 99), ctypes.get_errno())
        os.close(fd)
    """)
    assert out == [
        'w CREATE a.csv',
        'w OPEN a.csv',
        'w MODIFY a.csv',
        'w CLOSE_WRITE a.csv',
        'w OPEN a.csv',
        'a OPEN',
        'w MODIFY a.csv',
        'a MODIFY',
        'w CLOSE_WRITE a.csv',
        'a CLOSE_WRITE',
        'w OPEN a.csv',
        'a OPEN',
        'w ACCESS a.csv',
        'a ACCESS',
        'w CLOSE_NOWRITE a.csv',
        'a CLOSE_NOWRITE',
        'w MOVED_FROM a.csv 1',
        'sub MOVED_TO b.csv 1',
        'a MOVE_SELF',
        'w CREATE|ISDIR d',
        'w CREATE l',
        'a ATTRIB',
        'a DELETE_SELF',
        'a IGNORED',
        'sub DELETE b.csv',
        'w DELETE|ISDIR d',
        'w DELETE l',
        "0 ['sub IGNORED']",
        '-1 22']


def test_statfs_memfd_and_flock(usf):
    out = run(usf, """
        import fcntl, mmap, os
        t, u = os.statvfs("/tmp"), os.statvfs("/usr")
        print(t.f_bsize, t.f_blocks == 64 * 256, bool(t.f_flag & os.ST_RDONLY),
              bool(u.f_flag & os.ST_RDONLY))
        fd = os.memfd_create("buf", os.MFD_CLOEXEC)
        os.write(fd, b"x" * 5000); os.lseek(fd, 0, 0); print(len(os.read(fd, 10000)))
        print(os.fstat(fd).st_size, os.fstat(fd).st_nlink, os.get_inheritable(fd))
        with mmap.mmap(fd, 5000, mmap.MAP_PRIVATE) as m:
            print(m[:3])
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); fcntl.flock(fd, fcntl.LOCK_UN)
        try:
            fcntl.flock(fd, 99)
        except OSError as e:
            print(e.errno)
        os.close(fd)
    """)
    assert out == ["4096 True False True", "5000", "5000 0 False", "b'xxx'", "22"]


def test_proc_and_sys_describe_one_process_on_one_cpu(usf):
    out = run(usf, """
        import os
        status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
        print(status["Pid"].strip(), status["Threads"].strip(), status["Uid"].split()[0])
        maps = open("/proc/self/maps").read().splitlines()
        print(any(l.endswith("[stack]") for l in maps), any("libc" in l for l in maps))
        cpu = open("/proc/cpuinfo").read()
        print(cpu.count("processor"), "model name" in cpu)
        mem = dict(l.split(":") for l in open("/proc/meminfo").read().splitlines())
        print(mem["MemTotal"].strip())
        print(open("/sys/devices/system/cpu/online").read().strip(), os.cpu_count())
        print(sorted(os.listdir("/proc/self")))
    """)
    assert out[0] == "1 1 1000"
    assert out[1] == "True True"
    assert out[2] == "1 True"
    assert out[3] == f"{256 * 1024} kB"
    assert out[4] == "0 1"
    assert out[5] == ("['cmdline', 'comm', 'environ', 'exe', 'fd', 'loginuid', 'maps', "
                      "'sessionid', 'stat', 'statm', 'status', 'task']")


def test_proc_stat_files_read_as_psutil_parses_them(usf):
    out = run(usf, """
        import os, threading, time
        started = threading.Event(); done = threading.Event()
        t = threading.Thread(target=lambda: (started.set(), done.wait())); t.start(); started.wait()
        comm, rest = open("/proc/self/stat").read().split("(", 1)[1].rsplit(")", 1)
        fields = rest.split()  # from field 3, state, on
        print(comm, fields[0], fields[1] == str(os.getppid()), fields[2] == str(os.getpgrp()),
              fields[17], len(fields) + 2)
        boot = int(next(l for l in open("/proc/stat") if l.startswith("btime")).split()[1])
        uptime = float(open("/proc/uptime").read().split()[0])
        began = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # psutil's create_time
        print(0 <= time.time() - began < 600, abs(boot + uptime - time.time()) < 2)
        utime = int(fields[11]) / os.sysconf("SC_CLK_TCK")
        print(0 <= utime <= os.times().user + 0.02)
        size, resident = map(int, open("/proc/self/statm").read().split()[:2])
        print(size == resident == int(fields[20]) // 4096 == int(fields[21]) > 1000)
        status = dict(l.split(":\\t", 1) for l in open("/proc/self/status").read().splitlines())
        print(status["PPid"] == str(os.getppid()), status["Threads"])
        done.set(); t.join()
    """)
    name = os.path.basename(host_executable())[:15]
    assert out == [f"{name} R True True 2 52", "True True", "True", "True", "True 2"]


def test_proc_self_cmdline_and_environ_are_what_the_process_started_with(usf):
    out = run(usf, """
        import subprocess, sys
        print(open("/proc/self/cmdline", "rb").read().split(b"\\0")[:4] ==
              [sys.executable.encode(), b"-s", b"-S", b"-P"])
        print(subprocess.run(["cat", "/proc/self/cmdline", "/proc/self/environ"], env={"A": "1"},
                             capture_output=True).stdout)
    """)
    assert out == ["True", r"b'cat\x00/proc/self/cmdline\x00/proc/self/environ\x00A=1\x00'"]


def test_proc_self_fd_lists_the_open_fds_and_reopens_what_they_name(usf):
    out = run(usf, """
        import os, stat
        r, w = os.pipe()
        fds = os.listdir("/proc/self/fd")  # the fd reading the directory is listed too
        print(all(str(fd) in fds for fd in (0, 1, 2, r, w)), os.listdir("/dev/fd") == fds)
        print(os.readlink(f"/proc/self/fd/{r}") == f"pipe:[{os.fstat(r).st_ino}]",
              os.readlink("/dev/stdin"), os.readlink("/proc/self/fd/0"))
        os.write(w, b"through")
        again = os.open(f"/dev/fd/{r}", os.O_RDONLY)  # a new read end of the same pipe
        print(os.read(again, 100), stat.S_ISFIFO(os.stat("/dev/fd/%d" % w).st_mode))
        writer = os.open(f"/proc/self/fd/{r}", os.O_WRONLY)  # a FIFO opened for writing
        os.write(writer, b"back"); print(os.read(r, 100))
        with open("/tmp/gone.txt", "w") as f:
            f.write("still here")
        fd = os.open("/tmp/gone.txt", os.O_RDONLY); os.unlink("/tmp/gone.txt")
        print(os.readlink(f"/proc/self/fd/{fd}"), open(f"/proc/self/fd/{fd}").read())
        d = os.open("/usr", os.O_RDONLY)
        print(os.readlink(f"/dev/fd/{d}"), "lib" in os.listdir(f"/dev/fd/{d}"),
              os.path.exists(f"/proc/self/fd/{d}/bin/sh"))
        with open("/dev/stdout", "w") as out:  # the capture itself
            out.write("via /dev/stdout\\n")
        print(os.access("/dev/stderr", os.W_OK), os.readlink(f"/proc/{os.getpid()}/fd/1"))
        a, b = __import__("socket").socketpair()
        for path in (f"/proc/self/fd/{a.fileno()}", "/proc/self/fd/999"):
            try:
                open(path, "rb")
            except OSError as e:
                print(e.errno, os.readlink(path).startswith("socket:[") if e.errno == 6 else "")
    """)
    assert out == [
        "via /dev/stdout",
        "True True",
        "True /proc/self/fd/0 /dev/null",
        "b'through' True",
        "b'back'",
        "/tmp/gone.txt (deleted) still here",
        "/usr True True",
        "True /dev/stdout",
        "6 True",
        "2 ",
    ]


def test_users_and_the_tz_database(usf):
    out = run(usf, """
        import datetime, getpass, grp, os, pwd, zoneinfo
        user, group = pwd.getpwuid(os.getuid()), grp.getgrgid(os.getgid())
        print(getpass.getuser(), user.pw_dir, group.gr_name)
        paris = zoneinfo.ZoneInfo("Europe/Paris")
        print(datetime.datetime(2026, 7, 1, tzinfo=paris).utcoffset(),
              datetime.datetime(2026, 1, 1, tzinfo=paris).tzname())
        print("America/New_York" in zoneinfo.available_timezones())
        print(set(os.listdir("/etc")) >= {"passwd", "group"})
        try:
            os.getlogin()  # no login session: /proc/self/loginuid is audit's unset id
        except OSError as e:
            print(e.strerror, open("/proc/self/loginuid").read())
    """)
    assert out == ["usetl /tmp usetl", "2:00:00 CET", "True", "True",
                   "No such device or address 4294967295"]


def test_the_image_carries_ca_certificates_for_the_default_context(usf):
    out = run(usf, """
        import ssl
        stats = ssl.create_default_context().cert_store_stats()
        print(stats["x509_ca"] > 10)
    """)
    assert out == ["True"]


def test_the_image_describes_its_userland_in_os_release(usf):
    """platform.freedesktop_os_release() raises OSError where neither file exists."""
    out = run(usf, """
        import platform
        print(sorted(platform.freedesktop_os_release().items()))
    """)
    assert out == [str(sorted(platform.freedesktop_os_release().items()))]


def test_chown_to_itself_mknod_of_files_and_creating_with_a_trailing_slash(usf):
    out = run(usf, """
        import os, stat
        os.mkdir("/tmp/own"); open("/tmp/own/f", "w").close()
        os.chown("/tmp/own/f", os.getuid(), os.getgid()); os.chown("/tmp/own/f", -1, -1)
        os.mknod("/tmp/own/n", 0o600 | stat.S_IFREG)
        s = os.stat("/tmp/own/n")
        print(stat.filemode(s.st_mode), s.st_uid == os.getuid(), os.stat("/usr").st_uid)
        fd = os.open("/tmp/own/f", os.O_RDONLY); os.set_inheritable(fd, True)
        print(os.get_inheritable(fd)); os.set_inheritable(fd, False); print(os.get_inheritable(fd))
        for action in (lambda: os.chown("/tmp/own/f", 0, 0), lambda: os.chown("/usr", -1, -1),
                       lambda: os.mknod("/tmp/own/dev", 0o600 | stat.S_IFCHR),
                       lambda: open("/tmp/own/new/", "w")):
            try:
                action()
            except OSError as e:
                print(type(e).__name__, e.errno)
    """)
    assert out == ["-rw------- True 0", "True", "False", "PermissionError 1", "OSError 30",
                   "PermissionError 1", "IsADirectoryError 21"]


def test_empty_files_and_directories_count_against_the_tmpfs_limit(image):
    with start_usf(image, UsfConfig(tmpfs_mib=1)) as u:
        r = u.run_code(
            "import errno, os\n"
            "made = 0\n"
            "try:\n"
            "    for i in range(100_000):\n"
            "        os.mkdir(f'/tmp/d{i}') if i % 2 else open(f'/tmp/f{i}', 'w').close()\n"
            "        made += 1\n"
            "except OSError as e:\n"
            "    print(errno.errorcode[e.errno], made < 100_000)\n"
            "for i in range(made):\n"
            "    os.rmdir(f'/tmp/d{i}') if i % 2 else os.unlink(f'/tmp/f{i}')\n"
            "for i in range(made):\n"
            "    open(f'/tmp/g{i}', 'w').close()  # what was freed can be used again\n"
            "print('again', made > 1000)\n"
        )
    assert r.error is None, r.error
    assert r.stdout.splitlines() == ["ENOSPC True", "again True"]


def test_proc_sys_has_the_tunables_libraries_read(usf):
    """filelock reads overflowuid before it trusts a lock file's owner; servers size their
    listen backlog by somaxconn; random/uuid is new at each read."""
    assert run(usf, """
        import os, socket
        def read(name):
            with open("/proc/sys/" + name) as f:
                return f.read().strip()
        print(read("kernel/overflowuid"), read("kernel/overflowgid"),
              read("net/core/somaxconn") == str(socket.SOMAXCONN))
        print(read("kernel/ostype"), read("kernel/osrelease") == os.uname().release)
        print(read("kernel/random/uuid") != read("kernel/random/uuid"),
              len(read("kernel/random/boot_id")) == 36)
        """) == ["65534 65534 True", "Linux True", "True True"]


def test_flock_locks_belong_to_open_file_descriptions(usf):
    """Threads that each open a lock file exclude each other (filelock, pip's and Hugging
    Face's caches); a dup shares its description's lock, which goes at its last close."""
    assert run(usf, """
        import fcntl, os, threading
        a, b = open("/tmp/lock", "w"), open("/tmp/lock", "w")
        fcntl.flock(a, fcntl.LOCK_EX)
        try:
            fcntl.flock(b, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("EWOULDBLOCK")
        dup = os.dup(a.fileno())
        fcntl.flock(dup, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the same description: granted
        waiting = threading.Thread(target=fcntl.flock, args=(b, fcntl.LOCK_SH))
        waiting.start()
        a.close()
        print(waiting.is_alive())  # the dup still holds the lock
        os.close(dup)
        waiting.join(30)
        print(waiting.is_alive())
        c = open("/tmp/lock")
        fcntl.flock(c, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared with b's
        try:
            fcntl.flock(c, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("no exclusive while another shares")
        b.close()
        fcntl.flock(c, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("exclusive")
        """) == ["EWOULDBLOCK", "True", "False", "no exclusive while another shares", "exclusive"]


def test_rlimit_fsize_cuts_writes_short_then_fails_them_with_efbig_and_sigxfsz(usf):
    """As Linux: regular files only, a write across the limit short, one at or past it
    EFBIG after SIGXFSZ, whose default action ends a program that did not handle it."""
    assert run(usf, """
        import errno, os, resource, signal, subprocess
        got = []
        signal.signal(signal.SIGXFSZ, lambda s, f: got.append(s))
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))
        fd = os.open("/tmp/fsize", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        print(os.write(fd, b"x" * 900), os.write(fd, b"y" * 500))
        for call in (lambda: os.write(fd, b"z"), lambda: os.pwrite(fd, b"z", 5000),
                     lambda: os.writev(fd, [b"a", b"b"]), lambda: os.ftruncate(fd, 1001)):
            try:
                call()
            except OSError as e:
                print(e.errno == errno.EFBIG, end=" ")
        print(len(got), os.pwrite(fd, b"ab", 999), os.fstat(fd).st_size)
        os.lseek(fd, 0, os.SEEK_SET)
        print(os.writev(fd, [b"1" * 600, b"2" * 600]), os.fstat(fd).st_size)
        r, w = os.pipe()
        print(os.write(w, b"p" * 2000))  # not a regular file
        with open("/tmp/fsize-child", "wb") as out:
            child = subprocess.run(["head", "-c", "5000", "/dev/zero"], stdout=out)
        print(child.returncode == -signal.SIGXFSZ, os.stat("/tmp/fsize-child").st_size)
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        print(os.write(fd, b"after"))
        """) == ["900 100", "True True True True 4 1 1000", "1000 1000", "2000", "True 1000",
                 "5"]


def test_sendfile_copy_file_range_and_splice_into_a_file_keep_to_rlimit_fsize(usf):
    """The copies the kernel makes are writes too: cut short at the soft limit, EFBIG (with
    SIGXFSZ) from it on, as Linux's generic_write_checks applies to them."""
    assert run(usf, """
        import errno, os, resource, signal
        got = []
        signal.signal(signal.SIGXFSZ, lambda s, f: got.append(s))
        with open("/tmp/source", "wb") as f:
            f.write(b"s" * 5000)
        src = os.open("/tmp/source", os.O_RDONLY)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))
        dst = os.open("/tmp/copy", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        sent = [os.sendfile(dst, src, 0, 600), os.sendfile(dst, src, 0, 600)]
        copied = os.copy_file_range(src, dst, 200, 0, 200)  # within the limit
        os.lseek(dst, 900, os.SEEK_SET)
        copied = [copied, os.copy_file_range(src, dst, 3000)]
        r, w = os.pipe()
        os.write(w, b"p" * 500)
        spliced = os.splice(r, dst, 500, offset_dst=800)
        failed = []
        for call in (lambda: os.sendfile(dst, src, 0, 10),
                     lambda: os.copy_file_range(src, dst, 10, 0, 1000),
                     lambda: os.splice(r, dst, 10, offset_dst=1000)):
            try:
                call()
            except OSError as e:
                failed.append(errno.errorcode[e.errno])
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        print(sent, copied, spliced, failed, len(got), os.fstat(dst).st_size)
        for fd in (src, dst, r, w):
            os.close(fd)
        """) == ["[600, 400] [200, 100] 200 ['EFBIG', 'EFBIG', 'EFBIG'] 3 1000"]


def test_the_nice_value_goes_up_and_not_back_down(usf):
    assert run(usf, """
        import os
        base = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, os.getpid(), base + 1)
        print(base, os.getpriority(os.PRIO_PROCESS, 0))
        try:
            os.setpriority(os.PRIO_PROCESS, 0, base)
        except PermissionError:
            print("EACCES")
        try:
            os.getpriority(os.PRIO_PROCESS, 12345)
        except ProcessLookupError:
            print("ESRCH")
        """) == ["0 1", "EACCES", "ESRCH"]


def test_scheduling_policy_is_sched_other_and_only_that_can_be_set(usf):
    """libzmq's I/O threads read and set their own policy (pthread_getschedparam, which
    glibc turns into EPERM when sched_getparam fails)."""
    assert run(usf, """
        import os, threading
        tids = []
        t = threading.Thread(target=lambda: tids.append(threading.get_native_id()))
        t.start(); t.join()
        me = threading.get_native_id()
        print(os.sched_getscheduler(0) == os.SCHED_OTHER, os.sched_getparam(me).sched_priority)
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        os.sched_setparam(0, os.sched_param(0))
        for policy, priority in ((os.SCHED_FIFO, 10), (os.SCHED_BATCH, 0)):
            try:
                os.sched_setscheduler(0, policy, os.sched_param(priority))
            except PermissionError:
                print("EPERM")
        for policy, priority in ((os.SCHED_OTHER, 5), (os.SCHED_RR, 0)):
            try:
                os.sched_setscheduler(0, policy, os.sched_param(priority))
            except OSError as e:
                print(e.errno == __import__("errno").EINVAL)
        print(os.sched_get_priority_min(os.SCHED_RR), os.sched_get_priority_max(os.SCHED_FIFO),
              os.sched_get_priority_max(os.SCHED_OTHER))
        try:
            os.sched_getscheduler(tids[0])  # that thread has ended
        except ProcessLookupError:
            print("ESRCH")
        """) == ["True 0", "EPERM", "EPERM", "True", "True", "1 99 0", "ESRCH"]


def test_setrlimit_is_kept_nofile_enforced_and_the_c_utf8_locale_is_there(usf):
    out = run(usf, """
        import locale, os, resource, subprocess, sys
        print(locale.setlocale(locale.LC_ALL, "C.UTF-8"), locale.setlocale(locale.LC_ALL, "C"))
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 1024)  # KiB, as Linux
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (20, hard))
        fds = []
        try:
            while True:
                fds.append(os.open("/dev/null", os.O_RDONLY))
        except OSError as e:
            print(e.errno, max(fds))
        for call in (lambda: os.dup2(0, 20), lambda: resource.setrlimit(
                resource.RLIMIT_NOFILE, (hard + 1, hard + 1))):
            try:
                call()
            except (OSError, ValueError) as e:
                print(type(e).__name__, getattr(e, "errno", None))
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, hard))
        print(subprocess.run([sys.executable, "-c", "import resource as r; print("
                              "r.getrlimit(r.RLIMIT_NOFILE)[0], r.getrlimit(r.RLIMIT_CORE))"],
                             capture_output=True, text=True).stdout.strip())  # kept by execve
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    """)
    assert out == ["C.UTF-8 C", "True", "24 19", "OSError 9", "ValueError None", "100 (0, 0)"]


def test_a_mapping_whose_pages_pass_the_largest_file_is_eoverflow(usf):
    # The fuzzer's: a shared mapping of a tmpfs file at offset -4096 was a monitor error.
    out = run(usf, """
        import ctypes, errno, os
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        fd = os.open("/tmp/big", os.O_RDWR | os.O_CREAT)
        for offset in (-4096, (1 << 63) - 4096, 1 << 40):
            ctypes.set_errno(0)
            mapped = libc.mmap(None, 4, 3, 1, fd, offset) not in (None, 2 ** 64 - 1)
            print(mapped, errno.errorcode.get(ctypes.get_errno()))
        """)
    assert out == ["False EOVERFLOW", "False EOVERFLOW", "True None"]  # as Linux's tmpfs
