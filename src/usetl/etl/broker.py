"""The egress broker: one process per host, outside every jail, that owns the URL policies.

gVisor's gofer is the model. A jailed monitor has no network; its ETL requests and the
connects of its guest's sockets come here over a Unix socket (egress.BrokerEgress). The
controller (the platform, or whoever forks clones) attaches each instance with the
policy it is to have, so a monitor cannot choose its own; then

    get/post: the region's memory file comes with the request (SCM_RIGHTS); the body
              streams straight into it (an upload is read from it);
    connect:  the policy is checked, the connection begun, and the socket passed back;

and every request is counted in the instance's IoAccount, which the controller takes
after each invocation to bill it (what the monitor says it spent is not believed). So
that an invocation that sent nothing here costs no round trip to learn it, each instance
also has a counter in a memory file the controller maps (its activity slot): the broker
adds to it when a request arrives and when the account grows, before it answers, and
the controller asks for the account only when the counter moved since its last take.
The control requests attach and forget are told, not asked: the broker sends no answer
(TOLD), so their round trips are off a fork's and a close's paths.

    python -m usetl.etl.broker FD ACTIVITY_FD   # the control socket, the counters' file

A memory file is accepted only if it is sealed against shrinking and growing (so that a
monitor cannot make the broker fault past its end) and the range lies inside it; the
broker maps each file once per connection.
"""

from __future__ import annotations

import logging
import mmap
import os
import socket
import stat
import subprocess
import sys
import threading
import uuid
from collections import OrderedDict

from usetl import hostmm
from usetl.abi import etl as wire

from .accounting import IoAccount
from .egress import (
    ConnectFailed,
    EgressPolicy,
    LocalEgress,
    Span,
    connect_checked,
    error_to_dict,
    recv_message,
    send_message,
    transfer_to_dict,
)
from .errors import EtlError
from .http import Transfer
from .policy import UrlPolicy

log = logging.getLogger(__name__)
# Memory files mapped per instance: its two regions, and a transfer's own file or two (a
# threaded guest's, an upload of a /tmp file) that are new each time, so the oldest go.
MAX_MAPS = 4
# Activity counters (u64 each) in the controller's memory file: instances attached at once
# beyond this are billed with a round trip each time.
ACTIVITY_SLOTS = 1 << 16
# Connections an instance may have at once (the one it was attached with and the channels it
# asked for), each served by a thread here: its guest threads' requests run side by side.
MAX_CHANNELS = 16
# Control requests carried out with no answer, off the controller's path (a fork's, a
# clone's close): a refused one is logged here, and an attach's socket closed with it.
TOLD = frozenset({"attach", "forget"})


class BadRequest(Exception):
    """A request from a monitor the broker will not carry out (answered "invalid")."""


class InstanceConnection:
    """The broker's side of one instance: its policy, its account, its mapped files."""

    def __init__(self, sock: socket.socket, policy: EgressPolicy,
                 activity: memoryview | None = None, slot: int | None = None,
                 root: InstanceConnection | None = None):
        """`root`: the instance's first connection, for a channel it asked for (which bills
        to the root's account and counts toward its MAX_CHANNELS)."""
        self.sock = sock
        self.policy = policy
        self.url_policy = UrlPolicy(policy.allow, policy.allow_private)
        self.egress = LocalEgress(self.url_policy, policy.timeout)
        self.account = IoAccount()
        self.lock = threading.Lock()  # the account is taken by the control thread
        self.maps: OrderedDict[tuple[int, int, bool], mmap.mmap] = OrderedDict()
        self.activity, self.slot = activity, slot
        self.root = root or self
        self.channels = 1  # the root's: its connections open now, itself included

    def _active(self) -> None:
        """Move this instance's activity counter (under the root's lock: one writer at once)."""
        root = self.root
        if root.activity is not None and root.slot is not None:
            with root.lock:
                root.activity[root.slot] += 1

    def serve(self) -> None:
        try:
            while True:
                try:
                    message, fds = recv_message(self.sock)
                except (EOFError, OSError):
                    return
                self._active()
                try:
                    reply, out = self.answer(message, fds)
                finally:
                    for fd in fds:
                        os.close(fd)
                try:
                    send_message(self.sock, reply, out)
                except OSError:
                    return
                finally:
                    for fd in out:
                        os.close(fd)
        finally:
            self.close()
            with self.root.lock:
                self.root.channels -= 1

    def answer(self, message: dict, fds: list[int]) -> tuple[dict, tuple[int, ...]]:
        try:
            op = message.get("op")
            if op == "channel":
                return self._channel()
            if op == "connect":
                return self._connect(message)
            if op == wire.GET:
                return self._bill(lambda: self.egress.get(
                    _str(message, "url"), self._span(message, "dest", fds, 0, True),
                    _deadline(message))), ()
            if op == wire.POST:
                return self._bill(lambda: self.egress.post(
                    _str(message, "url"), self._span(message, "source", fds, 0, False),
                    self._span(message, "dest", fds, 1, True), _str(message, "content_type"),
                    _deadline(message))), ()
            raise BadRequest(f"unknown request {op!r}")
        except EtlError as e:
            return {"error": error_to_dict(e)}, ()
        except (BadRequest, KeyError, TypeError, ValueError) as e:
            return {"error": error_to_dict(EtlError(None, f"bad request: {e}",
                                                    wire.INVALID))}, ()

    def _channel(self) -> tuple[dict, tuple[int, ...]]:
        """Another connection for the same instance, served by a thread of its own."""
        root = self.root
        with root.lock:
            if root.channels >= MAX_CHANNELS:
                raise BadRequest(f"an instance has at most {MAX_CHANNELS} connections")
            root.channels += 1
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        channel = InstanceConnection(mine, root.policy, root=root)
        threading.Thread(target=channel.serve, daemon=True, name="egress-channel").start()
        return {"ok": True}, (theirs.detach(),)

    def _bill(self, run) -> dict:
        try:
            transfer: Transfer = run()
        except EtlError as e:
            if e.account is not None and e.kind != wire.DENIED:  # refused: nothing was sent
                self._add(e.account)
            raise
        self._add(transfer.account)
        return {"transfer": transfer_to_dict(transfer)}

    def _add(self, account: IoAccount) -> None:
        with self.root.lock:
            self.root.account.add(account)
        self._active()

    def take_account(self) -> IoAccount:
        with self.lock:
            account, self.account = self.account, IoAccount()
        return account

    def _connect(self, message: dict) -> tuple[dict, tuple[int, ...]]:
        family = message.get("family")
        address = message.get("address")
        if family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, list) \
                or len(address) != (2 if family == socket.AF_INET else 4):
            raise BadRequest("connect needs an AF_INET or AF_INET6 address")
        self._add(IoAccount(requests=1))
        timeout, deadline = message.get("timeout"), _deadline(message)
        if timeout is not None and (not isinstance(timeout, int | float) or timeout < 0):
            raise BadRequest("timeout must be a number of seconds >= 0 or null")
        timeout = self.egress.timeout if timeout is None else min(timeout, self.egress.timeout)
        try:
            sock = connect_checked(self.url_policy, family, tuple(address), timeout, deadline)
        except ConnectFailed as e:
            return {"errno": e.errno}, ()
        fd = os.dup(sock.fileno())
        sock.close()
        return {}, (fd,)

    def _span(self, message: dict, key: str, fds: list[int], index: int,
              writable: bool) -> Span:
        where = message.get(key)
        if not isinstance(where, dict) or index >= len(fds):
            raise BadRequest(f"{key} needs a range and a memory file")
        offset, size = where.get("offset"), where.get("size")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                   for v in (offset, size)):
            raise BadRequest(f"{key}'s offset and size must be integers >= 0")
        mapping = self._map(fds[index], writable)
        if offset + size > len(mapping):
            raise BadRequest(f"{key} is outside its memory file")
        return Span(fds[index], offset, memoryview(mapping)[offset : offset + size])

    def _map(self, fd: int, writable: bool) -> mmap.mmap:
        """The file mapped here (once per connection). An upload's source is mapped through a
        read-only descriptor of its own, so the mapping does not keep its owner from sealing
        the file against writes later (a pipeline stage's files are handed on so)."""
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not hostmm.has_fixed_size(fd):
            raise BadRequest("a memory file must be a memfd sealed against resizing")
        key = (st.st_dev, st.st_ino, writable)
        mapping = self.maps.get(key)
        if mapping is None:
            if not st.st_size:
                raise BadRequest("an empty memory file")
            if writable:
                mapping = mmap.mmap(fd, st.st_size)
            else:
                read_only = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    mapping = mmap.mmap(read_only, st.st_size, access=mmap.ACCESS_READ)
                finally:
                    os.close(read_only)
            self.maps[key] = mapping
            while len(self.maps) > MAX_MAPS:
                _unmap(self.maps.popitem(last=False)[1])
        self.maps.move_to_end(key)
        return mapping

    def close(self) -> None:
        self.egress.close()
        self.sock.close()
        for mapping in self.maps.values():
            _unmap(mapping)
        self.maps.clear()


class BrokerServer:
    """The broker process: control requests from the controller, a thread per instance."""

    def __init__(self, control: socket.socket, activity: memoryview | None = None):
        self.control = control
        self.activity = activity  # the controller's activity counters, one u64 a slot
        self.instances: dict[str, InstanceConnection] = {}

    def serve(self) -> None:
        while True:
            try:
                message, fds = recv_message(self.control)
            except (EOFError, OSError):
                return  # the controller is gone: so is every instance's broker
            try:
                reply = self.answer(message, fds)
            except (KeyError, TypeError, ValueError) as e:
                for fd in fds:
                    os.close(fd)
                reply = {"error": f"bad control request: {e}"}
            if message.get("op") not in TOLD:
                send_message(self.control, reply)
            elif "error" in reply:  # no one waits to hear it: an attached socket is closed
                log.warning("control request %s refused: %s", message.get("op"), reply["error"])

    def answer(self, message: dict, fds: list[int]) -> dict:
        op = message["op"]
        if op == "attach":
            if len(fds) != 1:
                raise ValueError("attach needs one socket")
            policy = EgressPolicy.from_dict(message["policy"])
            slot = message.get("slot")
            if slot is not None and not (isinstance(slot, int) and 0 <= slot < ACTIVITY_SLOTS):
                raise ValueError(f"bad activity slot {slot!r}")
            instance = InstanceConnection(socket.socket(fileno=fds[0]), policy, self.activity,
                                          slot)
            self.instances[message["instance"]] = instance
            threading.Thread(target=instance.serve, daemon=True,
                             name=f"egress-{message['instance'][:8]}").start()
            return {"ok": True}
        for fd in fds:
            os.close(fd)
        if op == "account":
            instance = self.instances.get(message["instance"])
            if instance is None:
                return {"error": f"no instance {message['instance']!r}"}
            return {"account": instance.take_account().as_dict()}
        if op == "forget":
            self.instances.pop(message["instance"], None)
            return {"ok": True}
        raise ValueError(f"unknown control request {op!r}")


def _unmap(mapping: mmap.mmap) -> None:
    try:
        mapping.close()
    except BufferError:  # a view is still alive; the mapping goes with its last one
        pass


def _str(message: dict, key: str) -> str:
    value = message.get(key)
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string")
    return value


def _deadline(message: dict) -> float | None:
    value = message.get("deadline")
    if value is not None and not isinstance(value, int | float):
        raise BadRequest("deadline must be a number (time.monotonic()) or null")
    return value


class BrokerError(EtlError):
    """The broker could not be started or does not answer."""

    def __init__(self, reason: str):
        super().__init__(None, reason, wire.CONNECTION)


# How long a broker that no template or clone uses any more keeps running: templates that come
# and go one after another (a snapshot restored per call) would otherwise start a broker, a
# Python interpreter, for each (300-450 ms of a 700 ms restore, and 150 ms more to stop it).
IDLE_STOP_S = 2.0


class Broker:
    """The controller's handle on a broker process: started on first use, restarted if it
    died (the instances attached to the dead one then get "the egress broker went away"
    for each request), stopped IDLE_STOP_S after its last user is released (unless another
    came meanwhile), by close(), or with the controller (its control socket)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.control: socket.socket | None = None
        self.lock = threading.Lock()
        self.restarts = 0
        self.users = 0  # templates and clones that may send it requests
        self.releases = 0  # how often users fell to 0: a stop timer stops only its own
        # The running broker's activity counters (see the module's docstring), the slot of
        # each attached instance and the count its account was last taken at.
        self.activity: memoryview | None = None
        self.slots: dict[str, int] = {}
        self.taken_at: dict[str, int] = {}
        self.free_slots: list[int] = []

    def hold(self) -> None:
        with self.lock:
            self.users += 1

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users <= 0:
                self.users = 0
                self.releases += 1
                timer = threading.Timer(IDLE_STOP_S, self._stop_if_unused, (self.releases,))
                timer.daemon = True
                timer.start()

    def _stop_if_unused(self, release: int) -> None:
        with self.lock:
            if self.users == 0 and self.releases == release:
                self._stop()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _ensure(self) -> socket.socket:
        """The control socket of a running broker (called with the lock held)."""
        if self.control is not None and self.alive:
            return self.control
        if self.process is not None:
            log.warning("the egress broker (pid %d) died with status %s; starting another",
                        self.process.pid, self.process.poll())
            self.restarts += 1
            self._stop()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": src,
               "USETL_LOG": os.environ.get("USETL_LOG", "WARNING")}
        counters = os.memfd_create("usetl-egress-activity", os.MFD_CLOEXEC)
        try:
            os.ftruncate(counters, ACTIVITY_SLOTS * 8)
            activity = memoryview(mmap.mmap(counters, ACTIVITY_SLOTS * 8)).cast("Q")
            self.process = subprocess.Popen(
                [sys.executable, "-P", "-m", "usetl.etl.broker", str(theirs.fileno()),
                 str(counters)], pass_fds=(theirs.fileno(), counters), env=env,
                stdin=subprocess.DEVNULL)
        except OSError as e:
            mine.close()
            raise BrokerError(f"cannot start the egress broker: {e}") from None
        finally:
            theirs.close()
            os.close(counters)
        self.control = mine
        self.activity, self.free_slots = activity, list(range(ACTIVITY_SLOTS - 1, -1, -1))
        return mine

    def _call(self, message: dict, fds: tuple[int, ...] = ()) -> dict:
        control = self._ensure()
        try:
            send_message(control, message, fds)
            reply, extra = recv_message(control)
        except (OSError, EOFError) as e:
            raise BrokerError(f"the egress broker does not answer: {e}") from None
        for fd in extra:
            os.close(fd)
        if "error" in reply:
            raise BrokerError(f"the egress broker refused {message['op']}: {reply['error']}")
        return reply

    def _tell(self, message: dict, fds: tuple[int, ...] = ()) -> None:
        """A control request of TOLD: sent, not answered, so that the broker carries it out
        while the caller goes on (it takes control requests in order: a later one finds it
        done)."""
        try:
            send_message(self._ensure(), message, fds)
        except OSError as e:
            raise BrokerError(f"the egress broker does not answer: {e}") from None

    def attach(self, policy: EgressPolicy) -> tuple[socket.socket, str]:
        """A new instance's connection (pass it to the instance) and its id here."""
        instance = uuid.uuid4().hex
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with self.lock:
                self._ensure()
                slot = self.free_slots.pop() if self.free_slots else None
                try:
                    self._tell({"op": "attach", "instance": instance, "slot": slot,
                                "policy": policy.as_dict()}, (theirs.fileno(),))
                except BrokerError:
                    if slot is not None:
                        self.free_slots.append(slot)
                    raise
                if slot is not None:
                    self.slots[instance] = slot
                    self.taken_at[instance] = self.activity[slot]
        except BrokerError:
            mine.close()
            raise
        finally:
            theirs.close()
        return mine, instance

    def take_account(self, instance: str) -> IoAccount:
        """What the instance's requests cost since the last take (then zero again): no
        round trip when its activity counter has not moved since."""
        with self.lock:
            if not self._moved(instance):
                return IoAccount()
            slot = self.slots.get(instance)
            if slot is not None and self.alive:
                self.taken_at[instance] = self.activity[slot]
            return IoAccount(**self._call({"op": "account", "instance": instance})["account"])

    def account_moved(self, instance: str) -> bool:
        """Whether take_account() would ask the broker (a round trip) now."""
        with self.lock:
            return self._moved(instance)

    def _moved(self, instance: str) -> bool:
        slot = self.slots.get(instance)
        return slot is None or not self.alive or self.activity[slot] != self.taken_at[instance]

    def forget(self, instance: str) -> None:
        with self.lock:
            slot = self.slots.pop(instance, None)
            self.taken_at.pop(instance, None)
            if self.alive:
                try:
                    self._tell({"op": "forget", "instance": instance})
                except BrokerError:
                    pass
                if slot is not None:
                    self.free_slots.append(slot)

    def _stop(self) -> None:
        if self.control is not None:
            self.control.close()  # the broker exits when its control socket closes
            self.control = None
        if self.process is not None:
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        # Its counters went with it: an instance attached to it is asked (and refused).
        self.activity, self.free_slots = None, []
        self.slots.clear()
        self.taken_at.clear()

    def close(self) -> None:
        with self.lock:
            self._stop()


def main(argv: list[str]) -> None:
    logging.basicConfig(level=os.environ.get("USETL_LOG", "WARNING"), stream=sys.stderr)
    control = socket.socket(fileno=int(argv[1]))
    activity = memoryview(mmap.mmap(int(argv[2]), ACTIVITY_SLOTS * 8)).cast("Q")
    BrokerServer(control, activity).serve()


if __name__ == "__main__":
    main(sys.argv)
