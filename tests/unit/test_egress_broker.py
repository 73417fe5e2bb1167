"""The egress broker as a monitor sees it: a real broker process, a real HTTP server."""

import mmap
import os
import socket

import pytest

from usetl import hostmm
from usetl.etl import broker as broker_module
from usetl.etl.broker import MAX_MAPS, Broker
from usetl.etl.egress import BrokerEgress, ConnectFailed, EgressPolicy, Span
from usetl.etl.errors import EtlError
from waiting import wait_until


@pytest.fixture(scope="module")
def broker():
    """One broker process for the module (the last test kills it, and sees it started again)."""
    b = Broker()
    yield b
    b.close()


def memory_file(size: int, sealed: bool = True, name: str = "test") -> Span:
    if sealed:
        fd = hostmm.sealed_memfd(name, size)
    else:
        fd = os.memfd_create(name)
        os.ftruncate(fd, size)
    return Span(fd, 0, memoryview(mmap.mmap(fd, size)))


def attach(broker, http_server, allow_private=True) -> tuple[BrokerEgress, str]:
    sock, instance = broker.attach(EgressPolicy(
        (f"{http_server.base}/data/", f"tcp://127.0.0.1:{http_server.port}"), allow_private, 5.0))
    return BrokerEgress(sock), instance


def test_a_download_lands_in_the_memory_file_and_is_billed(broker, http_server):
    url = http_server.add("/data/a", b"0123456789")
    egress, instance = attach(broker, http_server)
    dest = memory_file(1 << 20)
    transfer = egress.get(url, Span(dest.fd, 100, dest.view[100:]), None)
    assert transfer.size == 10 and bytes(dest.view[100:110]) == b"0123456789"
    body = memory_file(1 << 16)
    body.view[:5] = b"hello"
    answer = egress.post(http_server.base + "/data/up", Span(body.fd, 0, body.view[:5]), dest,
                         "text/plain", None)
    assert http_server.posts[-1] == ("/data/up", "text/plain", b"hello")
    account = broker.take_account(instance)
    assert (account.requests, account.bytes_in, account.bytes_out) == (2, 10 + answer.size, 5)
    assert broker.take_account(instance).requests == 0  # taken: zero again


def test_each_take_bills_exactly_what_came_since_the_last_whether_or_not_it_asked(broker,
                                                                                 http_server):
    url = http_server.add("/data/b", b"abc")
    for _ in range(2):  # the second instance may get the first one's activity slot back
        egress, instance = attach(broker, http_server)
        assert broker.take_account(instance).requests == 0  # nothing yet: not even asked
        for _ in range(2):
            egress.get(url, memory_file(1 << 16), None)
            account = broker.take_account(instance)
            assert (account.requests, account.bytes_in) == (1, 3)
            assert broker.take_account(instance).requests == 0
        broker.forget(instance)


def test_the_broker_owns_the_policy_and_checks_every_memory_file(broker, http_server):
    http_server.add("/secret", b"no")
    egress, instance = attach(broker, http_server)
    dest = memory_file(1 << 16)
    with pytest.raises(EtlError) as denied:
        egress.get(http_server.base + "/secret", dest, None)
    assert denied.value.kind == "denied"
    # A file that could shrink under the broker (the template's is one) is refused.
    with pytest.raises(EtlError, match="sealed") as unsealed:
        egress.get(http_server.base + "/data/a", memory_file(1 << 16, sealed=False), None)
    assert unsealed.value.kind == "invalid"
    with pytest.raises(EtlError, match="outside"):
        egress.get(http_server.base + "/data/a", Span(dest.fd, 1 << 16, dest.view[:16]), None)
    assert broker.take_account(instance).requests == 0  # nothing was sent for any of them
    assert ("GET", "/secret") not in [r[:2] for r in http_server.requests]


def test_connects_come_back_connected_or_not_at_all(broker, http_server, closed_port):
    egress, instance = attach(broker, http_server)
    connected = egress.connect(socket.AF_INET, ("127.0.0.1", http_server.port), None, None)
    assert connected.getpeername() == ("127.0.0.1", http_server.port)
    connected.close()
    with pytest.raises(EtlError) as denied:
        egress.connect(socket.AF_INET, ("127.0.0.1", closed_port), None, None)
    assert denied.value.kind == "denied"
    sock, other = broker.attach(EgressPolicy((f"tcp://127.0.0.1:{closed_port}",), True, 5.0))
    with pytest.raises(ConnectFailed) as refused:
        BrokerEgress(sock).connect(socket.AF_INET, ("127.0.0.1", closed_port), None, None)
    assert refused.value.errno == 111  # ECONNREFUSED, and no socket to connect elsewhere
    assert broker.take_account(instance).requests == 2


def test_new_memory_files_do_not_pile_up_in_the_broker(broker, http_server):
    url = http_server.add("/data/a", b"x")
    egress, _ = attach(broker, http_server)
    for _ in range(3 * MAX_MAPS):
        egress.get(url, memory_file(1 << 16, name="transfer"), None)
    fds = [os.readlink(f"/proc/{broker.process.pid}/fd/{n}")
           for n in os.listdir(f"/proc/{broker.process.pid}/fd")]
    assert sum("memfd:transfer" in link for link in fds) <= MAX_MAPS


def test_requests_from_several_threads_are_carried_out_side_by_side(broker, http_server):
    """Each thread's request goes over a channel of its own: all wait at the server at once,
    and the first connection's account bills them all."""
    import threading

    gate = http_server.gate("/data/slow")
    egress, instance = attach(broker, http_server)
    sizes = []

    def fetch():
        sizes.append(egress.get(gate.url, memory_file(1 << 16), None).size)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    gate.wait_for(4, timeout=30)
    gate.open()
    for t in threads:
        t.join()
    assert sizes == [4] * 4  # the gate's body, b"open"
    assert broker.take_account(instance).requests == 4
    assert egress.channels == 4 and len(egress.idle) == 4


def test_a_broker_its_last_user_released_serves_the_next_then_stops_unused(http_server,
                                                                            monkeypatch):
    """Templates that come and go one after another (a snapshot restored per call) each hold
    and release the broker: the next finds the same process running, and it stops only once
    left unused for IDLE_STOP_S."""
    b = Broker()
    try:
        monkeypatch.setattr(broker_module, "IDLE_STOP_S", 3600.0)
        b.hold()
        attach(b, http_server)
        first = b.process.pid
        b.release()
        b.hold()
        attach(b, http_server)
        assert b.process.pid == first and b.restarts == 0
        monkeypatch.setattr(broker_module, "IDLE_STOP_S", 0.05)
        b.release()
        wait_until(lambda: not b.alive, "the unused broker to stop", timeout=30)
    finally:
        b.close()


def test_a_refused_attach_closes_its_socket_and_the_next_requests_get_their_own_answers(
        broker, http_server):
    """attach and forget are told, not answered: a refused one must leave nothing on the
    control socket for the next asked request to read as its answer."""
    url = http_server.add("/data/told", b"told")
    egress, instance = attach(broker, http_server)
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with broker.lock:
        broker._tell({"op": "attach", "instance": "bad", "slot": -1,
                      "policy": {}}, (theirs.fileno(),))
    theirs.close()
    mine.settimeout(10)
    assert mine.recv(1) == b""  # the broker closed the refused instance's socket
    broker.forget("no such instance")
    assert egress.get(url, memory_file(1 << 16), None).size == 4
    account = broker.take_account(instance)
    assert (account.requests, account.bytes_in) == (1, 4)


def test_a_dead_broker_is_a_clear_error_and_starts_again(broker, http_server):
    url = http_server.add("/data/a", b"x")
    egress, _ = attach(broker, http_server)
    broker.process.kill()
    broker.process.wait()
    with pytest.raises(EtlError, match="the egress broker went away"):
        egress.get(url, memory_file(1 << 16), None)
    again, _ = attach(broker, http_server)
    assert again.get(url, memory_file(1 << 16), None).size == 1
    assert broker.restarts == 1

