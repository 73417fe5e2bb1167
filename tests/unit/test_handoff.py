"""Pipeline hand-offs over real memfds: mapped in place, or copied and counted, and sealed."""

import os

import pytest

from usetl.etl.policy import UrlPolicy
from usetl.libos.etl_device import EtlDevice
from usetl.libos.handoff import HandedFile, HandedFiles, HandOff, HandOffError
from usetl.vm import GuestMemory

MIB = 1 << 20
HOST_REGION_GPA = 2 << 30  # anywhere above RAM


def make_device(remappable: bool) -> EtlDevice:
    host = GuestMemory("host", HOST_REGION_GPA, 8 * MIB)
    guest = GuestMemory("guest", HOST_REGION_GPA + 8 * MIB, 4 * MIB)
    return EtlDevice(host, guest, UrlPolicy(), timeout=1.0, remappable=remappable)


def write_guest_file(device: EtlDevice, name: str | None, data: bytes) -> None:
    """As the guest library does: an alloc request, then the bytes written in place."""
    f = device.answer({"op": "alloc", "name": name, "size": len(data)}, None)["file"]
    device.guest.memory.view[f["offset"] : f["offset"] + f["size"]] = data


@pytest.mark.parametrize("remappable", [True, False])
def test_a_stage_file_reaches_the_next_host_region_copied_only_where_it_must(remappable):
    first, second = make_device(remappable), make_device(remappable)
    data = os.urandom(3 * MIB + 5)
    first.lend_guest_region()
    write_guest_file(first, "out.bin", data)
    handoff, unused = first.take_guest_files()
    assert unused is None  # the lent memory file went on with the files
    assert [f.name for f in handoff.files.files] == ["out.bin"]
    second.hand_in(handoff)
    f = second.host.files["out.bin"]
    assert bytes(second.host.bytes_of(f.offset, f.size)) == data
    copied = handoff.copied_bytes + second.account.copied_bytes
    assert copied == (0 if remappable else 2 * len(data))
    # The memory file is sealed: nobody who held it can change what the next stage reads.
    with pytest.raises(OSError):
        os.pwrite(handoff.fd, b"x", 0)
    second.give_back()  # after the invocation: a mapped file goes, a copy stays till reset
    assert (second.host.files == {}) == remappable
    second.reset()
    # The region is its own memory again, and writable by the host.
    assert second.put_host_file("event.json", b"{}").offset == 0
    handoff.close()


def test_files_outside_their_memory_file_or_too_large_are_refused():
    fd = os.memfd_create("t", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, MIB)
    with pytest.raises(HandOffError, match="do not lie"):
        HandOff.sealed(fd, HandedFiles(MIB, [HandedFile("a", MIB - 10, 20)]))
    fd = os.memfd_create("t", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, 16 * MIB)
    big = HandOff.sealed(fd, HandedFiles(16 * MIB, [HandedFile("a", 0, 16 * MIB)]))
    device = make_device(True)
    with pytest.raises(HandOffError, match="do not fit"):
        device.hand_in(big)
    big.close()


def _pass(device: EtlDevice, name: str, region_file) -> dict:
    return device.answer({"op": "pass", "name": name, "source": {
        "region": "host", "offset": region_file.offset, "size": region_file.size}}, None)


def test_a_handed_file_passed_on_goes_in_its_own_memory_file_and_none_is_lent_for_it():
    first, second = make_device(True), make_device(True)
    data = os.urandom(MIB + 7)
    first.lend_guest_region()
    write_guest_file(first, "out.bin", data)
    handoff, _ = first.take_guest_files()
    second.lend_guest_region()
    second.hand_in(handoff)
    given = second.host.files["out.bin"]
    assert _pass(second, "relayed.bin", given)["file"] == {
        "name": "relayed.bin", "region": "host", "offset": given.offset, "size": given.size}
    assert second.answer({"op": "stat", "name": "relayed.bin"}, None)["file"]["region"] == "host"
    second.guest.memory.view[:5] = b"stray"  # outside any file: the region's own memory
    second.give_back()
    passed, unused = second.take_guest_files(handoff)
    assert os.fstat(passed.fd).st_ino == os.fstat(handoff.fd).st_ino  # the same memory file
    assert [(f.name, f.offset, f.size) for f in passed.files.files] == [
        ("relayed.bin", given.offset, len(data))]
    assert passed.copied_bytes == 0
    # No allocation in the guest region: the lent file was never shown there, nothing to zero.
    assert unused is None  # none was made ahead, and none was made
    assert bytes(second.guest.memory.view[:5]) == b"stray"
    third = make_device(True)
    third.hand_in(passed)
    f = third.host.files["relayed.bin"]
    assert bytes(third.host.bytes_of(f.offset, f.size)) == data
    for held in (handoff, passed):
        held.close()


def test_a_lent_file_comes_back_clean_unless_the_stage_allocated_in_it():
    first = make_device(True)
    first.lend_guest_region()
    write_guest_file(first, "out.bin", b"handed")
    handoff, _ = first.take_guest_files()
    for allocates in (False, True):
        second = make_device(True)
        ahead = os.memfd_create("spare", os.MFD_ALLOW_SEALING)
        os.ftruncate(ahead, second.guest.size)
        second.lend_guest_region(ahead)
        second.hand_in(handoff)
        if allocates:  # an upload's unnamed file: the lent file is shown, and written
            write_guest_file(second, None, b"posted")
        _pass(second, "out.bin", second.host.files["out.bin"])
        second.give_back()
        passed, unused = second.take_guest_files(handoff)
        assert unused is not None and unused.fd == ahead and unused.shown == allocates
        assert os.pread(ahead, 6, 0) == (b"posted" if allocates else bytes(6))
        assert bytes(second.guest.memory.view[:6]) == bytes(6)  # its own memory again
        passed.close()
        os.close(ahead)
    handoff.close()


def test_a_passed_file_beside_the_stages_own_is_copied_and_counted():
    first, second = make_device(True), make_device(True)
    data = os.urandom(MIB)
    first.lend_guest_region()
    write_guest_file(first, "out.bin", data)
    handoff, _ = first.take_guest_files()
    second.lend_guest_region()
    second.hand_in(handoff)
    _pass(second, "out.bin", second.host.files["out.bin"])
    write_guest_file(second, "note.txt", b"mine")
    event = second.put_host_file("event.json", b'{"n": 1}')  # not a handed file: copied now
    assert _pass(second, "event.json", event)["file"]["region"] == "guest"
    assert second.account.copied_bytes == len(b'{"n": 1}') + event.size
    second.give_back()
    both, unused = second.take_guest_files(handoff)
    assert unused is None and both.copied_bytes == len(data)
    third = make_device(True)
    third.hand_in(both)
    got = {name: bytes(third.host.bytes_of(f.offset, f.size))
           for name, f in third.host.files.items()}
    assert got == {"out.bin": data, "note.txt": b"mine", "event.json": b'{"n": 1}'}
    assert _pass(third, "x", third.host.files["out.bin"])["file"]["region"] == "host"
    bad = third.answer({"op": "pass", "name": "x", "source": {
        "region": "guest", "offset": 0, "size": 1}}, None)
    assert bad["error"]["kind"] == "invalid"
    for held in (handoff, both):
        held.close()
