"""libos/proctree.py: the process table's routing and the control-socket framing."""

import errno
import os
import socket

import pytest

from usetl.libos.errors import SyscallError
from usetl.libos.proctree import (
    CAPACITY,
    FRAME,
    Connect,
    Exited,
    MessageReader,
    ProcessTable,
    Ready,
    Signal,
    TreeProtocolError,
    encode,
    send_message,
)


def test_pids_are_unique_and_routes_go_down_toward_the_target_else_up():
    table = ProcessTable(next_pid=10, root=1)
    a, b = table.new_pid(), table.new_pid()
    assert (a, b) == (10, 11)
    table.add(a, 1)
    table.add(b, 1)
    grandchild = table.new_pid()
    table.add(grandchild, a)
    assert table.next_hop(1, grandchild) == a  # the root: down to the child on the way
    assert table.next_hop(a, grandchild) == grandchild
    assert table.next_hop(b, grandchild) is None  # a sibling's: up to its parent
    assert table.next_hop(grandchild, 1) is None
    assert table.find(grandchild).group == 1 and table.find(grandchild).session == 1
    table.forget(a)  # with everything below it
    assert table.find(a) is None and table.find(grandchild) is None
    assert table.find(b) is not None


def test_a_full_table_refuses_a_new_process():
    table = ProcessTable(next_pid=2, root=1)
    for _ in range(CAPACITY - 1):
        table.add(table.new_pid(), 1)
    with pytest.raises(SyscallError) as e:
        table.add(table.new_pid(), 1)
    assert e.value.errno == errno.EAGAIN


def test_messages_are_read_as_they_arrive_and_anything_else_is_refused():
    reader = MessageReader()
    data = encode(Ready()) + encode(Signal(to=5, signo=10, sender=1, uid=1000)) + \
        encode(Exited(status=7 << 8, changes=b"x" * 100))
    got = []
    for i in range(0, len(data), 7):  # in pieces, as a socket gives them
        got += reader.feed(data[i:i + 7])
    assert got == [(Ready(), None), (Signal(5, 10, 1, 1000), None),
                   (Exited(7 << 8, b"x" * 100), None)]
    with pytest.raises(TreeProtocolError):
        reader.feed(FRAME.pack(3) + b"bad")
    with pytest.raises(TreeProtocolError):
        MessageReader().feed(encode(Signal(to=5, signo=10, sender=1, uid=1000))[:-1] + b"\xc1")


def test_an_af_unix_name_is_held_by_one_process_of_the_tree_until_it_lets_go_or_is_gone():
    table = ProcessTable(next_pid=10, root=1)
    child = table.new_pid()
    table.add(child, 1)
    assert table.claim_name(b"/tmp/s", child) and table.claim_name(b"/tmp/s", child)
    assert not table.claim_name(b"/tmp/s", 1)  # EADDRINUSE in the root
    assert table.claim_name(b"\0abstract", 1)
    assert table.name_holder(b"/tmp/s") == child and table.name_holder(b"/tmp/t") is None
    table.release_name(b"/tmp/s", 1)  # not the root's to let go of
    assert table.name_holder(b"/tmp/s") == child
    table.forget(child)  # waited for: its names go with it
    assert table.name_holder(b"/tmp/s") is None
    assert table.name_holder(b"\0abstract") == 1
    table.release_name(b"\0abstract", 1)
    assert table.name_holder(b"\0abstract") is None


def received(sock: socket.socket) -> tuple[bytes, list[int]]:
    data, fds, _, _ = socket.recv_fds(sock, 1 << 16, 8)
    return data, fds


def test_a_connect_carries_its_socket_and_one_without_is_refused():
    control, theirs = socket.socketpair()
    a, b = socket.socketpair()
    connect = Connect(to=5, name=b"/tmp/s", sender=7, peer=b"")
    assert send_message(control, connect, passed=b)
    b.close()
    [(message, passed)] = MessageReader().feed(*received(theirs))
    assert message == connect and passed.family == socket.AF_UNIX
    passed.sendall(b"hi")
    assert a.recv(2) == b"hi"
    with pytest.raises(TreeProtocolError):  # its socket missing
        MessageReader().feed(encode(connect))
    r, w = os.pipe()
    socket.send_fds(control, [encode(connect)], [r])
    with pytest.raises(TreeProtocolError):  # what it carries is no socket
        MessageReader().feed(*received(theirs))
    for s in (control, theirs, a, passed):
        s.close()
    os.close(r)
    os.close(w)


def test_a_lingering_process_waited_for_stays_a_hop_to_its_orphans_until_they_end():
    table = ProcessTable(next_pid=10, root=1)
    shell = table.new_pid()
    table.add(shell, 1)
    orphan = table.new_pid()
    table.add(orphan, shell)
    table.lingers(shell, True)  # it ended, its child runs on
    assert table.find(shell).ended
    table.forget(shell)  # its parent waited for it
    assert table.find(shell) is None and shell not in {p.pid for p in table.all()}
    assert table.find(orphan) is not None and table.next_hop(1, orphan) == shell
    table.forget(orphan)  # reaped by the lingering shell
    table.lingers(shell, False)  # its last orphan ended: gone for good
    assert table.next_hop(1, shell) is None
    quick = table.new_pid()
    table.add(quick, 1)
    table.lingers(quick, True)
    table.lingers(quick, False)  # its orphans ended before it was waited for
    assert table.find(quick).ended
    table.forget(quick)
    assert table.find(quick) is None and table.next_hop(1, quick) is None
