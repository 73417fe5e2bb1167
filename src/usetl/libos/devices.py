"""Character devices in /dev: null, zero, urandom and the agent channel.

The agent channel (/dev/usetl) is how the guest agent and the monitor talk,
in usetl.abi's framing. The agent's exchange ioctl (abi.AGENT_EXCHANGE)
hands over its reply and waits for the next request, and a read with no
message waiting blocks too: the monitor pauses the VM there (idle, no CPU)
until it has work, which is the point templates are captured at.
"""

from __future__ import annotations

import errno
import stat as st
from typing import TYPE_CHECKING

from usetl import abi

from .errors import SyscallError
from .files import NullFile, OpenFile, RandomFile, ZeroFile
from .fs import DEV_DEVFS, DeviceNode, Node, StaticDir
from .pty import PtmxNode

if TYPE_CHECKING:
    from .kernel import Kernel

AGENT_DEVICE = abi.AGENT_DEVICE.removeprefix("/dev/")


class Blocked(Exception):
    """Raised by a syscall that must wait for the monitor; it is re-run on resume."""


def makedev(major: int, minor: int) -> int:
    return (major << 8) | minor


class AgentChannel:
    """Messages in both directions between the monitor and the guest agent."""

    def __init__(self, max_message: int = abi.MAX_MESSAGE):
        self.max_message = max_message
        self.inbox = bytearray()
        self.outbox = bytearray()
        # The exchange in progress took its reply: when it is re-run on resume (it blocked
        # waiting for the request), it must not take the buffer's bytes again.
        self.replied = False

    def post(self, payload: bytes) -> None:
        self.inbox += abi.frame_header(len(payload)) + payload

    def take_reply(self) -> bytes | None:
        """The agent's one message since the request, or None if it wrote nothing.

        Anything else on the channel (a bad length, a partial message, bytes
        after the message) is guest-written garbage: an abi.ProtocolError, with
        the channel emptied, never a reply half-believed. The message itself is
        decoded and validated by the caller.
        """
        out = self.outbox
        if not out:
            return None
        header = abi.FRAME_HEADER_SIZE
        try:
            if len(out) < header:
                raise abi.ProtocolError(f"the agent wrote {len(out)} bytes, not a message")
            size = abi.body_length(bytes(out[:header]))
            if len(out) != header + size:
                raise abi.ProtocolError(
                    f"the agent's message says {size} bytes but {len(out) - header} follow")
            return bytes(out[header:])
        finally:
            out.clear()


class AgentChannelFile(OpenFile):
    def __init__(self, node: Node, flags: int, channel: AgentChannel):
        super().__init__(node, flags, "/dev/" + AGENT_DEVICE)
        self.channel = channel

    def read_at(self, offset: int, length: int) -> bytes:
        inbox = self.channel.inbox
        if not inbox:
            raise Blocked()
        data = bytes(inbox[:length])
        del inbox[:length]
        return data

    def write_at(self, offset: int, data: memoryview) -> int:
        if len(self.channel.outbox) + len(data) > self.channel.max_message + abi.FRAME_HEADER_SIZE:
            raise SyscallError(errno.EMSGSIZE)
        self.channel.outbox += data
        return len(data)

    def ioctl(self, k: Kernel, request: int, arg: int) -> int:
        """AGENT_EXCHANGE: the reply in the buffer, then the wait, then the next request."""
        if request != abi.AGENT_EXCHANGE:
            raise SyscallError(errno.ENOTTY)
        header = abi.EXCHANGE_HEADER_SIZE
        length, capacity = abi.unpack_exchange_header(k.mem.read(arg, header))
        if capacity < header or length > capacity - header:
            raise SyscallError(errno.EINVAL)
        channel = self.channel
        if not channel.replied:
            self.write_at(0, k.mem.slice(arg + header, length))
            channel.replied = True
        inbox = channel.inbox
        if not inbox:
            raise Blocked()
        n = min(len(inbox), capacity)
        k.mem.write(arg, inbox[:n])
        del inbox[:n]
        channel.replied = False
        return n


def standard_devices(channel: AgentChannel) -> dict[str, Node]:
    return {
        "ptmx": PtmxNode(17),
        "pts": StaticDir(18, {}, DEV_DEVFS),  # the pseudo-terminals' slaves (pty.py)
        "null": DeviceNode(10, makedev(1, 3), NullFile, "/dev/null"),
        "zero": DeviceNode(11, makedev(1, 5), ZeroFile, "/dev/zero"),
        "urandom": DeviceNode(12, makedev(1, 9), RandomFile, "/dev/urandom"),
        "random": DeviceNode(13, makedev(1, 8), RandomFile, "/dev/random"),
        AGENT_DEVICE: DeviceNode(14, makedev(10, 242), AgentChannelFile, channel),
    }


def console_node(ino: int) -> Node:
    node = Node(st.S_IFCHR | 0o620, ino)
    node.rdev = makedev(136, 0)  # type: ignore[attr-defined]
    return node
