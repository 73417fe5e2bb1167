"""Templates on disk: memory files plus a versioned, checksummed state file.

    DIR/state.usetl     magic, format version, sha256 of the body, body:
                        JSON header (image, regions, memory files with sizes
                        and checksums, the jail's paths, the working set) + vCPU
                        state + pickled monitor state
    DIR/<name>.mem      one sparse file per guest memory (RAM, regions)

Loading maps the memory files (clones map them copy-on-write), so pages
come in as clones touch them; nothing is started again. A snapshot loader (a
process started once, worker.LoaderProcess) opens and checks a snapshot, thaws
it (once while its files stay the same: Checked.thaw), then forks the template
process from it, so a restore costs a fork.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

from usetl.errors import UsetlError
from usetl.image.archive import ImageArchive, ImageError
from usetl.libos.fs import ImageFS
from usetl.vm import RegionSpec
from usetl.vm.memory import data_ranges, guest_memories
from usetl.vm.vcpu_state import VcpuState

from . import monitor_state
from .frozen import Frozen
from .protocol import SnapshotExport

MAGIC = b"USETLSNP"
VERSION = 17  # 4: a kernel's children, host-shared ranges; 5: guest sockets, the capture time
# 3: signal state in each thread record, /dev/shm; 2: a namespace's inode counter
# 6: the agent channel's exchange in progress (agent protocol 4); 7: the jail's paths
# 8: a memory area's file
# 9: an address space's running count of mapped bytes; 10: the kernel's signal_sent queue
# 11: a kernel's process start, an address space's argv and envp strings (/proc/self)
# 12: a kernel's guest clock, deadlines on it (libos/clock.py), the capture time on it
# 13: an epoll set's queue of waiters its changes wake
# 14: a guest network's AF_UNIX path names (the process tree's)
# 15: the template's working set (Frozen.working_set), which a restored one's clones prefetch
# 16: a guest socket's SO_PEERCRED process (cred_pid); a thread's CPU time, the turn's mark
# 17: the syscall entry's getpid answer (its port write moved), the vDSO's CPU clocks, host ptys
STATE_FILE = "state.usetl"
_HEAD = struct.Struct("<8sI32sQ")  # magic, version, sha256(body), len(body)
_CHUNK = 1 << 20
# A loader keeps this many snapshots thawed (the most recently loaded), for its next loads.
THAWED_KEPT = 4


class SnapshotError(UsetlError):
    """A snapshot could not be written, or is not one this version can load."""


def export(frozen: Frozen, jail_paths: list[str]) -> tuple[SnapshotExport, list[int]]:
    """What a snapshot of `frozen` holds, and its memory files' fds (in `memories` order);
    `jail_paths`: the host paths its jail shows beyond every jail's (a restored template's
    jail root is prepared from them before its state is read).

    A template process hands these to its controller, which writes the files: a jailed
    template can see no directory of the host, let alone write one.
    """
    image = frozen.usf.image
    snapshot = SnapshotExport(
        image=str(image.path), image_digest=image.digest,
        regions=[asdict(spec) for spec in frozen.specs],
        memories=[{"name": name, "gpa": mem.gpa, "size": mem.size}
                  for name, mem in frozen.memory.items()],
        vcpu=frozen.vcpu.to_bytes(), state=frozen.state, jail_paths=jail_paths,
        working_set=frozen.working_set,
    )
    return snapshot, [mem.fd for mem in frozen.memory.values()]


def write(snapshot: SnapshotExport, fds: list[int], directory: str | os.PathLike) -> None:
    """Write what export() gave to `directory`, atomically per file."""
    if len(fds) != len(snapshot.memories):
        raise SnapshotError(f"{len(fds)} memory files came for {len(snapshot.memories)} memories")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    memories = []
    for m, fd in zip(snapshot.memories, fds, strict=True):
        name = str(m["name"])
        if not name.isidentifier():
            raise SnapshotError(f"a template sent a memory named {name!r}")
        memories.append({**m, "sha256": _copy_sparse(fd, int(m["size"]), out / f"{name}.mem")})
    header = {"image": snapshot.image, "image_digest": snapshot.image_digest,
              "regions": snapshot.regions, "memories": memories,
              "jail_paths": snapshot.jail_paths, "working_set": snapshot.working_set}
    head = json.dumps(header).encode()
    vcpu, state = snapshot.vcpu, snapshot.state
    body = struct.pack("<III", len(head), len(vcpu), len(state)) + head + vcpu + state
    tmp = out / (STATE_FILE + ".tmp")
    tmp.write_bytes(_HEAD.pack(MAGIC, VERSION, hashlib.sha256(body).digest(), len(body)) + body)
    os.replace(tmp, out / STATE_FILE)


def _sparse_chunks(fd: int, size: int):
    """(offset, bytes) of the data parts of fd, a chunk at a time (holes read as zero)."""
    for off, length in data_ranges(fd, size):
        end = off + length
        while off < end:
            chunk = os.pread(fd, min(_CHUNK, end - off), off)
            if not chunk:
                break
            yield off, chunk
            off += len(chunk)


def _mix(digest, off: int, chunk: bytes) -> None:
    """A memory file's checksum covers each chunk with its offset."""
    digest.update(struct.pack("<Q", off))
    digest.update(chunk)


def _copy_sparse(fd: int, size: int, path: Path) -> str:
    """Copy the data parts of fd to a sparse file; returns their sha256."""
    digest = hashlib.sha256()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.truncate(size)
        for off, chunk in _sparse_chunks(fd, size):
            f.seek(off)
            f.write(chunk)
            _mix(digest, off, chunk)
    os.replace(tmp, path)
    return digest.hexdigest()


class Checked:
    """What a snapshot loader has checked already, so that a restore per call re-reads
    nothing unchanged: images opened (by path and file identity), memory files whose
    checksum matched, by file identity (device, inode, size, mtime, ctime), and the
    snapshots last thawed (THAWED_KEPT), by their state file's checksum and their image's
    and memory files' identities. A file written, truncated or replaced since has another
    identity and is checked again; a loader's first load of each file (after a restart of
    the server) checks it in full."""

    def __init__(self) -> None:
        self.images: dict[str, tuple[tuple[int, ...], ImageArchive]] = {}
        self.memory: set[tuple] = set()
        self.thawed: dict[tuple, Frozen] = {}

    def image(self, path: str) -> ImageArchive:
        try:
            key = _identity(os.stat(path))
        except OSError as e:
            raise SnapshotError(
                f"the snapshot's image {path} is gone ({e.strerror}); run `usetl image build`"
            ) from None
        cached = self.images.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            archive = ImageArchive.open(path)
        except (OSError, ImageError) as e:
            raise SnapshotError(
                f"the snapshot's image {path} is gone ({e}); run `usetl image build`"
            ) from None
        if cached is not None:
            cached[1].close()
        self.images[path] = (key, archive)
        return archive

    def thaw(self, opened: Opened) -> Frozen:
        """The frozen USF of `opened` (which this takes: its files are closed or kept), thawed
        once while its files stay the same: the loader's template processes inherit it by
        fork, as clones inherit their template's, and none changes the loader's. Frozen
        from the collector (gc.freeze), as the loader's own objects are, so that a template
        process's collection walks none of it; one let go is collected."""
        frozen = self.thawed.pop(opened.key, None)
        if frozen is not None:
            opened.close()  # the same files, open since they were thawed
        else:
            try:
                frozen = thaw(opened)
            except BaseException:
                opened.close()
                raise
        self.thawed[opened.key] = frozen  # the most recent last
        if len(self.thawed) > THAWED_KEPT:
            for mem in self.thawed.pop(next(iter(self.thawed))).memory.values():
                mem.close()
            gc.unfreeze()
            gc.collect()
        gc.freeze()
        return frozen


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass
class Opened:
    """A snapshot checked and its memory files open: what a template process is made of."""

    image: ImageArchive
    header: dict
    vcpu: VcpuState
    state: bytes
    fds: dict[str, int]
    key: tuple  # what makes it the same snapshot (Checked.thaw)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)


def _check_sparse(path: Path, size: int, expected: str, checked: Checked) -> tuple[int, tuple]:
    """The memory file open and checked, and its checksum with its identity."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise SnapshotError(f"snapshot memory file {path} cannot be opened: {e.strerror}") from None
    st = os.fstat(fd)
    if st.st_size != size:
        os.close(fd)
        raise SnapshotError(f"snapshot memory file {path} is truncated or has the wrong size")
    key = (expected, *_identity(st))
    if key in checked.memory:
        return fd, key
    digest = hashlib.sha256()
    for off, chunk in _sparse_chunks(fd, size):
        _mix(digest, off, chunk)
    if digest.hexdigest() != expected:
        os.close(fd)
        raise SnapshotError(f"snapshot memory file {path} fails its checksum")
    checked.memory.add(key)
    return fd, key


def _read_state(root: Path) -> tuple[dict, VcpuState, bytes, bytes]:
    """The state file's header, vCPU state, monitor state and checksum; refuses all but an
    intact one of this VERSION (its checksum is checked on every load: it is small)."""
    try:
        raw = (root / STATE_FILE).read_bytes()
    except OSError as e:
        raise SnapshotError(f"no snapshot in {root}: {e.strerror}") from None
    if len(raw) < _HEAD.size:
        raise SnapshotError(f"snapshot {root} is truncated")
    magic, version, digest, length = _HEAD.unpack_from(raw)
    if magic != MAGIC:
        raise SnapshotError(f"{root} does not hold a usetl snapshot")
    if version != VERSION:
        raise SnapshotError(
            f"snapshot {root} has format version {version}; this usetl reads version {VERSION}"
            " (make the template again)"
        )
    body = raw[_HEAD.size :]
    if len(body) != length:
        raise SnapshotError(f"snapshot {root} is truncated")
    if hashlib.sha256(body).digest() != digest:
        raise SnapshotError(f"snapshot {root} fails its checksum")
    head_len, vcpu_len, state_len = struct.unpack_from("<III", body)
    off = 12
    header = json.loads(body[off : off + head_len])
    vcpu = VcpuState.from_bytes(body[off + head_len : off + head_len + vcpu_len])
    state = body[off + head_len + vcpu_len :]
    if len(state) != state_len:
        raise SnapshotError(f"snapshot {root} is truncated")
    return header, vcpu, state, digest


def guest_bytes(directory: str) -> int:
    """The guest memory (RAM and regions) of the snapshot in `directory`, as its intact state
    file says (what its template's cgroup is made for before the loader has opened it)."""
    header, _, _, _ = _read_state(Path(directory))
    return sum(int(m["size"]) for m in header["memories"])


def open_checked(directory: str, checked: Checked) -> Opened:
    """A snapshot directory's files checked (what `checked` has seen unchanged is not read
    again) and its memory files open."""
    root = Path(directory)
    header, vcpu, state, digest = _read_state(root)
    image = checked.image(header["image"])
    if image.digest != header["image_digest"]:
        raise SnapshotError("the snapshot was made from another image; make the template again")
    fds: dict[str, int] = {}
    files = []
    try:
        for m in header["memories"]:
            fds[m["name"]], file = _check_sparse(root / f"{m['name']}.mem", m["size"],
                                                 m["sha256"], checked)
            files.append(file)
    except BaseException:
        Opened(image, header, vcpu, state, fds, ()).close()
        raise
    key = (digest, checked.images[header["image"]][0], *files)
    return Opened(image, header, vcpu, state, fds, key)


def thaw(opened: Opened) -> Frozen:
    """The frozen USF of an opened snapshot: its memory files mapped, nothing re-run."""
    memory = guest_memories([(m["name"], m["gpa"], m["size"], opened.fds[m["name"]])
                             for m in opened.header["memories"]])
    externals = monitor_state.externals(None, opened.image, ImageFS(opened.image), memory)
    usf = monitor_state.loads(opened.state, externals)
    specs = [RegionSpec(**r) for r in opened.header["regions"]]
    frozen = Frozen(usf, opened.vcpu, opened.state, memory, specs)
    # Believed as a clone's report is: only where it lies in the snapshot's own pages.
    frozen.learn_working_set([(int(off), int(n)) for off, n in opened.header["working_set"]])
    return frozen
