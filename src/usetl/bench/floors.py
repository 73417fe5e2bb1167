"""The two floors every latency here stands on, and how many of them an invocation costs.

Under PVM (DESIGN.md) a VM exit resumed from Python and a clone's first
touch of a guest page set every latency floor, and hosts differ by about
3x, so each goal is a count of these events or a ratio to them measured in
the same run:
- exit_round_trip: a guest calling getppid in a loop, each call timed in the
  guest (the vDSO clock costs no exit): a SYSCALL, the trampoline's exit,
  a trivial Python handler and the resume, median per call;
- bare_exit: the same port write alone, in a VM whose guest does nothing else,
  resumed by a loop that does nothing else: what KVM charges for one exit
  before any guest or monitor code (the rest of exit_round_trip is the
  SYSCALL, the guest's and the monitor's code, and their caches refilled);
- first_touch: a clone writing (and reading) one byte in each of N pages of
  its template's memory that it has not touched yet, each touch timed in the
  guest: a copy-on-write fault on the host and a shadow page fault in KVM;
- run: both, beside what a recycled no-op and a rollback cost in exits and
  time (with a message round trip between two processes, bench/protocol.py),
  for the goals of issue 15.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from usetl import abi
from usetl.bench import hyperfork_envs, protocol
from usetl.bench.config import BenchConfig
from usetl.bench.rollback import dirty_code
from usetl.bench.stats import summary
from usetl.kvm.constants import KVM_EXIT_IO
from usetl.vm import Vm
from usetl.vm.layout import PAGE_SIZE, USER_START
from usetl.vm.trampoline import PORT_SYSCALL

EXIT_CALLS = 2000
PORT_WRITE_LOOP = bytes([0xE6, PORT_SYSCALL, 0xEB, 0xFC])  # out PORT_SYSCALL, al; jmp back
TOUCH_PAGES = 256
ROLLBACK_PAGES = 64  # 256 KiB: the "under 1 MiB dirtied" of the rollback goal

# Each call timed alone; the median is what one exit costs, whatever the machine's load.
SYSCALL_LOOP = """
import os, time
clock, call = time.perf_counter, os.getppid
samples = [0.0] * {calls}
for i in range({calls}):
    t = clock()
    call()
    samples[i] = clock() - t
samples.sort()
print(samples[len(samples) // 2] * 1e6)
"""

# Module-level code runs in the template: its buffers are template pages every clone shares.
TOUCH_SOURCE = """
import time
WRITTEN = bytearray(b"\\x01" * ({pages} * {page}))
READ = bytearray(b"\\x01" * ({pages} * {page}))


def _median_us(samples):
    samples.sort()
    return samples[len(samples) // 2] * 1e6


def touch(event, context):
    clock, step = time.perf_counter, {page}
    first, again, read = [0.0] * {pages}, [0.0] * {pages}, [0.0] * {pages}
    for timings, buf in ((first, WRITTEN), (again, WRITTEN)):
        for n, i in enumerate(range(0, len(buf), step)):
            t = clock()
            buf[i] = 2
            timings[n] = clock() - t
    for n, i in enumerate(range(0, len(READ), step)):
        t = clock()
        READ[i]
        read[n] = clock() - t
    return {{"write_us": _median_us(first), "read_us": _median_us(read),
             "again_us": _median_us(again)}}
"""


def exit_round_trip_us(usf_or_clone: Any, calls: int = EXIT_CALLS) -> float:
    """Median µs of one trivial syscall in the guest of a USF or a clone (run_code)."""
    result = usf_or_clone.run_code(SYSCALL_LOOP.format(calls=calls))
    if result.error is not None:
        raise RuntimeError(f"the syscall loop failed: {result.error.message}")
    return float(result.stdout)


def bare_exit_us(calls: int = EXIT_CALLS) -> float:
    """Median µs of one KVM_RUN round trip for the guest's port write, nothing else run,
    each timed alone as exit_round_trip_us times each getppid."""
    vm = Vm(16)
    try:
        vm.ram.write(USER_START, PORT_WRITE_LOOP)
        vm.enter_user(USER_START, USER_START + PAGE_SIZE)
        resume, clock = vm.vcpu.run, time.perf_counter
        resume()  # the first entry loads the state set above
        samples = [0.0] * calls
        for i in range(calls):
            t = clock()
            resume()
            samples[i] = clock() - t
        if (vm.run_struct.exit_reason, vm.vcpu.exit_io_port.value) != (KVM_EXIT_IO,
                                                                        PORT_SYSCALL):
            raise RuntimeError("the bare exit loop's guest stopped at something other than "
                               "its port write")
    finally:
        vm.close()
    return statistics.median(samples) * 1e6


def first_touch_us(base: Any, pages: int = TOUCH_PAGES) -> dict[str, float]:
    """Median µs of a clone's first write and first read of a page of its template's memory.

    `base` is a base Template; a function template whose module holds the
    pages is made from it and closed again. "again_us" is a second write to
    the same pages: the timing loop's own cost, with no fault.
    """
    source = TOUCH_SOURCE.format(pages=pages, page=PAGE_SIZE)
    load = {"kind": abi.LOAD, "source": source, "filename": "touch.py", "handler": "touch"}
    with base.load_function(load) as template, template.fork(warm=False) as clone:
        result = clone.invoke(None)
    if result.error is not None:
        raise RuntimeError(f"the page-touch handler failed: {result.error.message}")
    return {**result.value, "pages": pages}


def _recycled(clone: Any, runs: int) -> dict:
    """A no-op request after each rollback: its time from the caller, and the exits of both."""
    request_ms, request_exits, rollback_ms, rollback_exits = [], [], [], []
    for _ in range(runs):
        rolled = clone.rollback()
        rollback_ms.append(rolled.ms)
        rollback_exits.append(rolled.exits)
        t0 = time.perf_counter()
        result = clone.run_code("pass")
        request_ms.append((time.perf_counter() - t0) * 1e3)
        request_exits.append(result.exits)
        if result.error is not None:
            raise RuntimeError(f"the no-op failed: {result.error.message}")
    return {"request_ms": summary(request_ms), "request_exits": statistics.median(request_exits),
            "rollback_ms": summary(rollback_ms),
            "rollback_exits": statistics.median(rollback_exits)}


def _dirty_rollbacks(clone: Any, runs: int) -> dict:
    """Rollbacks after the guest wrote ROLLBACK_PAGES fresh pages: the monitor's own time,
    the part of it that copied the pages back, and the exits."""
    ms, copy_ms, exits, pages = [], [], [], []
    for _ in range(runs):
        clone.run_code(dirty_code(ROLLBACK_PAGES))
        rolled = clone.rollback()
        ms.append(rolled.ms)
        copy_ms.append(rolled.copy_ms)
        exits.append(rolled.exits)
        pages.append(rolled.pages)
    return {"dirtied": ROLLBACK_PAGES, "ms": summary(ms), "copy_ms": summary(copy_ms),
            "exits": statistics.median(exits), "restored_pages": statistics.median(pages)}


def run(cfg: BenchConfig, ctx) -> dict:
    """Both floors (and the bare exit), and a recycled no-op and a rollback in exits and time,
    in one run."""
    ctx.say("bare exits")
    out: dict = {"bare_exit_us": bare_exit_us()}
    base = hyperfork_envs.hyperfork().Template.start(image=ctx.image, mem_mib=cfg.usf_mem_mib)
    try:
        with base.fork() as clone:
            ctx.say("exit round trip")
            out["exit_us"] = exit_round_trip_us(clone)
            ctx.say("message round trip")
            out["message_us"] = protocol.message_round_trip(cfg.coldstart_runs * 10)
            ctx.say("recycled no-op requests")
            out["recycled"] = _recycled(clone, cfg.coldstart_runs)
            ctx.say(f"rollbacks after {ROLLBACK_PAGES} dirtied pages")
            out["rollback"] = _dirty_rollbacks(clone, cfg.coldstart_runs)
        ctx.say("first touches of template pages")
        out["first_touch"] = first_touch_us(base)
    finally:
        base.close()
    return out
