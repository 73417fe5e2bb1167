"""The typed call protocol between a controller and its template and clone processes.

Every message is a msgspec Struct, tagged by its class name, sent as msgpack
behind a 4-byte length on a Unix stream socket; file descriptors (a new
clone's socket) travel alongside with SCM_RIGHTS. A receiver decodes against
the union of the messages it accepts, so kinds, field types and sizes are
checked on receipt: anything else is a `ProtocolError`, and the controller
ends that instance. A clone is the process closest to untrusted guest code,
so nothing it sends is unpickled or executed.

    controller -> template : StartTemplate (first), then
                             Fork | Info | InspectTemplate | ExportSnapshot | Close
    controller -> loader   : StartLoader (first), then LoadSnapshot | Close
    loader -> controller   : Done | Forked (a template process, which sends
                             TemplateReady on the socket passed with LoadSnapshot) | Failed
    loader -> its spare    : LoadInSpare
    template -> controller : TemplateReady | Forked | Digests | SnapshotExport | Done |
                             Failed
    controller -> clone    : Invoke | Call | Rollback | InspectClone | ReportWorkingSet |
                             RunInMonitor (a clone ends with a SIGKILL: it has nothing
                             to tidy up, so no Close is asked of it)
    clone -> controller    : CloneReady | TemplateReady (a function template) |
                             Invoked | RolledBack | Inspected | WorkingSet | MonitorRan |
                             Done | Failed

A new clone's first bytes on its socket are usetl.jail.handshake's (its pid, told by
the kernel), before any message.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from typing import Any, TypeVar

import msgspec

from usetl.errors import UsetlError
from usetl.etl.egress import EgressPolicy
from usetl.invocation import ErrorInfo, InvocationResult, IoUsage
from usetl.jail import JailSpec
from usetl.libos.handoff import HandedFiles
from usetl.usf import UsfConfig

_LENGTH = struct.Struct("<I")
MAX_FDS = 6
RECV_AHEAD = 16 << 10  # what one read takes in: a message this size or less comes whole
# Large enough for an invocation's result and captured output (16 MiB each by default).
MAX_MESSAGE = 128 << 20

M = TypeVar("M")


class HyperForkError(UsetlError):
    """A template or clone could not be made, or failed; `error` says why, as data."""

    def __init__(self, message: str, error: ErrorInfo | None = None):
        super().__init__(message)
        self.error = error


class ChannelClosed(HyperForkError):
    """The process at the other end has gone (it exited or was killed)."""


class ProtocolError(HyperForkError):
    """The other end sent something that is not a message it may send."""


class Message(msgspec.Struct, tag=True, forbid_unknown_fields=True):
    pass


# -- controller -> template ---------------------------------------------------------


class StartTemplate(Message):
    """First message: start CPython from `image` and freeze it as a base template."""

    image: str
    config: UsfConfig


class StartLoader(Message):
    """First message: become the snapshot loader (worker.LoaderProcess)."""


class LoadSnapshot(Message):
    """To the loader: fork a template process from the snapshot saved in `directory`,
    serving on the socket passed with this message. With `jail`, the template process jails
    itself before it serves, as the function template it was saved from was, and its clones
    inherit that jail. The last `shell_cgroup_files` sockets passed are the cgroup.procs files
    of `shell_cgroup`, a cgroup for its first shell, which moves itself in (as a Fork's)."""

    directory: str
    jail: JailSpec | None = None
    shell_cgroup: str | None = None
    shell_cgroup_files: int = 0
    # A cgroup for the loader's next spare template process (LoaderProcess._make_spare), its
    # cgroup.procs files passed after the shell's.
    spare_cgroup: str | None = None
    spare_cgroup_files: int = 0


class LoadInSpare(Message):
    """Loader -> its spare template process: become the template process of `load`, whose
    jail names every path, from the snapshot at index `thawed` of those it inherited thawed.
    The socket and the shell's cgroup files come with it, as with a LoadSnapshot, then, if
    jailed as root, its jail's root as the loader made it (jail.JailRoot, whose user
    namespaces only the loader's PID namespace can make): the prepared root's mount
    namespace, with the paths and devices it has, and an idmapped tree for each of `trees`."""

    load: LoadSnapshot
    thawed: int
    root: bool = False
    owned: list[str] = []
    devices: list[tuple[str, int]] = []
    trees: list[str] = []


class LoadFunction(Message):
    """What a function template's clone runs before it freezes again."""

    request: dict[str, Any]  # the agent's load request
    mounts: dict[str, str]  # name -> host directory, shown read-only at /name
    timeout: float | None
    warmup: WarmUp | None = None


class WarmUp(Message):
    """An invocation a function template runs after its load request, before it freezes."""

    event: Any
    context: dict[str, Any]


class Fork(Message):
    """Fork a clone serving on the socket passed with this message (or a function template);
    a second socket, if passed, is the child's connection to the egress broker.

    `jail`: how a jailer template (one the controller started) jails the child; a jailed
    template's children inherit its jail instead. `working_set`: the RAM ranges an earlier
    clone's first request wrote (its WorkingSet), for this and later clones to prefetch.
    `cgroup`: a cgroup for one of the template's next shells (worker.Shell), which moves
    itself in; the last `cgroup_files` sockets passed are its cgroup.procs files.
    """

    load: LoadFunction | None = None
    warm: bool = False
    jail: JailSpec | None = None
    working_set: list[tuple[int, int]] | None = None
    cgroup: str | None = None
    cgroup_files: int = 0


class Info(Message):
    pass


class InspectTemplate(Message):
    pass


class ExportSnapshot(Message):
    """Send what a snapshot holds, the memory files with it; the controller writes them.
    `working_set`: one a clone reported since the last Fork, learnt first (as a Fork's)."""

    working_set: list[tuple[int, int]] | None = None


class Close(Message):
    pass


# -- controller -> clone ------------------------------------------------------------


class Invoke(Message):
    """One agent request (exec, load, invoke), with the time it may take."""

    request: dict[str, Any]
    timeout: float | None = None


class Call(Message):
    """handler(event, context) of the function the template loaded.

    `files`: a previous pipeline stage's files, shown in the host region; their memory
    file comes with this message. `keep_files`: hand the guest region's files back with
    the reply (their memory file comes with it), for the next stage. `slots`: the
    function's process slots (libos.children.ProcessSlots) come with it, their read and
    write ends after any memory file, so its children count toward its concurrency.
    """

    event: Any
    context: dict[str, Any]
    timeout: float | None = None
    files: HandedFiles | None = None
    keep_files: bool = False
    slots: bool = False


class Rollback(Message):
    """Back to the template's state; the guest does not run (the next request carries a
    fresh identity)."""


class InspectClone(Message):
    """Digests of guest memory, and where `needle` occurs in it (isolation tests)."""

    needle: bytes | None = None


class ReportWorkingSet(Message):
    """The RAM ranges this clone has written (its own copies) since it was forked."""


class RunInMonitor(Message):
    """Tests of the jail only: run Python code in the clone's monitor process, as if its
    guest had taken it over. Refused unless the template was started with
    USETL_TEST_HOOKS=1."""

    code: str


# -- replies --------------------------------------------------------------------------


class TemplateReady(Message):
    pid: int
    startup_ms: float
    memory_bytes: int
    state_bytes: int
    guest_bytes: int = 0  # RAM and ETL regions: what its jail's memory limit is made from
    load: InvocationResult | None = None  # a function template: its load request's result
    warmup: InvocationResult | None = None  # and its warm-up invocation's
    # A started or loaded template's URL policy, which the controller attaches its clones
    # to the egress broker with (a function template's is its parent's, whatever it says).
    egress: EgressPolicy | None = None


class Forked(Message):
    pid: int
    # A loaded template's guest memory, which its cgroup is made for while it maps it.
    guest_bytes: int = 0
    # The Fork's cgroup a shell moved itself into (checked by the controller), if served by
    # one; a loaded template's, if its process is the loader's spare.
    cgroup: str | None = None


class CloneReady(Message):
    pid: int
    instance: str
    timings: dict[str, float]
    warm_ms: float | None = None


class Invoked(Message):
    result: InvocationResult
    files: HandedFiles | None = None  # Call.keep_files: their memory file comes with this
    # The socket path's share of result.io, as the monitor counted it: a jailed guest's
    # connected sockets carry their bytes past the broker, which counts only the connects.
    sockets: IoUsage | None = None


class RolledBack(Message):
    pages: int
    copy_ms: float  # copying the template's bytes back over the pages the clone wrote
    restore_ms: float  # that, the vCPU and the monitor's state
    ms: float
    exits: int = 0  # returns from KVM_RUN the rollback took


class Digests(Message):
    sha256: dict[str, str]


class Inspected(Message):
    sha256: dict[str, str]
    found: list[int]


class SnapshotExport(Message):
    image: str
    image_digest: str
    regions: list[dict[str, Any]]
    memories: list[dict[str, Any]]  # name, gpa, size; their fds come with the message
    vcpu: bytes
    state: bytes
    jail_paths: list[str]  # the host paths its jail shows beyond every jail's
    working_set: list[tuple[int, int]]  # Frozen.working_set: a restored template's clones'


class WorkingSet(Message):
    ranges: list[tuple[int, int]]  # (offset, length) in guest RAM


class MonitorRan(Message):
    result: Any


class Done(Message):
    pass


class Failed(Message):
    error: ErrorInfo


TEMPLATE_FIRST = StartTemplate | StartLoader
LOADER_REQUESTS = LoadSnapshot | Close
TEMPLATE_REQUESTS = Fork | Info | InspectTemplate | ExportSnapshot | Close
CLONE_REQUESTS = Invoke | Call | Rollback | InspectClone | ReportWorkingSet | RunInMonitor
REPLIES = (TemplateReady | Forked | CloneReady | Invoked | RolledBack | Digests | Inspected
           | SnapshotExport | WorkingSet | MonitorRan | Done | Failed)

_encoder = msgspec.msgpack.Encoder()


def failure(e: BaseException, type_: str | None = None) -> Failed:
    """The Failed reply for an exception, keeping a HyperForkError's own error data."""
    if isinstance(e, HyperForkError) and e.error is not None:
        return Failed(e.error)
    return Failed(ErrorInfo(type_ or type(e).__name__, str(e)))


class Channel:
    """One end of a controller/template/clone socket; `accepts` is what it may receive."""

    def __init__(self, sock: socket.socket, accepts: Any = REPLIES):
        self.sock = sock
        self.decoder = msgspec.msgpack.Decoder(accepts)
        self._ahead = b""  # what a read brought after the last message: the next one's start

    @classmethod
    def pair(cls, accepts: Any = REPLIES) -> tuple[Channel, Channel]:
        """Two connected ends; the first accepts `accepts`, the second is set by its owner."""
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        return cls(a, accepts), cls(b, REPLIES)

    @classmethod
    def from_fd(cls, fd: int, accepts: Any) -> Channel:
        return cls(socket.socket(fileno=fd), accepts)

    def expect(self, accepts: Any) -> None:
        """From now on, receive `accepts` (a process that changes role: clone -> template)."""
        self.decoder = msgspec.msgpack.Decoder(accepts)

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_ahead(self) -> bool:
        """Whether a read brought bytes of a next message (a select on the socket misses
        them)."""
        return bool(self._ahead)

    def send(self, message: Message, fds: tuple[int, ...] = (), then: Message | None = None,
             ) -> None:
        """`then`: a second message in the same write (the other end finds it waiting)."""
        frame = b"".join(_frame(m) for m in (message, then) if m is not None)
        try:
            if fds:
                sent = socket.send_fds(self.sock, [frame], list(fds))
                if sent < len(frame):
                    self.sock.sendall(frame[sent:])
            else:
                self.sock.sendall(frame)
        except OSError as e:
            raise ChannelClosed(f"the process went away ({e.strerror})") from None

    def recv(self) -> tuple[Any, list[int]]:
        """The next message, validated; fds that came with it (the caller owns them).

        One recvmsg reads its length and, up to RECV_AHEAD, all of it (the path of every
        invocation: one syscall, not two). A channel carries one message each way at a
        time, so a read's fds are its first message's."""
        data, fds = self._ahead, []
        if len(data) < _LENGTH.size:
            try:
                more, fds, _, _ = socket.recv_fds(self.sock, RECV_AHEAD, MAX_FDS)
            except OSError as e:
                raise ChannelClosed(f"the process went away ({e.strerror})") from None
            if not more:
                raise ChannelClosed("the process went away" + (" mid-message" if data else ""))
            data += more
        try:
            if len(data) < _LENGTH.size:
                data += self._exactly(_LENGTH.size - len(data))
            end = _LENGTH.size + _size(data)
            if len(data) < end:
                data += self._exactly(end - len(data))
            self._ahead = data[end:]
            return self._decode(memoryview(data)[_LENGTH.size : end]), fds
        except BaseException:
            _close_all(fds)
            raise

    async def recv_async(self) -> Any:
        """recv() awaited on the running event loop: the socket is read as the bytes come, so
        no thread waits for the other end and nothing else on the loop does. One read takes
        in up to RECV_AHEAD, as recv()'s does. Descriptors sent with the message are not
        taken (the kernel closes them)."""
        loop = asyncio.get_running_loop()
        data = self._ahead
        while len(data) < _LENGTH.size:
            more = await self._read_async(loop, RECV_AHEAD)
            if not more:
                raise ChannelClosed("the process went away" + (" mid-message" if data else ""))
            data += more
        end = _LENGTH.size + _size(data)
        if len(data) < end:  # a message over RECV_AHEAD: the rest, as it comes
            rest = bytearray(data)
            while len(rest) < end:
                rest += _more(await self._read_async(loop, min(end - len(rest), 1 << 20)))
            data = bytes(rest)
        self._ahead = data[end:]
        return self._decode(memoryview(data)[_LENGTH.size : end])

    def _decode(self, body: bytes) -> Any:
        try:
            return self.decoder.decode(body)
        except msgspec.ValidationError as e:
            raise ProtocolError(f"invalid message: {e}") from None
        except msgspec.DecodeError as e:
            raise ProtocolError(f"malformed message: {e}") from None

    async def _read_async(self, loop: asyncio.AbstractEventLoop, n: int) -> bytes:
        """One read of up to `n` bytes, awaited on the loop until some are there. The socket
        stays blocking for the threads that use it (MSG_DONTWAIT here); a reply read at once
        costs no mode switch."""
        while True:
            try:
                return self.sock.recv(n, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
            except OSError as e:
                raise ChannelClosed(f"the process went away ({e.strerror})") from None
            readable = loop.create_future()
            fd = self.sock.fileno()
            loop.add_reader(fd, _resolve, readable)
            try:
                await readable
            finally:
                loop.remove_reader(fd)
                self.sock.setblocking(True)  # uvloop's reader made the descriptor non-blocking

    def _exactly(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                buf += _more(self.sock.recv(min(n - len(buf), 1 << 20)))
            except OSError as e:
                raise ChannelClosed(f"the process went away ({e.strerror})") from None
        return bytes(buf)

    def request(self, message: Message, reply: type[M], fds: tuple[int, ...] = ()) -> M:
        """Send, then wait for a `reply`: Failed raises HyperForkError, others ProtocolError."""
        self.send(message, fds)
        return self.reply(reply)

    def reply(self, reply: type[M]) -> M:
        answer, fds = self.reply_with_fds(reply)
        _close_all(fds)
        return answer

    def reply_with_fds(self, reply: type[M]) -> tuple[M, list[int]]:
        """reply(), and the descriptors that came with it (the caller owns them)."""
        answer, fds = self.recv()
        if not isinstance(answer, reply):
            _close_all(fds)
        return _expected(answer, reply), fds

    async def reply_async(self, reply: type[M]) -> M:
        """reply() awaited on the running event loop (recv_async)."""
        return _expected(await self.recv_async(), reply)

    def close(self) -> None:
        self.sock.close()


def _resolve(future: asyncio.Future) -> None:
    """A reader's callback: the socket is readable (it may fire again before it is removed)."""
    if not future.done():
        future.set_result(None)


def _more(chunk: bytes) -> bytes:
    """A read's bytes, in the middle of a message: ChannelClosed at the stream's end."""
    if not chunk:
        raise ChannelClosed("the process went away mid-message")
    return chunk


def _frame(message: Message) -> bytes:
    data = _encoder.encode(message)
    return _LENGTH.pack(len(data)) + data


def _size(data: bytes) -> int:
    """The length a message's first bytes give it; ProtocolError past MAX_MESSAGE."""
    (size,) = _LENGTH.unpack_from(data)
    if size > MAX_MESSAGE:
        raise ProtocolError(f"a message of {size} bytes is over the {MAX_MESSAGE} limit")
    return size


def _expected(answer: Any, reply: type[M]) -> M:
    """The answer if it is a `reply`: Failed raises HyperForkError, others ProtocolError."""
    if isinstance(answer, Failed):
        raise HyperForkError(f"{answer.error.type}: {answer.error.message}", answer.error)
    if not isinstance(answer, reply):
        raise ProtocolError(f"expected {reply.__name__}, got {type(answer).__name__}")
    return answer


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
