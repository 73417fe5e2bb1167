"""The controller/clone Channel: framing, fds, and messages read ahead of their turn."""

import asyncio
import os
import struct

import pytest

from usetl.hyperfork.protocol import (
    MAX_MESSAGE,
    RECV_AHEAD,
    Channel,
    ChannelClosed,
    Done,
    Forked,
    MonitorRan,
    ProtocolError,
)


@pytest.fixture
def ends():
    a, b = Channel.pair()
    yield a, b
    a.close()
    b.close()


def test_messages_sent_back_to_back_come_out_one_at_a_time_in_order(ends):
    a, b = ends
    for pid in range(3):
        b.send(Forked(pid))
    b.send(Done())
    assert [a.recv()[0] for _ in range(4)] == [Forked(0), Forked(1), Forked(2), Done()]


def test_a_message_larger_than_one_read_arrives_whole(ends):
    a, b = ends
    big = "x" * (3 * RECV_AHEAD)
    b.send(MonitorRan(big))
    b.send(Done())
    assert a.recv()[0] == MonitorRan(big)
    assert a.recv()[0] == Done()


def test_fds_come_with_their_message(ends):
    a, b = ends
    r, w = os.pipe()
    try:
        b.send(Forked(7), fds=(w,))
        msg, fds = a.recv()
        assert msg == Forked(7) and len(fds) == 1
        os.write(fds[0], b"!")
        os.close(fds[0])
        assert os.read(r, 1) == b"!"
    finally:
        os.close(r)
        os.close(w)


def test_a_peer_that_goes_away_or_lies_about_a_length_is_refused(ends):
    a, b = ends
    b.sock.sendall(struct.pack("<I", MAX_MESSAGE + 1))
    with pytest.raises(ProtocolError, match="over the"):
        a.recv()
    b.sock.sendall(struct.pack("<I", 10) + b"abc")
    b.sock.close()
    with pytest.raises(ChannelClosed, match="mid-message"):
        a.recv()


@pytest.fixture(params=["asyncio", "uvloop"])
def run_on_loop(request):
    """Run a coroutine on asyncio's loop or uvloop's (the API's server runs on uvloop)."""
    if request.param == "asyncio":
        return asyncio.run
    uvloop = pytest.importorskip("uvloop")
    return uvloop.run


def test_messages_awaited_on_a_loop_come_in_order_and_the_socket_stays_blocking(
        ends, run_on_loop):
    a, b = ends
    big = "x" * (3 * RECV_AHEAD)

    async def read() -> list:
        got = []
        for _ in range(4):
            got.append(await a.recv_async())
        return got

    async def main() -> list:
        reading = asyncio.ensure_future(read())
        await asyncio.sleep(0)  # the reader waits on an empty socket first
        b.send(Forked(1), then=Forked(2))
        b.send(MonitorRan(big))
        b.send(Done())
        return await reading

    assert run_on_loop(main()) == [Forked(1), Forked(2), MonitorRan(big), Done()]
    assert os.get_blocking(a.fileno())  # uvloop's reader sets O_NONBLOCK on the descriptor
    b.send(Forked(3))
    assert a.recv()[0] == Forked(3)  # a thread's read after the loop's


def test_a_peer_that_goes_away_mid_message_is_refused_on_a_loop(ends, run_on_loop):
    a, b = ends
    b.sock.sendall(struct.pack("<I", 10) + b"abc")
    b.sock.close()
    with pytest.raises(ChannelClosed, match="mid-message"):
        run_on_loop(a.recv_async())
