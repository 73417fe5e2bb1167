"""What the jail costs a clone: fork with and without it, side by side in one run.

Base-template clones are jailed in full in the child (namespaces, root, uid, seccomp);
function-template clones inherit their template's jail, so they pay only for the
handshake and their cgroup. Forks alternate between the jailed and unjailed templates.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from usetl.hyperfork import Template
from usetl.image import ImageArchive

LOAD = {"kind": "exec", "code": "import sys; sys.path.insert(0, '/fn'); import fn"}
FUNCTION = "import json, csv\n\ndef handler(event, context):\n    return event\n"
KINDS = ("base clone", "function clone")


def run(image: ImageArchive, runs: int = 30,
        progress: Callable[[str], None] = lambda s: None) -> dict:
    samples: dict[tuple[str, bool], dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as d:
        Path(d, "fn.py").write_text(FUNCTION)
        os.chmod(d, 0o755)
        bases = {jail: Template.start(image, jail=jail) for jail in (True, False)}
        try:
            functions = {jail: t.load_function(LOAD, mounts={"fn": d})
                         for jail, t in bases.items()}
            try:
                for i in range(runs):
                    progress(f"fork {i + 1}/{runs}")
                    for jail in (True, False):
                        pair = (bases[jail], functions[jail])
                        for kind, template in zip(KINDS, pair, strict=True):
                            with template.fork(warm=False) as clone:
                                row = samples.setdefault((kind, jail), {})
                                row.setdefault("fork_ms", []).append(clone.fork_ms)
                                row.setdefault("vm_ms", []).append(clone.timings["vm_ms"])
            finally:
                for t in functions.values():
                    t.close()
        finally:
            for t in bases.values():
                t.close()
    return {f"{kind}, {'jailed' if jail else 'not jailed'}":
            {name: statistics.median(values) for name, values in row.items()} | {"n": runs}
            for (kind, jail), row in samples.items()}


def format_report(r: dict) -> str:
    lines = []
    for kind in KINDS:
        jailed, free = r[f"{kind}, jailed"], r[f"{kind}, not jailed"]
        lines.append(f"{kind:15} fork {jailed['fork_ms']:7.2f} ms jailed, {free['fork_ms']:7.2f} "
                     f"ms not ({jailed['fork_ms'] / free['fork_ms']:.2f}x); KVM VM creation "
                     f"{jailed['vm_ms']:.2f} vs {free['vm_ms']:.2f} ms (medians, n={free['n']})")
    return "\n".join(lines)
