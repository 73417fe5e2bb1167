"""Pipeline hand-offs over real memfds: mapped in place, or copied and counted, and sealed."""

import os

import pytest

from usetl.etl.policy import UrlPolicy
from usetl.libos.etl_device import HOST_REGION_GPA, EtlDevice
from usetl.libos.handoff import HandedFile, HandedFiles, HandOff, HandOffError
from usetl.vm import GuestMemory

MIB = 1 << 20


def make_device(remappable: bool) -> EtlDevice:
    host = GuestMemory("host", HOST_REGION_GPA, 8 * MIB)
    guest = GuestMemory("guest", HOST_REGION_GPA + 8 * MIB, 4 * MIB)
    return EtlDevice(host, guest, UrlPolicy(), timeout=1.0, remappable=remappable)


def write_guest_file(device: EtlDevice, name: str, data: bytes) -> None:
    f = device.guest.allocate(name, len(data))
    device.guest.memory.view[f.offset : f.offset + f.size] = data


@pytest.mark.parametrize("remappable", [True, False])
def test_a_stage_file_reaches_the_next_host_region_copied_only_where_it_must(remappable):
    first, second = make_device(remappable), make_device(remappable)
    data = os.urandom(3 * MIB + 5)
    first.lend_guest_region()
    write_guest_file(first, "out.bin", data)
    handoff = first.take_guest_files()
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
