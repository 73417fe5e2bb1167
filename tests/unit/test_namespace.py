"""usetl.libos.fs.Namespace: path resolution over the real image, /tmp, /dev and /proc.

The default image (the host's CPython, baked into ~/.cache/usetl on first
use) is the root filesystem; small archives written here with ArchiveWriter
provide symlink loops, which cannot be made in the tmpfs.
"""

from __future__ import annotations

import errno
import os
import stat as st
from collections.abc import Iterator
from pathlib import Path

import pytest

from usetl.image import ImageArchive, default_image
from usetl.image.archive import ArchiveWriter
from usetl.libos.devices import AgentChannel, makedev, standard_devices
from usetl.libos.errors import SyscallError
from usetl.libos.fs import (
    MAX_SYMLINKS,
    DeviceNode,
    ImageNode,
    Inodes,
    Namespace,
    StaticLink,
    TmpDir,
    TmpFile,
    TmpFS,
)

TMPFS_LIMIT = 1 << 20


@pytest.fixture(scope="module")
def archive() -> Iterator[ImageArchive]:
    image = ImageArchive.open(default_image())
    yield image
    image.close()


@pytest.fixture
def ns(archive: ImageArchive) -> Namespace:
    return Namespace(archive, TMPFS_LIMIT, standard_devices(AgentChannel()),
                     archive.meta["executable"])


def resolve_errno(ns: Namespace, path: str, **kw: object) -> int:
    with pytest.raises(SyscallError) as e:
        ns.resolve(path, **kw)
    return e.value.errno


# -- the image ------------------------------------------------------------------------


def test_root_is_the_image_root(ns: Namespace) -> None:
    r = ns.resolve("/")
    assert r.path == "/" and r.parts == []
    assert isinstance(r.node, ImageNode) and r.node.is_dir


def test_dynamic_loader_follows_symlinks_to_a_file(ns: Namespace) -> None:
    r = ns.resolve("/lib64/ld-linux-x86-64.so.2")
    assert isinstance(r.node, ImageNode)
    assert st.S_ISREG(r.node.mode) and not r.node.is_symlink
    # Where it lands is where the host's own symlinks lead, with the same bytes.
    host = os.path.realpath("/lib64/ld-linux-x86-64.so.2")
    assert r.path == host
    assert bytes(r.node.read_at(0, r.node.size)) == Path(host).read_bytes()
    assert r.name == os.path.basename(host)


def test_no_follow_stops_at_the_last_symlink(ns: Namespace) -> None:
    r = ns.resolve("/lib64/ld-linux-x86-64.so.2", follow=False)
    assert r.node is not None and r.node.is_symlink
    # /lib64 itself (not the last component) was followed
    assert r.path == os.path.realpath("/lib64") + "/ld-linux-x86-64.so.2"
    assert r.node.readlink() == os.readlink(r.path)


def test_executable_is_in_the_image(ns: Namespace, archive: ImageArchive) -> None:
    exe = archive.meta["executable"]
    r = ns.resolve(exe)
    assert isinstance(r.node, ImageNode) and st.S_ISREG(r.node.mode)
    assert r.node.size == os.path.getsize(exe)


@pytest.mark.parametrize("path", ["/etc/shadow", "/etc/hostname", "/etc/passwd"])
def test_host_etc_is_not_in_the_image(ns: Namespace, path: str) -> None:
    # The image's /etc holds the trust store, the services and protocols tables, the
    # os-release of its userland, the alternatives' links of its programs (awk, which)
    # and the ld.so.cache of its libraries only: the host's own files are not there.
    etc = ns.resolve("/etc").node
    assert etc is not None and {name for name, _ in ns.children("/etc", etc)} <= {
        "ssl", "services", "protocols", "os-release", "alternatives", "ld.so.cache"}
    assert ns.resolve(path).node is None


def test_monitor_files_lie_over_the_image_and_are_listed(ns: Namespace) -> None:
    ns.put_etc("passwd", b"root:x:0:0::/:/bin/sh\n")
    ns.put_file("/usr/share/usetl-test/deep/f", b"data")
    r = ns.resolve("/etc/passwd")
    assert r.node is not None and r.node.read_at(0, 4) == b"root"
    assert "passwd" in {name for name, _ in ns.children("/etc", ns.resolve("/etc").node)}
    deep = ns.resolve("/usr/share/usetl-test/deep")
    assert deep.node is not None and deep.node.is_dir
    assert [name for name, _ in ns.children(deep.path, deep.node)] == ["f"]
    ns.put_etc("passwd", b"other")
    assert ns.resolve("/etc/passwd").node.read_at(0, 5) == b"other"
    for bad in ("/tmp/x", "relative", "/etc/../x", "/proc/x", f"{r.path}/below"):
        with pytest.raises(ValueError):
            ns.put_file(bad, b"")


def test_host_home_files_are_not_in_the_image(ns: Namespace) -> None:
    r = ns.resolve("/root/.bashrc")
    assert r.node is None
    assert r.path == "/root/.bashrc"
    assert r.parent is not None and r.parent.is_dir  # /root exists: CPython lives under it


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/../../etc/shadow", "/etc/shadow"),
        ("/../../root/.bashrc", "/root/.bashrc"),
        ("/usr/../../../../root/./.bashrc", "/root/.bashrc"),
        ("//root//.bashrc", "/root/.bashrc"),
        ("/tmp/../../../nothing", "/nothing"),
    ],
)
def test_dotdot_cannot_climb_above_root(ns: Namespace, path: str, expected: str) -> None:
    r = ns.resolve(path)
    assert r.path == expected
    assert r.node is None


def test_dotdot_to_an_image_file(ns: Namespace) -> None:
    host = os.path.realpath("/lib64/ld-linux-x86-64.so.2")
    r = ns.resolve("/../../.." + host)
    assert r.path == host and isinstance(r.node, ImageNode)
    # relative symlink targets with .. resolve inside the tree too
    r = ns.resolve("/lib64/../lib64/./ld-linux-x86-64.so.2")
    assert r.path == host


def test_relative_paths_use_the_cwd(ns: Namespace) -> None:
    exe = ns.resolve("/proc/self/exe").path
    ns.chdir(os.path.dirname(exe))
    assert ns.resolve(os.path.basename(exe)).path == exe
    assert ns.resolve("./" + os.path.basename(exe)).node is not None
    assert ns.resolve("..").path == os.path.dirname(os.path.dirname(exe))
    assert ns.resolve("x", base="/tmp").path == "/tmp/x"
    with pytest.raises(SyscallError) as e:
        ns.chdir(exe)
    assert e.value.errno == errno.ENOTDIR
    with pytest.raises(SyscallError) as e:
        ns.chdir("/nonexistent")
    assert e.value.errno == errno.ENOENT


def test_path_through_a_regular_file_is_enotdir(ns: Namespace, archive: ImageArchive) -> None:
    exe = archive.meta["executable"]
    assert resolve_errno(ns, exe + "/x") == errno.ENOTDIR
    assert resolve_errno(ns, exe + "/x/y", follow=False) == errno.ENOTDIR
    # through a symlink to a file, too
    assert resolve_errno(ns, "/lib64/ld-linux-x86-64.so.2/x") == errno.ENOTDIR
    assert resolve_errno(ns, "/proc/self/exe/x") == errno.ENOTDIR
    assert resolve_errno(ns, "/dev/null/x") == errno.ENOTDIR


def test_path_through_a_missing_directory_is_enoent(ns: Namespace) -> None:
    assert resolve_errno(ns, "/nonexistent/x") == errno.ENOENT
    assert resolve_errno(ns, "/tmp/nonexistent/x") == errno.ENOENT
    assert resolve_errno(ns, "") == errno.ENOENT


def test_overlong_component_is_enametoolong(ns: Namespace) -> None:
    assert resolve_errno(ns, "/tmp/" + "a" * 256) == errno.ENAMETOOLONG
    assert ns.resolve("/tmp/" + "a" * 255).node is None


# -- /proc, /dev, /tmp ---------------------------------------------------------------------


def test_proc_self_exe_is_the_executable(ns: Namespace, archive: ImageArchive) -> None:
    exe = archive.meta["executable"]
    link = ns.resolve("/proc/self/exe", follow=False)
    assert isinstance(link.node, StaticLink)
    assert link.node.readlink() == exe
    assert link.node.is_symlink
    target = ns.resolve("/proc/self/exe")
    assert target.path == exe
    assert isinstance(target.node, ImageNode)


def test_devices(ns: Namespace) -> None:
    null = ns.resolve("/dev/null").node
    assert isinstance(null, DeviceNode)
    assert st.S_ISCHR(null.mode) and null.rdev == makedev(1, 3)
    names = {name for name, _ in ns.resolve("/dev").node.children()}
    assert {"null", "zero", "urandom", "usetl"} <= names
    assert ns.resolve("/dev/sda").node is None


def test_tmp_is_the_tmpfs(ns: Namespace) -> None:
    r = ns.resolve("/tmp")
    assert isinstance(r.node, TmpDir) and r.node is ns.tmp.root
    assert ns.resolve("/tmp/x").parent is ns.tmp.root
    assert not isinstance(ns.resolve("/usr").node, TmpDir)
    f = TmpFile(ns.tmp.new_ino())
    sub = TmpDir(ns.tmp.new_ino())
    ns.tmp.root.entries["f"] = f
    ns.tmp.root.entries["d"] = sub
    sub.entries["g"] = TmpFile(ns.tmp.new_ino())
    assert ns.resolve("/tmp/f").node is f
    assert ns.resolve("/tmp/d/../f").node is f
    assert ns.resolve("/tmp/d/g").parent is sub
    assert resolve_errno(ns, "/tmp/f/x") == errno.ENOTDIR
    assert resolve_errno(ns, "/tmp/f/x/y") == errno.ENOTDIR


def test_tmpfs_quota() -> None:
    fs = TmpFS(1000, Inodes())
    fs.charge(600)
    fs.charge(400)  # exactly the limit is fine
    assert fs.used == 1000
    with pytest.raises(SyscallError) as e:
        fs.charge(1)
    assert e.value.errno == errno.ENOSPC
    assert fs.used == 1000  # a refused charge takes nothing
    fs.charge(-300)  # freeing gives room back
    fs.charge(300)
    with pytest.raises(SyscallError) as e:
        fs.charge(10**9)
    assert e.value.errno == errno.ENOSPC
    assert fs.used == 1000


def identity(node) -> tuple[int, int]:
    return node.dev, node.ino


def test_every_node_the_monitor_makes_has_its_own_inode_number(ns: Namespace) -> None:
    ns.put_etc("hosts", b"127.0.0.1 localhost\n")
    ns.put_etc("nsswitch.conf", b"hosts: files\n")
    ns.tmp.add_file("a/b/f", b"x")
    ns.tmp.add_file("g", b"y")
    nodes = [ns.resolve(p).node for p in (
        "/tmp", "/tmp/a", "/tmp/a/b", "/tmp/a/b/f", "/tmp/g", "/etc", "/etc/hosts",
        "/etc/nsswitch.conf", "/dev", "/dev/null", "/dev/zero", "/dev/urandom", "/proc",
        "/proc/self", "/usr", "/")]
    nodes.append(ns.resolve("/proc/self/exe", follow=False).node)
    identities = [identity(n) for n in nodes]
    assert len(set(identities)) == len(identities), identities
    before = ns.resolve("/etc/hosts").node.ino
    ns.put_etc("hosts", b"10.0.0.1 db\n")  # replaced, not a new file
    assert ns.resolve("/etc/hosts").node.ino == before


def test_image_inode_numbers_do_not_depend_on_the_order_of_lookups(archive) -> None:
    paths = ["/", "/usr", archive.meta["executable"], "/usetl/lib/usetl/__init__.py"]
    first, second = (Namespace(archive, TMPFS_LIMIT, {}, archive.meta["executable"])
                     for _ in range(2))
    forward = [identity(first.resolve(p).node) for p in paths]
    backward = [identity(second.resolve(p).node) for p in reversed(paths)][::-1]
    assert forward == backward
    assert len(set(forward)) == len(paths)


# -- symlink loops, in a small archive of our own ----------------------------------------------


@pytest.fixture(scope="module")
def loops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageArchive]:
    path = tmp_path_factory.mktemp("loops") / "image.usetl"
    with open(path, "wb") as out:
        w = ArchiveWriter(out)
        w.add_dir("/", 0o755, 0)
        w.add_dir("/bin", 0o755, 0)
        w.add_file("/bin/prog", b"\x7fELF", 0o755, 0)
        w.add_symlink("/self", "/self", 0)
        w.add_symlink("/a", "b", 0)
        w.add_symlink("/b", "./a", 0)
        w.add_symlink("/bin/up", "../bin/up", 0)
        w.add_symlink("/escape", "../../../../bin/prog", 0)
        # a chain of exactly MAX_SYMLINKS links ending at the program, and one longer
        for i in range(1, MAX_SYMLINKS + 2):
            target = f"/l{i + 1}" if i <= MAX_SYMLINKS else "/bin/prog"
            w.add_symlink(f"/l{i}", target, 0)
        w.finish({"digest": "loops", "executable": "/bin/prog"})
    image = ImageArchive.open(path)
    yield image
    image.close()


@pytest.fixture
def loop_ns(loops: ImageArchive) -> Namespace:
    return Namespace(loops, TMPFS_LIMIT, standard_devices(AgentChannel()), "/bin/prog")


@pytest.mark.parametrize("path", ["/self", "/a", "/b", "/bin/up", "/a/x", "/self/x/y"])
def test_symlink_loop_is_eloop(loop_ns: Namespace, path: str) -> None:
    assert resolve_errno(loop_ns, path) == errno.ELOOP


def test_loop_not_followed_at_the_end_is_fine(loop_ns: Namespace) -> None:
    r = loop_ns.resolve("/a", follow=False)
    assert r.node is not None and r.node.readlink() == "b"
    # a loop before the last component is still followed, and still ELOOP
    assert resolve_errno(loop_ns, "/a/x", follow=False) == errno.ELOOP


def test_symlink_hop_limit(loop_ns: Namespace) -> None:
    # /l2 needs MAX_SYMLINKS hops to reach the program, /l1 one more
    r = loop_ns.resolve("/l2")
    assert r.path == "/bin/prog" and isinstance(r.node, ImageNode)
    assert resolve_errno(loop_ns, "/l1") == errno.ELOOP


def test_relative_symlink_cannot_escape(loop_ns: Namespace) -> None:
    r = loop_ns.resolve("/escape")
    assert r.path == "/bin/prog" and isinstance(r.node, ImageNode)
    assert loop_ns.resolve("/proc/self/exe").path == "/bin/prog"


# -- trailing slashes and '..' after non-directories (Linux semantics) -----------------------


def test_trailing_slash_on_a_file_is_enotdir(ns: Namespace, archive: ImageArchive) -> None:
    assert resolve_errno(ns, archive.meta["executable"] + "/") == errno.ENOTDIR


def test_trailing_slash_follows_a_symlink(ns: Namespace) -> None:
    r = ns.resolve("/lib64/", follow=False)
    assert r.node is not None and r.node.is_dir


@pytest.mark.parametrize("suffix, err", [("/nonexistent/../usr", errno.ENOENT),
                                         ("/proc/self/exe/..", errno.ENOTDIR)],
                         ids=["missing-dir", "file"])
def test_dotdot_after_a_non_directory(ns: Namespace, suffix: str, err: int) -> None:
    assert resolve_errno(ns, suffix) == err
