"""A parallel command runner as build and test handlers write one: several children at
once, their stdout and stderr pipes multiplexed with select until every pipe closes,
children reaped with waitpid(WNOHANG) as they finish, and per-child output kept apart."""

import os
import select
import subprocess
import sys

SCRIPT = ("import sys, time\nn = int(sys.argv[1])\nfor i in range(n):\n"
          "    print(f'job{n} line{i}', flush=True)\n"
          "    if i % 3 == 0: print(f'job{n} warn{i}', file=sys.stderr, flush=True)\n"
          "    time.sleep(0.002)\nsys.exit(n % 4)")


def handler(event, context):
    jobs, streams, procs = {}, {}, []
    for n in event["jobs"]:
        # Kept: a Popen freed after its child ended (reaped by its __del__) closes its pipes.
        p = subprocess.Popen([sys.executable, "-c", SCRIPT, str(n)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        procs.append(p)
        jobs[p.pid] = {"n": n, "out": b"", "err": b""}
        streams[p.stdout.fileno()] = (p.pid, "out")
        streams[p.stderr.fileno()] = (p.pid, "err")
    codes = {}
    while streams:
        readable, _, _ = select.select(list(streams), [], [], 30)
        for fd in readable:
            data = os.read(fd, 4096)
            pid, kind = streams[fd]
            if data:
                jobs[pid][kind] += data
            else:
                del streams[fd]
                os.close(fd)
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            codes[pid] = os.waitstatus_to_exitcode(status)
    while len(codes) < len(jobs):
        pid, status = os.waitpid(-1, 0)
        codes[pid] = os.waitstatus_to_exitcode(status)
    return {str(j["n"]): {"out": len(j["out"].splitlines()), "err": len(j["err"].splitlines()),
                          "last": j["out"].splitlines()[-1].decode(), "code": codes[pid]}
            for pid, j in sorted(jobs.items(), key=lambda kv: kv[1]["n"])}
