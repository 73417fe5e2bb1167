"""`python -m usetl.bench.hold usf|monitor MEM_MIB`: hold one idle USF in its own process.

The memory experiments measure an idle USF as a process of its own: "usf"
starts a USF, runs the workload once and idles; "monitor" imports the same
monitor code and starts no VM, so the difference is what the VM adds.
The process prints "ready" and idles until its stdin closes.
"""

from __future__ import annotations

import sys

from usetl.bench.envs import load_and_call
from usetl.usf import UsfConfig, start_usf


def main(kind: str, mem_mib: int) -> int:
    usf = None
    if kind == "usf":
        usf = start_usf(config=UsfConfig(mem_mib=mem_mib))
        load_and_call(usf)
    print("ready", flush=True)
    sys.stdin.read()
    if usf is not None:
        usf.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
