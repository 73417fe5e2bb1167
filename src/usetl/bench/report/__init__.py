"""The evaluation report: DIR/evaluation.md and one PNG per figure, from DIR/results.json.

Every number in the text is computed from the results: the numbers the
experiments measured, and those the report derives from them (ratios,
differences), which it stores under "derived" in results.json before
writing, so every number a reader sees can be found in the JSON.

One module per experiment writes its section (and its sentences of the
summary); front.py writes the header, goals and set-up; Report puts them in order.
"""

from __future__ import annotations

import json
from pathlib import Path

from usetl.bench.report import (
    children,
    cluster,
    coldstart,
    compat,
    density,
    download,
    floors,
    front,
    handlers,
    imports,
    memory,
    pipeline,
    platform,
    rollback,
    scaling,
    startup,
    threads,
)
from usetl.bench.report.document import Document, failure_lines, fmt
from usetl.bench.runner import RESULTS_FILE

__all__ = ["REPORT_FILE", "Report", "fmt", "generate"]

REPORT_FILE = "evaluation.md"

# Experiment name -> the function that writes its section, in the report's order.
SECTIONS = {
    "floors": floors.write,
    "coldstart": coldstart.write,
    "memory": memory.write,
    "scaling": scaling.write,
    "density": density.write,
    "download": download.write,
    "threads": threads.write,
    "pipeline": pipeline.write,
    "handlers": handlers.write,
    "children": children.write,
    "rollback": rollback.write,
    "platform": platform.write,
    "cluster": cluster.write,
    "startup": startup.write,
    "imports": imports.write,
    "compat": compat.write,
}


class Report:
    """The whole document: header, goals and set-up, one section per experiment, failures."""

    def __init__(self, results: dict, outdir: Path):
        self.doc = Document(results, outdir)

    def build(self) -> str:
        doc = self.doc
        # The sections first: the summary at the top quotes numbers they derive.
        for name, write in SECTIONS.items():
            if name in doc.exps:
                write(doc, doc.exps[name])
        body, doc.lines = doc.lines, []
        front.header(doc)
        front.goals(doc)
        front.setup(doc)
        doc.lines.extend(body)
        self.failures()
        return "\n".join(doc.lines).rstrip() + "\n"

    def failures(self) -> None:
        lines = []
        for name, exp in self.doc.exps.items():
            for line in failure_lines(exp):
                lines.append(f"{line} ({exp.get('title', name)})")
        self.doc.out("## Failures")
        self.doc.out("\n".join(lines) if lines else "Every experiment and series completed.")


def generate(outdir: Path) -> Path:
    """Write outdir/evaluation.md and its figures from outdir/results.json."""
    path = outdir / RESULTS_FILE
    results = json.loads(path.read_text())
    report = Report(results, outdir)
    text = report.build()
    results["derived"] = report.doc.derived
    results["goals"] = report.doc.goal_results
    results["figures"] = report.doc.figures.files
    path.write_text(json.dumps(results, indent=1))
    target = outdir / REPORT_FILE
    target.write_text(text)
    return target
