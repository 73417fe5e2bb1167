"""A mounted host directory shows only what cannot block the monitor; the agent
channel takes only whole protocol replies."""

import errno
import os

import pytest

from usetl import abi
from usetl.libos.devices import AgentChannel
from usetl.libos.errors import SyscallError
from usetl.libos.hostfs import HostDirFS


def test_a_file_replaced_by_a_fifo_after_its_lookup_is_eacces_without_blocking(tmp_path):
    (tmp_path / "code.py").write_text("x = 1\n")
    node = HostDirFS(str(tmp_path)).walk(["code.py"])
    assert node is not None
    os.remove(tmp_path / "code.py")
    os.mkfifo(tmp_path / "code.py")  # no writer: a blocking open would wait forever
    with pytest.raises(SyscallError) as e:
        node.read_at(0, 10)
    assert e.value.errno == errno.EACCES


def test_reads_past_the_largest_offset_are_errnos(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    node = HostDirFS(str(tmp_path)).walk(["f"])
    assert node.read_at(1 << 62, 16) == b""
    with pytest.raises(SyscallError) as e:
        node.read_at(1 << 63, 16)
    assert e.value.errno == errno.EINVAL


def test_fifos_are_not_in_a_listing_or_a_lookup(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "file").write_text("")
    fs = HostDirFS(str(tmp_path))
    assert fs.walk(["fifo"]) is None
    assert [name for name, _ in fs.walk([]).children()] == ["file"]


def _message(payload: bytes) -> bytes:
    return len(payload).to_bytes(8, "little") + payload


def test_a_whole_message_is_taken_and_nothing_is_none():
    channel = AgentChannel()
    assert channel.take_reply() is None
    channel.outbox += _message(b'{"value": 3}')
    assert channel.take_reply() == b'{"value": 3}'
    assert channel.take_reply() is None


@pytest.mark.parametrize("raw", [
    b"\x01\x02", _message(b"{}") + b"trailing", b"\xff" * 8 + b"{}", _message(b"{}")[:-1],
])
def test_garbage_is_a_protocol_error_and_the_channel_is_emptied(raw):
    channel = AgentChannel()
    channel.outbox += raw
    with pytest.raises(abi.ProtocolError):
        channel.take_reply()
    assert not channel.outbox
