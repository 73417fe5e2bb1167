"""What os.stat and friends say about files, as sync and backup handlers read it: inode
numbers shared by hard links and changed by a copy, st_nlink counting links, utime with
nanoseconds, umask applied to new files, access checks, lstat of a symlink, statvfs,
samefile, O_APPEND writers, O_EXCL, pread and pwrite, a sparse file's holes found with
SEEK_DATA and SEEK_HOLE, posix_fallocate, truncate, and a directory's link count."""

import errno
import os
import shutil
import stat
import tempfile


def sparse(path):
    """A file with a hole: pread and pwrite, SEEK_HOLE and SEEK_DATA, its blocks,
    posix_fallocate and ftruncate."""
    found = {}
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    os.pwrite(fd, b"head", 0)
    os.pwrite(fd, b"tail", 1 << 20)
    found["pread"] = os.pread(fd, 4, 1 << 20).decode()
    found["sparse_size"] = os.fstat(fd).st_size
    found["hole"] = os.lseek(fd, 0, os.SEEK_HOLE) < (1 << 20)
    found["data_after_hole"] = os.lseek(fd, 4096, os.SEEK_DATA) <= (1 << 20)
    found["blocks_fewer"] = os.fstat(fd).st_blocks * 512 < (1 << 20)
    os.posix_fallocate(fd, 0, 2 << 20)
    found["fallocated"] = os.fstat(fd).st_size
    os.ftruncate(fd, 10)
    found["truncated"] = os.pread(fd, 100, 0)[:4].decode()
    os.fsync(fd)
    os.close(fd)
    return found


def handler(event, context):
    out = {}
    old_umask = os.umask(0o027)
    try:
        with tempfile.TemporaryDirectory() as d:
            a = os.path.join(d, "a.txt")
            with open(a, "w") as f:
                f.write("hello")
            out["umask_mode"] = oct(stat.S_IMODE(os.stat(a).st_mode))
            b, c = os.path.join(d, "b.txt"), os.path.join(d, "c.txt")
            os.link(a, b)
            shutil.copy2(a, c)
            sa, sb, sc = os.stat(a), os.stat(b), os.stat(c)
            out["links"] = [sa.st_ino == sb.st_ino, sa.st_ino != sc.st_ino, sa.st_nlink,
                            sc.st_nlink, sa.st_dev == sc.st_dev]
            out["copy2_mtime"] = sa.st_mtime_ns == sc.st_mtime_ns
            os.utime(a, ns=(1_600_000_000_123_456_789, 1_700_000_000_987_654_321))
            s = os.stat(a)
            out["utime_ns"] = [s.st_atime_ns, s.st_mtime_ns, os.stat(b).st_mtime_ns]
            os.chmod(a, 0o400)
            out["access"] = [os.access(a, os.R_OK), os.access(a, os.X_OK),
                             os.access(os.path.join(d, "none"), os.F_OK)]
            os.chmod(a, 0o600)
            link = os.path.join(d, "link")
            os.symlink("a.txt", link)
            out["lstat"] = [stat.S_ISLNK(os.lstat(link).st_mode), os.lstat(link).st_size,
                            os.path.samefile(link, b)]
            vfs = os.statvfs(d)
            out["statvfs"] = vfs.f_bsize > 0 and vfs.f_blocks >= vfs.f_bfree
            w1 = os.open(os.path.join(d, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            w2 = os.open(os.path.join(d, "log"), os.O_WRONLY | os.O_APPEND)
            for i in range(3):
                os.write(w1, b"one%d " % i)
                os.write(w2, b"two%d " % i)
            os.close(w1)
            os.close(w2)
            with open(os.path.join(d, "log")) as f:
                out["append"] = f.read().split()
            try:
                os.open(a, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except FileExistsError as e:
                out["excl"] = errno.errorcode[e.errno]
            out.update(sparse(os.path.join(d, "sparse")))
            sub = os.path.join(d, "sub")
            os.mkdir(sub)
            n0 = os.stat(sub).st_nlink
            os.mkdir(os.path.join(sub, "x"))
            out["dir_nlink"] = [n0, os.stat(sub).st_nlink]
            out["scandir_ino"] = {e.name: e.inode() == os.stat(e.path, follow_symlinks=False).st_ino
                                  for e in os.scandir(d)}
    finally:
        os.umask(old_umask)
    return out
