"""What every part of the report shares: the results, the text written so far, the
derived numbers (each stored so that results.json holds it) and the figures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from usetl.bench import goals

# The series that run usetl (a USF or a HyperFork clone); the figures colour them apart.
USF_SERIES = {"hf_ready", "hf_fork", "hf_recycle", "hf_restore", "usf_pool", "usf_create",
              "usf", "usf_monitor", "hf_clone", "usf_etl", "usf_socket"}


def fmt(x: float | int) -> str:
    """A number as the text shows it: about three significant digits."""
    if isinstance(x, bool):
        raise TypeError("a boolean is not a number to show")
    if isinstance(x, int):
        return str(x)
    a = abs(x)
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


class Figures:
    """Numbers figures as they are made; each is one PNG in the report directory."""

    def __init__(self, outdir: Path):
        self.outdir = outdir
        self.count = 0
        self.files: list[str] = []

    def save(self, name: str, draw: Callable[[object], None]) -> tuple[int, str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 4.8), dpi=100)
        draw(ax)
        fig.tight_layout()
        filename = f"{name}.png"
        fig.savefig(self.outdir / filename)
        plt.close(fig)
        self.count += 1
        self.files.append(filename)
        return self.count, filename


def ok_series(exp: dict) -> dict[str, dict]:
    return {k: v for k, v in exp.get("series", {}).items() if v.get("status") == "ok"}


def failed_series(exp: dict) -> dict[str, dict]:
    return {k: v for k, v in exp.get("series", {}).items() if v.get("status") != "ok"}


def failure_lines(exp: dict) -> list[str]:
    """What failed in an experiment, one bullet per series, with the reason."""
    if exp.get("status") != "ok":
        return [f"- **The experiment failed**: {exp.get('reason', 'no reason recorded')}"]
    return [f"- **{s['label']}**: failed: {s['reason']}" for s in failed_series(exp).values()]


def fastest(series: dict, names: list[str]) -> tuple[str, float] | None:
    present = [(n, series[n]["ms"]["median"]) for n in names if n in series]
    return min(present, key=lambda p: p[1]) if present else None


class Document:
    """The report being written: paragraphs in order, derived numbers, figures."""

    def __init__(self, results: dict, outdir: Path):
        self.r = results
        self.config: dict = results["config"]
        self.exps: dict[str, dict] = results["experiments"]
        self.derived: dict[str, float | int] = {}
        self.figures = Figures(outdir)
        self.lines: list[str] = []
        self.goal_results = goals.check(results)

    # Every derived number goes through here, so it lands in results.json.
    def d(self, key: str, value: float) -> str:
        value = round(float(value), 3)
        self.derived[key] = value
        return fmt(value)

    def count(self, key: str, value: int) -> str:
        """A derived count: stored as an integer, shown as one."""
        self.derived[key] = value
        return str(value)

    def exp(self, name: str) -> dict | None:
        e = self.exps.get(name)
        return e if e is not None and e.get("status") == "ok" else None

    def out(self, *paras: str) -> None:
        for p in paras:
            self.lines.append(p)
            self.lines.append("")

    def compare(self, key: str, ours: float, theirs: float, what: str) -> str:
        """'N× faster than what' or 'N× the time of what', from two medians."""
        if ours <= theirs:
            return f"{self.d(key, theirs / ours)}× faster than {what}"
        return f"{self.d(key, ours / theirs)}× the time of {what}"

    def section(self, exp: dict, title: str, setup: str) -> bool:
        """The heading and set-up paragraph; False if the experiment failed."""
        self.out(f"## {title}", setup)
        if exp.get("status") != "ok":
            self.out(f"**This experiment failed**: {exp.get('reason', 'no reason recorded')}.")
            return False
        return True

    def figure(self, name: str, caption: str, draw: Callable[[object], None]) -> int:
        number, filename = self.figures.save(name, draw)
        self.out(f"![Figure {number}: {caption}]({filename})", f"*Figure {number}: {caption}*")
        return number

    def failed_note(self, exp: dict) -> None:
        lines = failure_lines(exp)
        if lines:
            self.out("Series that failed in this run, shown as failed in the figure:",
                     "\n".join(lines))
