"""/dev/etl's regions, offset tables and request buffer over real (memfd) guest memory."""

import errno
import json
import struct
from types import SimpleNamespace

import pytest

from usetl.etl.policy import UrlPolicy
from usetl.libos.errors import SyscallError
from usetl.libos.etl_device import (
    ETL_REQUEST,
    EtlDevice,
    RegionFull,
    RegionTable,
)
from usetl.libos.usermem import UserMemory
from usetl.vm import GuestMemory

MIB = 1 << 20
HOST_REGION_GPA = 2 << 30  # anywhere above RAM
PROT_READ, PROT_WRITE, MAP_SHARED = 1, 2, 1


@pytest.fixture
def device():
    host = GuestMemory("host", HOST_REGION_GPA, 2 * MIB)
    guest = GuestMemory("guest", HOST_REGION_GPA + 2 * MIB, 2 * MIB)
    yield EtlDevice(host, guest, UrlPolicy(), timeout=1.0)
    host.close()
    guest.close()


def ask(device, request) -> dict:
    return json.loads(device._answer(None, json.dumps(request).encode()))


def test_files_start_on_pages_and_a_name_is_replaced_by_its_newer_file(device):
    table: RegionTable = device.guest
    a = table.allocate("a", 10)
    b = table.allocate("b", 4097)
    a2 = table.allocate("a", 3)
    assert (a.offset, b.offset, a2.offset) == (0, 4096, 3 * 4096)
    assert table.files == {"a": a2, "b": b}
    assert table.used == 4 * 4096


def test_a_full_region_says_how_much_was_asked_and_is_left(device):
    device.guest.allocate("big", 2 * MIB - 4096)
    with pytest.raises(RegionFull, match="guest region is full: 4097 B asked, 4096 B of"):
        device.guest.allocate("more", 4097)
    assert ask(device, {"op": "alloc", "name": "x", "size": 5000})["error"]["kind"] == "too_large"


def test_reset_forgets_files_and_zeroes_what_was_written(device):
    f = device.put_host_file("event.json", b"secret" * 100)
    device.host.tail()[:3] = b"xyz"  # a download that failed half-way
    device.host.spoil()
    device.reset()
    view = device.host.memory.view
    assert bytes(view[f.offset : f.offset + 600]) == bytes(600)
    assert bytes(view[4096:4099]) == bytes(3)
    assert ask(device, {"op": "ls"}) == {"files": []}


def test_stat_finds_the_guests_copy_before_the_host_original(device):
    device.put_host_file("data.csv", b"a,b\n")
    assert ask(device, {"op": "stat", "name": "data.csv"})["file"]["region"] == "host"
    ask(device, {"op": "alloc", "name": "data.csv", "size": 6})
    assert ask(device, {"op": "stat", "name": "data.csv"})["file"]["region"] == "guest"
    assert [(f["name"], f["region"]) for f in ask(device, {"op": "ls"})["files"]] == [
        ("data.csv", "host"), ("data.csv", "guest"),
    ]
    assert ask(device, {"op": "stat", "name": "nope"}) == {"file": None}


@pytest.mark.parametrize("raw", [b"not json", b"[1]", b'{"op": "format"}',
                                 b'{"op": "alloc", "name": "", "size": 1}',
                                 b'{"op": "alloc", "name": "x", "size": "1"}',
                                 b'{"op": "alloc", "name": "x", "size": -1}',
                                 b'{"op": "post", "url": "http://a/", "source": {"region": "x"}}'])
def test_malformed_requests_are_answered_as_invalid(device, raw):
    assert json.loads(device._answer(None, raw))["error"]["kind"] == "invalid"


def test_the_host_region_maps_read_only_and_the_guest_region_read_write(device):
    assert device.map(2 * MIB, PROT_READ, MAP_SHARED, 0) == HOST_REGION_GPA
    assert device.map(2 * MIB, PROT_READ | PROT_WRITE, MAP_SHARED, 2 * MIB) == (
        HOST_REGION_GPA + 2 * MIB
    )
    for length, prot, offset, code in [
        (2 * MIB, PROT_READ | PROT_WRITE, 0, errno.EACCES),
        (4 * MIB, PROT_READ, 0, errno.EINVAL),
        (4096, PROT_READ, 4096, errno.EINVAL),
    ]:
        with pytest.raises(SyscallError) as e:
            device.map(length, prot, MAP_SHARED, offset)
        assert e.value.errno == code


def test_a_reply_larger_than_the_buffer_is_kept_for_a_second_request(device):
    ram = GuestMemory("ram", 0, 8 * MIB)
    # One guest thread (tid 1): the reply is kept for it.
    k = SimpleNamespace(mem=UserMemory(ram),
                        sched=SimpleNamespace(alone=True, current=SimpleNamespace(tid=1)))
    for i in range(40):
        device.put_host_file(f"file-{i:02}", b"x")
    arg = 4 * MIB

    def ioctl(request: bytes, capacity: int) -> tuple[int, int]:
        ram.write(arg, struct.pack("<II", len(request), capacity) + request)
        try:
            return device.ioctl(k, ETL_REQUEST, arg), 0
        except SyscallError as e:
            return -1, e.errno

    assert ioctl(b'{"op": "ls"}', 256) == (-1, errno.ENOBUFS)
    needed = struct.unpack("<I", ram.read(arg, 4))[0]
    assert ioctl(b'{"op": "reply"}', needed) == (0, 0)
    length = struct.unpack("<I", ram.read(arg, 4))[0]
    files = json.loads(ram.read(arg + 8, length))["files"]
    assert [f["name"] for f in files] == [f"file-{i:02}" for i in range(40)]
    ram.close()
