"""The scaling section: host memory per instance as more instances are held at once."""

from __future__ import annotations

from usetl.bench.report.document import Document, fmt, ok_series

CLOSING = (
    "Host memory per instance is its PSS plus its share of the parent every instance "
    "shares (the zygote, the function template). It falls towards USS as the shared "
    "pages (the interpreter's files, and for forked instances the parent's memory) are "
    "divided among more sharers; what remains is each instance's private memory, the "
    "number that decides density. The MemAvailable drop also counts kernel memory but "
    "is noisy on a shared machine, where other processes allocate and free memory "
    "during the run."
)


def _setup(doc: Document) -> str:
    return (
        "In this experiment we show how the memory per instance changes as more instances "
        "run at once, which is where copy-on-write sharing pays. We set up this experiment "
        "as follows: for each environment we hold more and more idle instances, measuring at "
        + ", ".join(map(str, doc.config["scaling_counts"]))
        + f" instances (at most {doc.config['heavy_cap']} for environments that start an "
        "interpreter or a VM per instance), and at each count read each instance's USS and "
        "PSS, the PSS of the parent they share, and the drop of MemAvailable divided by the "
        "count."
    )


def write(doc: Document, exp: dict) -> None:
    if not doc.section(exp, "Host memory as instances grow", _setup(doc)):
        return
    s = ok_series(exp)
    if s:
        _figure(doc, s)
    rows = ["| environment | instances | host MiB each | PSS MiB each | USS MiB each "
            "| MemAvailable drop MiB each |",
            "| --- | --- | --- | --- | --- | --- |"]
    for v in s.values():
        for p in v["points"]:
            rows.append(f"| {v['label']} | {p['n']} | {fmt(p['per_instance_mib'])} | "
                        f"{fmt(p['pss_mib'])} | {fmt(p['uss_mib'])} | {fmt(p['host_mib'])} |")
    doc.out("\n".join(rows))
    text = []
    for v in s.values():
        if v.get("stopped"):
            text.append(f"The {v['label']} series {v['stopped']}.")
    for v in s.values():
        first, last = v["points"][0], v["points"][-1]
        if last["n"] > first["n"]:
            text.append(
                f"{v['label'][0].upper() + v['label'][1:]}: host memory per instance goes "
                f"from {fmt(first['per_instance_mib'])} MiB alone to "
                f"{fmt(last['per_instance_mib'])} MiB with {last['n']} held, while USS "
                f"stays near {fmt(last['uss_mib'])} MiB."
            )
    text.append(CLOSING)
    doc.out(" ".join(text))
    doc.failed_note(exp)


def _figure(doc: Document, s: dict) -> None:
    def draw(ax) -> None:
        for v in s.values():
            xs = [p["n"] for p in v["points"]]
            line, = ax.plot(xs, [p["per_instance_mib"] for p in v["points"]], "o-",
                            label=v["label"])
            ax.plot(xs, [p["uss_mib"] for p in v["points"]], "x--", color=line.get_color())
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("instances held at once")
        ax.set_ylabel("MiB per instance: host (o, solid), USS (x, dashed)")
        ax.legend(fontsize="small")

    doc.figure("scaling", "memory per instance as the number of instances grows", draw)
