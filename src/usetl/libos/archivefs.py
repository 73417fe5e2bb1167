"""Packed archives in the guest: mounted as directories, and placed in the module region.

A function's code and module-store entries are packed as archives of the
image's format (usetl.image.modstore.packed). Each is shown read-only at
/name by an `ArchiveMount`, which looks paths up in the archive's index (nodes
and misses cached, as the image's are: no host stat per lookup) and reads
from the monitor's mapping of it. The same bytes are copied once into the
module region, read-only to the guest (a KVM_MEM_READONLY memslot, as the ETL
host region), where the guest's importer (usetl.importer) reads the index and
the code objects without a syscall. `ModuleRegion` is the device that shows
the guest where each archive lies in it: read() gives the directory,
mmap() the region.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from usetl.abi.archive import BLOCK_SIZE, in_region
from usetl.image.archive import ImageArchive
from usetl.vm import GuestMemory

from .errors import LibosError, SyscallError
from .files import OpenFile
from .fs import DeviceNode, ImageFS, ImageNode, Namespace

DEV_ARCHIVE = 0x2B00  # st_dev of a mounted archive: this, plus its place among the mounts
PROT_WRITE = 0x2

# Archives this process opened, by path: a monitor state restored again (each rollback)
# finds its mounts here instead of mapping and indexing the archives again.
_opened: dict[tuple[str, int], ArchiveMount] = {}


class ArchiveMount(ImageFS):
    """A read-only archive shown at a mount point (a Namespace mount: walk(parts))."""

    def __init__(self, archive: ImageArchive, dev: int):
        super().__init__(archive)
        self.dev = dev

    @classmethod
    def open(cls, path: str, dev: int) -> ArchiveMount:
        """The mount of the archive at host `path`; raises ImageError if it is damaged."""
        key = (os.path.realpath(path), dev)
        mount = _opened.get(key)
        if mount is None:
            mount = _opened[key] = cls(ImageArchive.open(key[0]), dev)
        return mount

    def __reduce__(self) -> tuple:
        # Pickled with the monitor state by path: the archive's mapping is this process's.
        return ArchiveMount.open, (str(self.archive.path), self.dev)

    def walk(self, parts: list[str]) -> ImageNode | None:
        if any(part in ("", ".", "..") or "/" in part for part in parts):
            return None
        return self.node("/" + "/".join(parts))


class ModuleRegion:
    """The guest's read-only module region: archives copied in at page-aligned offsets."""

    def __init__(self, memory: GuestMemory):
        self.memory = memory
        self.placed: list[dict[str, int | str]] = []
        self.shadowed: list[str] = []  # guest paths where the image is not what the guest sees
        self.used = 0

    def place(self, mount: str, archive: ImageArchive) -> None:
        """Copy an archive into the region, for the guest's importer to find at `mount`.

        The header, the index and trailer, and the files the importer reads (in_region).
        """
        size = os.stat(archive.path).st_size
        if self.used + size > self.memory.size:
            raise LibosError(f"the module region ({self.memory.size >> 20} MiB) has no room "
                             f"for {archive.path} ({size >> 20} MiB): raise modules_region_mib")
        files = {e.path: e for e in archive.entries() if e.kind == "file"}
        index = max((e.offset + e.size for e in files.values()), default=BLOCK_SIZE)
        ranges = [(0, BLOCK_SIZE), (index, size - index)]  # the index, then the trailer
        ranges += [(e.offset, e.size) for e in files.values() if in_region(e.path, files)]
        # Archives are packed with what the region holds first (modstore._pack_tree), so
        # most of its huge pages are whole: one fault each for the importer's reads.
        self.memory.use_huge_pages([(self.used + offset, length) for offset, length in ranges])
        with open(archive.path, "rb") as f:
            for offset, length in ranges:
                start = self.used + offset
                if os.preadv(f.fileno(), [self.memory.view[start : start + length]], offset) \
                        != length:
                    raise LibosError(f"short read of {archive.path}: it changed while placed")
        self.placed.append({"mount": mount, "offset": self.used, "size": size})
        self.used += -(-size // BLOCK_SIZE) * BLOCK_SIZE

    def directory(self) -> bytes:
        return json.dumps({"size": self.memory.size, "archives": self.placed,
                           "shadowed": self.shadowed}).encode()

    def node(self, ino: int, rdev: int) -> DeviceNode:
        return DeviceNode(ino, rdev, ModuleRegionFile, self)

    def map(self, length: int, prot: int, offset: int) -> int:
        if prot & PROT_WRITE:
            raise SyscallError(errno.EACCES)
        if offset != 0 or not 0 < length <= self.memory.size:
            raise SyscallError(errno.EINVAL)
        return self.memory.gpa


class ModuleRegionFile(OpenFile):
    def __init__(self, node: DeviceNode, flags: int, region: ModuleRegion):
        super().__init__(node, flags, "/dev/usetl-modules")
        self.region = region

    def read_at(self, offset: int, length: int) -> bytes | memoryview:
        return memoryview(self.region.directory())[offset : offset + length]

    def map_device(self, length: int, prot: int, flags: int, offset: int) -> int:
        return self.region.map(length, prot, offset)


def mount_archive(ns: Namespace, region: ModuleRegion, name: str, path: str | Path) -> None:
    """Show the archive at /name and place it in the module region.

    The first archive brings the image (at "/") into the region too, so that the
    stdlib is imported from memory as well; the paths other file systems cover
    (/tmp, /dev, ..., the monitor's own files) are marked shadowed for the importer.
    """
    mount = ArchiveMount.open(str(path), DEV_ARCHIVE + len(ns.mounts))
    if not region.placed:
        region.place("/", ns.image.archive)
    ns.mount(name, mount)
    region.place("/" + name, mount.archive)
    region.shadowed = sorted([*(f"/{top}" for top in ns.SYNTHETIC), *ns.overlay])
