"""The density section: idle instances that fit in a memory budget."""

from __future__ import annotations

from usetl.bench.report.document import USF_SERIES, Document, fmt, ok_series


def _setup(doc: Document, exp: dict) -> str:
    return (
        "In this experiment we show how many idle instances of each environment fit in a "
        f"memory budget of {exp.get('budget_mib', doc.config['density_budget_mib'])} "
        "MiB. We set up this experiment as follows: we start instances one at a time until "
        "the host's MemAvailable has dropped by the budget, or a cap on count or time is "
        "reached; in the latter case we extrapolate from the memory per instance measured "
        "with all of them held (the larger of the host memory per instance, PSS plus its share "
        "of a shared parent, and the MemAvailable drop, so that neither "
        "the kernel's share nor sharing is hidden), and say so."
    )


def write(doc: Document, exp: dict) -> None:
    if not doc.section(exp, "Density", _setup(doc, exp)):
        return
    s = ok_series(exp)
    if s:
        _figure(doc, exp, s)
    rows = ["| environment | held | MiB each | fit in budget | how |",
            "| --- | --- | --- | --- | --- |"]
    for v in s.values():
        how = "extrapolated" if v["extrapolated"] else "measured"
        rows.append(f"| {v['label']} | {v['held']} | {fmt(v['per_instance_mib'])} | "
                    f"{v['fits_in_budget']} | {how} |")
    doc.out("\n".join(rows))
    for v in s.values():
        if v.get("stopped"):
            doc.out(f"The {v['label']} series {v['stopped']}.")
    if s:
        doc.out(" ".join(_text(doc, s)))
    doc.failed_note(exp)


def _figure(doc: Document, exp: dict, s: dict) -> None:
    names = list(s)

    def draw(ax) -> None:
        fits = [s[n]["fits_in_budget"] for n in names]
        bars = ax.barh([s[n]["label"] for n in names], fits,
                       color=["tab:blue" if n in USF_SERIES else "tab:gray" for n in names])
        for bar, n in zip(bars, names, strict=True):
            if s[n]["extrapolated"]:
                bar.set_hatch("//")
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_xlabel(f"instances in {exp['budget_mib']} MiB (hatched: extrapolated)")
        ax.bar_label(bars, [str(f) for f in fits], padding=3)

    doc.figure("density", "idle instances that fit in the memory budget", draw)


def _text(doc: Document, s: dict) -> list[str]:
    best = max(s, key=lambda n: s[n]["fits_in_budget"])
    text = [f"The densest environment here is the {s[best]['label']}, at "
            f"{s[best]['fits_in_budget']} instances, because each owns only "
            f"{fmt(s[best]['per_instance_mib'])} MiB."]
    if "hf_clone" in s and "usf" in s:
        ratio = doc.d("density.clones_vs_usfs",
                      s["hf_clone"]["fits_in_budget"] / s["usf"]["fits_in_budget"])
        text.append(f"HyperFork clones fit {s['hf_clone']['fits_in_budget']}, {ratio}× "
                    "as many as USFs started one by one, since a clone owns only the "
                    "pages it wrote.")
    if "usf" in s:
        text.append(f"USFs created one by one fit {s['usf']['fits_in_budget']} times: "
                    f"each carries its own monitor and started interpreter "
                    f"({fmt(s['usf']['per_instance_mib'])} MiB).")
    text.append("Density follows private memory per instance, so sharing a started "
                "interpreter copy-on-write is what packs instances densely.")
    return text


def summary(doc: Document) -> list[str]:
    """The summary's sentence on how many clones fit."""
    den = doc.exp("density")
    if not (den and "hf_clone" in ok_series(den)):
        return []
    c = ok_series(den)["hf_clone"]
    return [
        f"{c['fits_in_budget']} clones fit in {den['budget_mib']} MiB"
        + (" (extrapolated from the clones held)." if c["extrapolated"] else ".")
    ]
