"""The process backend's transport: an instance's socket carries the agent and usetl.etl.

The zygote (usetl/platform/zygote.py) forks one process per instance and
calls `serve(sock)`: the agent's loop (usetl.agent) reads requests from the
socket, and while the handler runs, usetl.etl's requests go to the host on
the same socket (abi.ETL messages, answered as /dev/etl answers them). The
regions are memory files the host sends with the info reply; a file is
read or written through a mapping of its own pages, so a sandbox maps only
what it uses (it runs under RLIMIT_AS). The host cannot see this sandbox's
/tmp, so etl.post of a /tmp file sends it from the guest region.
"""

import io
import mmap
import resource
import socket
import sys
import time

from usetl import abi, agent, etl
from usetl.abi import etl as wire

# Characters of stdout and of stderr sent per invocation, as a USF captures (UsfConfig.
# output_limit); the platform keeps less in a record (Limits.max_output_bytes).
OUTPUT_LIMIT = 16 << 20


class SocketTransport:
    """usetl.etl's requests as messages to the host; file views as mappings of the regions."""

    tmp_in_place = False

    def __init__(self, sock):
        self.sock = sock
        self.regions = None  # region -> (memory file fd, size), from the info reply
        self.windows = {}  # (region, offset, size) -> memoryview of a mapping

    def request(self, message):
        abi.send(self.sock, dict(message, kind=abi.ETL))
        return abi.recv(self.sock)[0]

    def _regions(self):
        if self.regions is None:
            abi.send(self.sock, {"kind": abi.ETL, "op": wire.INFO})
            _, fds, _, _ = socket.recv_fds(self.sock, 1, 2)
            info = abi.recv(self.sock)[0]
            if len(fds) != 2:
                raise etl.EtlError(None, "the host sent no ETL regions", wire.CONNECTION)
            self.regions = {wire.HOST_REGION: (fds[0], info["host_size"]),
                            wire.GUEST_REGION: (fds[1], info["guest_size"])}
        return self.regions

    def view(self, region, offset, size):
        fd, limit = self._regions()[region]
        if offset < 0 or size < 0 or offset + size > limit:
            raise ValueError(f"{size} B at {offset} is outside the {region} region")
        if size == 0:
            return memoryview(bytearray())
        window = self.windows.get((region, offset, size))
        if window is None:
            access = mmap.ACCESS_READ if region == wire.HOST_REGION else mmap.ACCESS_WRITE
            window = memoryview(mmap.mmap(fd, size, access=access, offset=offset))
            self.windows[region, offset, size] = window
        return window

    def reset(self):
        self.windows.clear()  # region contents last one invocation


class SocketChannel:
    """The agent's channel in an instance; each request's output is captured for its reply."""

    cpu_clock = staticmethod(time.process_time)

    def __init__(self, sock):
        self.sock = sock
        self.transport = SocketTransport(sock)
        self.streams = sys.stdout, sys.stderr

    def exchange(self, frame):
        """Send `frame` (a reply), then the next request (None once the host closed)."""
        self.sock.sendall(frame)
        return self.receive()

    def receive(self):
        try:
            request, _ = abi.recv(self.sock)
        except EOFError:
            return None
        self.transport.reset()
        sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
        return request

    def finish(self, reply):
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self.streams
        return dict(reply, kind=abi.REPLY, stdout=out.getvalue()[:OUTPUT_LIMIT],
                    stderr=err.getvalue()[:OUTPUT_LIMIT],
                    peak_memory_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def serve(sock, refused=None):
    """Serve one instance's socket until the host closes it (see agent.serve for refused)."""
    channel = SocketChannel(sock)
    etl.use(channel.transport)
    agent.serve(channel, refused)
