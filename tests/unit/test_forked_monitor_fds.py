"""A forked monitor's fds: what it inherits and closes must not close what it opens later."""

import gc
import os
import socket

from usetl.libos.children import close_all_but


def in_forked_copy(body) -> int:
    """body() in a forked copy of this process: its exit status (0: it returned True)."""
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if body() else 1)
        finally:
            os._exit(2)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_inherited_objects_finalized_after_close_all_but_close_nothing_opened_since():
    # The copy holds objects of its parent's heap that own fds: garbage (cycles holding
    # sockets) and objects it drops. Once close_all_but has closed their fds, finalizing
    # them closes their numbers again: a pipe opened meanwhile must survive it.
    def body() -> bool:
        gc.disable()  # the garbage waits for a collection after the fork, as it may
        donor = socket.socket()
        dropped = []
        for fd in range(3, 19):
            os.dup2(donor.fileno(), fd)  # low numbers, which the copy's next files reuse
            if fd % 2:
                cycle: list = [socket.socket(fileno=fd)]
                cycle.append(cycle)
            else:
                dropped.append(socket.socket(fileno=fd))
        del cycle
        close_all_but(set())
        r, w = os.pipe()
        dropped.clear()
        gc.collect()
        os.write(w, b"still open")
        return os.read(r, 64) == b"still open"

    assert in_forked_copy(body) == 0


def test_a_copy_holds_no_pipe_end_but_those_it_keeps():
    # The copy inherited the writer of `r`: once it has closed all but `hold`, the
    # parent's reader sees the pipe's end while the copy still runs.
    r, w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            close_all_but({hold_r})
            os.read(hold_r, 1)  # until the parent has looked
        finally:
            os._exit(0)
    os.close(w)
    os.close(hold_r)
    try:
        assert os.read(r, 1) == b""
    finally:
        os.close(hold_w)
        os.close(r)
        os.waitpid(pid, 0)
