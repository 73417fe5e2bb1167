"""libos/proctree.py: the process table's routing and the control-socket framing."""

import errno

import pytest

from usetl.libos.errors import SyscallError
from usetl.libos.proctree import (
    CAPACITY,
    FRAME,
    Exited,
    MessageReader,
    ProcessTable,
    Ready,
    Signal,
    TreeProtocolError,
    encode,
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
    assert got == [Ready(), Signal(5, 10, 1, 1000), Exited(7 << 8, b"x" * 100)]
    with pytest.raises(TreeProtocolError):
        reader.feed(FRAME.pack(3) + b"bad")
    with pytest.raises(TreeProtocolError):
        MessageReader().feed(encode(Signal(to=5, signo=10, sender=1, uid=1000))[:-1] + b"\xc1")
