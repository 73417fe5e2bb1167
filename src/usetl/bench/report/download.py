"""The download section: etl.get, the socket path and the host baselines (Figure 5)."""

from __future__ import annotations

from usetl.bench.report.document import Document, failed_series, fmt, ok_series

PATHS = ("usf_etl", "usf_socket", "host_shm", "host_disk")


def _setup(doc: Document) -> str:
    return (
        "In this experiment we show how fast a function gets its input from the network "
        "by each path (the paper's Figure 5). We set up this experiment as follows: an HTTP "
        "server on the loopback interface serves objects of "
        + ", ".join(map(str, doc.config["download_sizes_mib"]))
        + " MiB; each is downloaded "
        f"{doc.config['download_runs']} times by etl.get in a USF, by urllib in a USF "
        "over the socket path, by a host client into /dev/shm, and by a host client to a "
        "file on disk with fsync."
    )


def write(doc: Document, exp: dict) -> None:
    if not doc.section(exp, "Download", _setup(doc)):
        return
    s = ok_series(exp)
    order = [n for n in PATHS if n in exp["series"]]
    sizes = doc.config["download_sizes_mib"]
    _figure(doc, exp, s, order, sizes)
    rows = ["| path | " + " | ".join(f"{m} MiB (ms)" for m in sizes) + " |",
            "| --- |" + " --- |" * len(sizes)]
    for n in order:
        v = exp["series"][n]
        if n in s:
            cells = [f"{fmt(p['ms']['mean'])} ± {fmt(p['ms']['stdev'])}" for p in v["points"]]
        else:
            cells = ["failed"] * len(sizes)
        rows.append(f"| {v['label']} | " + " | ".join(cells) + " |")
    doc.out("\n".join(rows))
    doc.out(" ".join(_host_text(s) + _usf_text(doc, s)))
    doc.failed_note(exp)


def _figure(doc: Document, exp: dict, s: dict, order: list[str], sizes: list) -> None:
    def draw(ax) -> None:
        import numpy as np

        x = np.arange(len(sizes))
        width = 0.8 / max(len(order), 1)
        for i, n in enumerate(order):
            if n not in s:
                ax.bar([0], [0], width, label=exp["series"][n]["label"] + " (failed)")
                continue
            pts = {p["mib"]: p["ms"] for p in s[n]["points"]}
            ax.bar(x + (i - (len(order) - 1) / 2) * width,
                   [pts[m]["mean"] for m in sizes], width,
                   yerr=[pts[m]["stdev"] for m in sizes], label=exp["series"][n]["label"],
                   capsize=2)
        ax.set_xticks(x, [f"{m} MiB" for m in sizes])
        ax.set_yscale("log")
        ax.set_ylabel("download time (ms, log): mean ± stdev")
        ax.legend(fontsize="small")

    doc.figure("download", "download time by object size and path", draw)


def _host_text(s: dict) -> list[str]:
    text = []
    if "host_shm" in s:
        last = s["host_shm"]["points"][-1]
        text.append(f"A host client reaches {fmt(last['mib_per_s'])} MiB/s into /dev/shm at "
                    f"{last['mib']} MiB: the loopback and a memory copy bound it.")
    if "host_disk" in s:
        last = s["host_disk"]["points"][-1]
        shm = s.get("host_shm", {}).get("points", [{}])[-1].get("mib_per_s")
        if shm is not None and last["mib_per_s"] < shm:
            text.append(f"To disk with fsync it reaches {fmt(last['mib_per_s'])} MiB/s, the "
                        "difference being the flush to the device.")
        else:
            text.append(f"To disk with fsync it reaches {fmt(last['mib_per_s'])} MiB/s, no "
                        "slower than /dev/shm in this run: the device absorbs the flush "
                        "faster than the run-to-run spread.")
    return text


def _usf_text(doc: Document, s: dict) -> list[str]:
    text = []
    if "usf_etl" in s and "host_shm" in s:
        e, h = s["usf_etl"]["points"][-1], s["host_shm"]["points"][-1]
        ratio = e["ms"]["mean"] / h["ms"]["mean"]
        shown = doc.d("download.etl_vs_shm", ratio)
        if ratio <= 1.1:
            text.append(
                f"etl.get matches the host's download to /dev/shm ({shown}× its time at "
                f"{e['mib']} MiB): the host streams the body straight into the USF's host "
                "region, and the guest pays one VM exit per request, not one per packet."
            )
        else:
            text.append(
                f"etl.get takes {shown}× the host's time at {e['mib']} MiB. It costs the "
                "guest one VM exit per request, whatever the size, so the gap is not exits: "
                "it is the monitor's own HTTP client streaming the body into the USF's host "
                "region, against the host baseline's plain socket reads into a file."
            )
    if "usf_socket" in s and "usf_etl" in s:
        e, k = s["usf_etl"]["points"][-1], s["usf_socket"]["points"][-1]
        text.append(
            f"urllib over the socket path takes "
            f"{doc.d('download.socket_vs_etl', k['ms']['mean'] / e['ms']['mean'])}× "
            "the time of etl.get: every recv is an exit and a copy through the monitor."
        )
    if not ({"usf_etl", "usf_socket"} & set(s)):
        text.append("The USF paths failed in this run (see below), so only the host "
                    "baselines are measured; the comparison the paper makes awaits them.")
    return text


def summary(doc: Document) -> list[str]:
    """The summary's sentence on etl.get against the host and the socket path."""
    dl = doc.exp("download")
    if not dl:
        return []
    s = ok_series(dl)
    if "usf_etl" in s and "host_shm" in s:
        e, h = s["usf_etl"]["points"][-1], s["host_shm"]["points"][-1]
        text = (f"At {e['mib']} MiB, etl.get takes "
                f"{doc.d('summary.etl_vs_shm', e['ms']['mean'] / h['ms']['mean'])}× "
                "the time of a host download to /dev/shm")
        if "usf_socket" in s:
            k = s["usf_socket"]["points"][-1]
            text += (", and the socket path "
                     f"{doc.d('summary.socket_vs_etl', k['ms']['mean'] / e['ms']['mean'])}"
                     "× the time of etl.get")
        return [text + "."]
    if failed_series(dl):
        return ["The in-USF download paths failed in this run."]
    return []
