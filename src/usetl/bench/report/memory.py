"""The memory section: USS and PSS of one idle instance per environment."""

from __future__ import annotations

from usetl.bench.report.document import Document, fmt, ok_series

# Why each baseline owns the memory it does.
WHY = (("zygote", "it shares the zygote's interpreter and imports copy-on-write "
                  "and owns only the pages it wrote"),
       ("host_process", "it shares only the interpreter's file-backed pages "
                        "through the page cache"),
       ("container", "the container's interpreter plus the `runc run` process "
                     "that stays for its lifetime"))


def _setup(doc: Document) -> str:
    return (
        "In this experiment we show how much host memory one idle instance of each "
        "environment holds, and how much of it is shared. We set up this experiment as "
        "follows: for each environment we start instances that each run the tiny workload "
        f"once and then wait, hold {doc.config['idle_instances']} of them at once, "
        "and read USS and PSS of every host process of each instance. A USF is measured "
        "in a monitor process of its own; beside it, the same monitor with no VM shows "
        "what the monitor alone costs."
    )


def write(doc: Document, exp: dict) -> None:
    if not doc.section(exp, "Memory per idle instance", _setup(doc)):
        return
    s = ok_series(exp)
    names = [n for n in ("hf_clone", "usf", "usf_monitor", "zygote", "host_process",
                         "container") if n in exp["series"]]
    _figure(doc, exp, s, names)
    rows = ["| environment | USS MiB | PSS MiB | RSS MiB | shared parent PSS MiB |",
            "| --- | --- | --- | --- | --- |"]
    for n in names:
        v = exp["series"][n]
        rows.append(f"| {v['label']} | {fmt(v['uss_mib'])} | {fmt(v['pss_mib'])} | "
                    f"{fmt(v['rss_mib'])} | {fmt(v.get('shared_mib', 0.0))} |"
                    if n in s else f"| {v['label']} | failed | | | |")
    doc.out("\n".join(rows))
    doc.out(" ".join(_text(doc, s)))
    doc.failed_note(exp)


def _figure(doc: Document, exp: dict, s: dict, names: list[str]) -> None:
    def draw(ax) -> None:
        import numpy as np

        y = np.arange(len(names))
        uss = [s[n]["uss_mib"] if n in s else 0 for n in names]
        pss = [s[n]["pss_mib"] if n in s else 0 for n in names]
        ax.barh(y - 0.2, uss, 0.4, label="USS (private)")
        ax.barh(y + 0.2, pss, 0.4, label="PSS (proportional)")
        ax.set_yticks(y, [exp["series"][n]["label"] for n in names])
        for i, n in enumerate(names):
            if n not in s:
                ax.text(0.01, i, " failed", va="center", color="red",
                        transform=ax.get_yaxis_transform())
        ax.invert_yaxis()
        ax.set_xlabel("MiB per idle instance")
        ax.legend()

    doc.figure("memory", "USS and PSS per idle instance", draw)


def _text(doc: Document, s: dict) -> list[str]:
    text = []
    if "usf" in s:
        u = s["usf"]
        text.append(f"An idle USF holds {fmt(u['uss_mib'])} MiB of private memory "
                    f"(PSS {fmt(u['pss_mib'])} MiB).")
        if "usf_monitor" in s:
            mon = s["usf_monitor"]["uss_mib"]
            guest = doc.d("memory.usf_guest_uss_mib", u["uss_mib"] - mon)
            text.append(
                f"Of it, {fmt(mon)} MiB is the Python monitor with its imports, which every "
                f"USF process carries, and {guest} MiB is what the VM adds: the guest pages "
                "CPython touched while starting, which a created USF owns privately."
            )
    for n, why in WHY:
        if n in s:
            text.append(f"A {s[n]['label']} holds {fmt(s[n]['uss_mib'])} MiB privately: {why}.")
    if "hf_clone" in s:
        c = s["hf_clone"]
        text.append(
            f"A HyperFork clone holds {fmt(c['uss_mib'])} MiB privately (PSS "
            f"{fmt(c['pss_mib'])} MiB, RSS {fmt(c['rss_mib'])} MiB): its guest memory is a "
            "copy-on-write view of the function template's, so it owns only the pages it "
            "wrote, plus its forked monitor's own writes; the template process "
            f"({fmt(c['shared_mib'])} MiB PSS) is paid once for all clones."
        )
        if "usf" in s:
            ratio = doc.d("memory.usf_vs_clone_uss", s["usf"]["uss_mib"] / c["uss_mib"])
            text.append(
                f"That is {ratio}× "
                "less private memory than a USF started on its own.")
    elif "usf" in s:
        text.append("Until HyperFork clones are measured, a USF's private memory is the "
                    "price of starting CPython in each VM rather than sharing one started "
                    "copy.")
    return text


def summary(doc: Document) -> list[str]:
    """The summary's sentence on idle memory."""
    mem = doc.exp("memory")
    ms_ = ok_series(mem) if mem else {}
    if "hf_clone" in ms_ and "usf" in ms_:
        return [
            f"An idle clone holds {fmt(ms_['hf_clone']['uss_mib'])} MiB of private memory "
            f"against {fmt(ms_['usf']['uss_mib'])} MiB for a USF started on its own."
        ]
    if "usf" in ms_:
        return [f"An idle USF holds {fmt(ms_['usf']['uss_mib'])} MiB of private memory."]
    return []
