"""Showing an image build's progress, or a deploy's, on stderr.

On a terminal, one line redrawn in place; otherwise (logs, CI) one plain line
when each phase starts and one when it ends, so logs stay short.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

PHASE_LABELS = {"compile": "compiling modules", "write": "writing image",
                "upload": "uploading code", "resolve": "resolving requirements",
                "build": "building sdists into wheels", "install": "installing packages",
                "pack": "packing packages for imports from memory",
                "template": "making the template"}
SIZED_PHASES = ("write", "upload")  # done and total are bytes
# Redraw at most this often: a redraw per file would cost more than the file.
REDRAW_INTERVAL = 0.1


def format_size(size: float) -> str:
    """A byte count for people: 1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


class StderrProgress:
    """A ``ProgressFn`` that draws a bar on a tty, or prints plain lines otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.is_tty = self.stream.isatty()
        self._last_draw = 0.0
        self._phase_started = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        label = PHASE_LABELS.get(phase, phase)
        amount = self._amount(phase, done, total)
        now = time.monotonic()
        if done == 0:
            self._phase_started = now
        finished = done >= total
        if self.is_tty:
            if finished or now - self._last_draw >= REDRAW_INTERVAL:
                self._last_draw = now
                self._draw_bar(label, amount, done, total, finished)
        elif done == 0:
            size = format_size(total) if phase in SIZED_PHASES else str(total)
            print(f"usetl: {label}: {size}", file=self.stream, flush=True)
        if finished and not self.is_tty:
            elapsed = now - self._phase_started
            print(f"usetl: {label}: done in {elapsed:.1f} s", file=self.stream, flush=True)

    @staticmethod
    def _amount(phase: str, done: int, total: int) -> str:
        if phase in SIZED_PHASES:
            return f"{format_size(done)} / {format_size(total)}"
        return f"{done}/{total}"

    def _draw_bar(self, label: str, amount: str, done: int, total: int, finished: bool) -> None:
        columns = shutil.get_terminal_size((80, 24)).columns
        text = f"usetl: {label} {amount} "
        width = max(columns - len(text) - 3, 10)
        filled = width if total <= 0 else width * done // total
        line = f"{text}[{'#' * filled}{'.' * (width - filled)}]"
        self.stream.write("\r" + line[: columns - 1] + ("\n" if finished else ""))
        self.stream.flush()
