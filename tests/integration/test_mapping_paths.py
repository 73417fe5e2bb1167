"""The guest's memory paths that imports use: CPython's arenas from the vDSO, file and
anonymous mappings (what they read, what writes to them change, what munmap leaves)."""

import pytest

from usetl.usf import UsfConfig, start_usf

pytestmark = pytest.mark.kvm

FUNCTION = """
import ctypes, mmap, os, sys

PAGE = 4096
PROT_RW, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 3, 2, 0x10, 0x20
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]

def library():
    import _decimal  # an extension module of the image, through ld.so
    return {"file": _decimal.__file__, "value": str(_decimal.Decimal(1) / _decimal.Decimal(7))}

def private(path):
    with open(path, "rb") as f:
        original = f.read()
        mine = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE,
                         prot=mmap.PROT_READ | mmap.PROT_WRITE)
        other = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
    mine[PAGE : PAGE + 4] = b"XXXX"
    with open(path, "rb") as f:
        again = f.read()
    size = len(original)
    tail = -size % PAGE  # past the end of the file, in its last page
    at = ctypes.addressof(ctypes.c_char.from_buffer(mine))
    return {"mine": mine[PAGE : PAGE + 4] == b"XXXX",
            "rest": mine[PAGE + 4 :] == original[PAGE + 4 :],
            "other": other[:] == original, "file": again == original,
            "tail_zero": ctypes.string_at(at + size, tail) == bytes(tail), "size": size}

def unmap(path):
    with open(path, "rb") as f:
        original = f.read(32 * PAGE)
    fd = os.open(path, os.O_RDONLY)
    addr = libc.mmap(None, 32 * PAGE, PROT_RW, MAP_PRIVATE, fd, 0)
    os.close(fd)
    ctypes.memset(addr + 2 * PAGE, 0x5A, 16)
    assert libc.munmap(addr + 8 * PAGE, 8 * PAGE) == 0
    hole = libc.mmap(addr + 8 * PAGE, 8 * PAGE, PROT_RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                     -1, 0)
    out = {"hole": hole == addr + 8 * PAGE and
                   ctypes.string_at(addr + 8 * PAGE, 8 * PAGE) == bytes(8 * PAGE),
           "stored": ctypes.string_at(addr + 2 * PAGE, 16) == b"Z" * 16,
           "before": ctypes.string_at(addr, 2 * PAGE) == original[: 2 * PAGE],
           "after": ctypes.string_at(addr + 16 * PAGE, 16 * PAGE) == original[16 * PAGE :]}
    libc.munmap(addr, 32 * PAGE)
    return out

def dontneed(path):
    # What MADV_DONTNEED leaves: private file mappings read the file again, a shared one
    # keeps its stores (they are the file's), anonymous memory reads zero.
    with open("/tmp/small.bin", "wb") as f:
        f.write(bytes(range(256)) * 40)  # 10 KiB: copied in, not shown
    out = {}
    for name, file in (("shown", path), ("copied", "/tmp/small.bin")):
        with open(file, "rb") as f:
            original = f.read()
            m = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE,
                          prot=mmap.PROT_READ | mmap.PROT_WRITE)
        m[:4] = m[PAGE : PAGE + 4] = b"XXXX"
        m.madvise(mmap.MADV_DONTNEED, 0, PAGE)  # the first page only
        out[name] = (m[:4] == original[:4], m[PAGE : PAGE + 4] == b"XXXX")
    with open("/tmp/small.bin", "r+b") as f:
        shared = mmap.mmap(f.fileno(), 0)
        shared[:4] = b"YYYY"
        shared.madvise(mmap.MADV_DONTNEED)
        out["shared"] = (shared[:4] == b"YYYY", os.pread(f.fileno(), 4, 0) == b"YYYY")
    with open(path, "rb") as f:
        head = f.read(4 * PAGE)
    fd = os.open(path, os.O_RDONLY)
    addr = libc.mmap(None, PAGE, PROT_RW, MAP_PRIVATE, fd, 0)
    os.close(fd)
    libc.mremap.restype = ctypes.c_void_p
    libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int]
    grown = libc.mremap(addr, PAGE, 4 * PAGE, 1)  # MREMAP_MAYMOVE
    out["mremap"] = ctypes.string_at(grown, 4 * PAGE) == head
    libc.munmap(grown, 4 * PAGE)
    anon = mmap.mmap(-1, 4 * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    anon[:4] = b"ZZZZ"
    anon.madvise(mmap.MADV_DONTNEED)
    out["anon"] = anon[:4] == bytes(4)
    shared = mmap.mmap(-1, 4 * PAGE)  # MAP_SHARED: as on Linux, its bytes stay
    shared[:4] = b"ZZZZ"
    shared.madvise(mmap.MADV_DONTNEED)
    out["shared anon"] = shared[:4] == b"ZZZZ"
    return out

def deep(n):
    return 0 if n == 0 else 1 + deep(n - 1)

def handler(event, context):
    if event["kind"] == "deep":
        from usetl import arenas
        return {"sum": sum(deep(event["depth"]) for _ in range(event["times"])),
                "installed": arenas.install()}
    if event["kind"] == "library":
        return library()
    if event["kind"] == "private":
        return private(event["path"])
    if event["kind"] == "unmap":
        return unmap(event["path"])
    if event["kind"] == "dontneed":
        return dontneed(event["path"])
    if event["kind"] == "anon":
        first = mmap.mmap(-1, 1 << 16)
        first[:5] = b"dirty"
        first.close()  # munmap
        again = mmap.mmap(-1, 1 << 16)
        return {"zero": again[:5] == bytes(5)}
"""


@pytest.fixture(scope="module")
def usf(image):
    usf = start_usf(image, UsfConfig(trace=True))  # trace: syscalls counted by name
    try:
        r = usf.load_function("handler", source=FUNCTION, filename="/tmp/fn.py", timeout=120)
        assert r.ok, (r.error, r.stderr)
        yield usf
    finally:
        usf.close()


def call_counting(usf, event):
    """The call's value and its syscalls by name."""
    stats = usf.kernel.stats
    before = dict(stats.by_name)
    r = usf.call(event, timeout=60)
    assert r.ok, (r.error, r.stderr)
    return r.value, {n: c - before.get(n, 0) for n, c in stats.by_name.items()
                     if c != before.get(n, 0)}


def test_frame_stack_chunks_are_reused_without_mmap_or_munmap(usf):
    # Each call goes a few chunks (16 KiB) deep and returns: with munmap and mmap that
    # is two exits per chunk per call; from the vDSO's free lists, none once warm.
    call_counting(usf, {"kind": "deep", "depth": 400, "times": 1})
    times = 100
    value, calls = call_counting(usf, {"kind": "deep", "depth": 400, "times": times})
    assert value == {"sum": 400 * times, "installed": True}
    assert calls.get("mmap", 0) + calls.get("munmap", 0) < times // 10, calls


def test_anonymous_memory_reads_zero_again_after_munmap(usf):
    value, _ = call_counting(usf, {"kind": "anon"})
    assert value == {"zero": True}


def shown_areas(usf) -> list[str]:
    """The names of the memory-map areas that show file pages rather than copies."""
    mm = usf.kernel.mm
    return [a.name for a in mm.areas
            if any(lo < a.end and a.start < hi for lo, hi in usf.vm.ram.file_pages)]


def test_a_library_mapped_from_the_image_runs_from_its_pages(usf):
    value, calls = call_counting(usf, {"kind": "library"})
    assert value["value"] == "0.1428571428571428571428571429"
    assert value["file"] in shown_areas(usf), shown_areas(usf)
    assert calls.get("mmap", 0) >= 1


def test_stores_into_a_private_file_mapping_stay_in_it(usf):
    path = call_counting(usf, {"kind": "library"})[0]["file"]
    value, _ = call_counting(usf, {"kind": "private", "path": path})
    assert value == {"mine": True, "rest": True, "other": True, "file": True,
                     "tail_zero": True, "size": value["size"]}
    assert value["size"] % 4096  # so that the tail is there to check


def test_munmap_of_part_of_a_file_mapping_leaves_the_rest_and_fresh_memory_is_zero(usf):
    path = call_counting(usf, {"kind": "library"})[0]["file"]
    value, _ = call_counting(usf, {"kind": "unmap", "path": path})
    assert value == {"hole": True, "stored": True, "before": True, "after": True}


def test_the_trace_counts_first_touches_and_other_exits_by_the_syscall_before_them(usf):
    after = usf.kernel.stats.after
    before = {name: dict(counts) for name, counts in after.items()}
    call_counting(usf, {"kind": "anon"})  # fresh pages touched after each mmap
    grew = {name: counts["pf_fixed"] - before.get(name, {}).get("pf_fixed", 0)
            for name, counts in after.items()}
    assert grew.get("mmap", 0) > 0, grew
    assert all(counts["exits"] >= counts["pf_fixed"] >= 0 for counts in after.values()), after


def test_madv_dontneed_and_mremap_show_a_file_mapping_s_file_and_anonymous_memory_zero(usf):
    path = call_counting(usf, {"kind": "library"})[0]["file"]
    value, calls = call_counting(usf, {"kind": "dontneed", "path": path})
    # (first page as the file has it, the untouched second page keeps its store)
    assert value == {"shown": [True, True], "copied": [True, True], "shared": [True, True],
                     "mremap": True, "anon": True, "shared anon": True}
    assert calls["madvise"] == 5
