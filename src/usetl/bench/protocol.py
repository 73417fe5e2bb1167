"""What one message of the controller/clone protocol costs: encode plus validated decode,
and a round trip between two processes.

An invocation crosses the protocol twice (Invoke to the clone, Invoked back),
so the per-invoke cost is the sum of the two rows. The pickle rows time the
same payloads as the plain tuples and dicts the protocol replaced, which were
neither typed nor validated. The round trip is a no-op's Invoke sent to a
process that answers each with a no-op's Invoked at once, over the same
Channel a clone serves: what an invocation costs beyond the clone's own work.

    python -m usetl.bench.protocol FD    # that answering process (FD: its socket)
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable

import msgspec

import usetl
from usetl import abi
from usetl.hyperfork.protocol import (
    CLONE_REQUESTS,
    REPLIES,
    Channel,
    ChannelClosed,
    Invoke,
    Invoked,
)
from usetl.invocation import InvocationResult, IoUsage

from .stats import summary

EVENT = {"order": 42, "rows": [{"id": i, "amount": i * 1.5} for i in range(10)]}
CONTEXT = {"request_id": "0" * 32, "function": "sales", "version": 3, "memory_mib": 256,
           "deadline": 1.7e9}


def _result() -> InvocationResult:
    return InvocationResult(value={"kept": 7, "total": 81.0}, stdout="processed 10 rows\n",
                            total_ms=1.2, guest_ms=0.8, guest_cpu_ms=0.7, syscalls=5,
                            syscall_ms=0.1, io=IoUsage(requests=1, bytes_in=4096))


def _time(fn: Callable[[], object], runs: int) -> dict:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e6)
    return summary(samples)


def run(runs: int = 20000) -> dict:
    """Microseconds per encode+decode of an Invoke and an Invoked, typed and pickled."""
    request = Invoke({"kind": "invoke", "event": EVENT, "context": CONTEXT}, 30.0)
    reply = Invoked(_result())
    encoder = msgspec.msgpack.Encoder()
    to_clone, to_server = msgspec.msgpack.Decoder(CLONE_REQUESTS), msgspec.msgpack.Decoder(REPLIES)
    old_request = ("invoke", {"kind": "invoke", "event": EVENT, "context": CONTEXT}, 30.0)
    old_reply = ("ok", msgspec.to_builtins(reply.result))
    rows = {
        "invoke (typed)": _time(lambda: to_clone.decode(encoder.encode(request)), runs),
        "invoked (typed)": _time(lambda: to_server.decode(encoder.encode(reply)), runs),
        "invoke (pickle)": _time(lambda: pickle.loads(pickle.dumps(old_request, 5)), runs),
        "invoked (pickle)": _time(lambda: pickle.loads(pickle.dumps(old_reply, 5)), runs),
    }
    sizes = {"invoke": len(encoder.encode(request)), "invoked": len(encoder.encode(reply))}
    return {"runs": runs, "us": rows, "bytes": sizes,
            "round_trip_us": message_round_trip(min(runs, 2000))}


NOOP = Invoke({"kind": abi.EXEC, "code": "pass"}, None)
NOOP_REPLY = Invoked(InvocationResult(total_ms=0.5, guest_ms=0.01, exits=1), None, IoUsage())
WARM_ROUND_TRIPS = 50


def message_round_trip(runs: int = 2000) -> dict:
    """µs from sending a no-op's Invoke to holding its Invoked, to a process of its own."""
    mine, theirs = Channel.pair()
    src = os.path.dirname(os.path.dirname(os.path.abspath(usetl.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    process = subprocess.Popen([sys.executable, "-m", "usetl.bench.protocol",
                                str(theirs.fileno())], pass_fds=(theirs.fileno(),), env=env)
    theirs.close()
    samples = []
    try:
        for i in range(WARM_ROUND_TRIPS + runs):
            t0 = time.perf_counter()
            mine.request(NOOP, Invoked)
            if i >= WARM_ROUND_TRIPS:
                samples.append((time.perf_counter() - t0) * 1e6)
    finally:  # the channel closed, it ends
        mine.close()
        process.wait()
    return summary(samples)


def _answer(fd: int) -> None:
    chan = Channel.from_fd(fd, CLONE_REQUESTS)
    while True:
        try:
            msg, _ = chan.recv()
        except ChannelClosed:
            return
        chan.send(NOOP_REPLY)


def format_report(result: dict) -> str:
    lines = [f"protocol cost per message, {result['runs']} runs (encode + decode, median us):"]
    for name, s in result["us"].items():
        lines.append(f"  {name:<18} {s['median']:8.2f} us  (p99 {s['p99']:.2f})")
    typed = result["us"]["invoke (typed)"]["median"] + result["us"]["invoked (typed)"]["median"]
    lines.append(f"  per invocation (typed, both ways): {typed:.2f} us; "
                 f"bytes {result['bytes']['invoke']} + {result['bytes']['invoked']}")
    trip = result["round_trip_us"]
    lines.append(f"  a no-op's Invoke and Invoked between two processes: {trip['median']:.1f} us "
                 f"median (p99 {trip['p99']:.1f})")
    return "\n".join(lines)


if __name__ == "__main__":
    _answer(int(sys.argv[1]))
