"""What a function's I/O cost the host, so it can be billed to the function."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class IoAccount:
    """Counters for one request, or summed over an invocation with add().

    requests counts ETL requests (a GET or POST, whatever its redirects);
    bytes_in are response body bytes received on the wire (redirect bodies
    included), bytes_out request body bytes sent; host_cpu_s is the host
    thread's CPU time spent carrying the request out, wall_s its duration;
    copied_bytes are bytes the host copied from one memory to another to put
    files in a region (a large event, a threaded guest's download, a hand-off
    that could not be mapped): 0 where bytes were received or mapped in place.
    """

    requests: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    host_cpu_s: float = 0.0
    wall_s: float = 0.0
    copied_bytes: int = 0

    def add(self, other: IoAccount) -> None:
        self.requests += other.requests
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.host_cpu_s += other.host_cpu_s
        self.wall_s += other.wall_s
        self.copied_bytes += other.copied_bytes

    def as_dict(self) -> dict:
        # vars(), not dataclasses.asdict: that deep-copies, twice per invocation.
        return dict(vars(self))
