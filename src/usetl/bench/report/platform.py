"""The platform section: invocations per second and latency under load, per API and backend."""

from __future__ import annotations

from usetl.bench.report.document import Document, fmt, ok_series

BACKENDS = ("kvm", "process")


def _setup(doc: Document) -> str:
    return (
        "In this experiment we show the invocations per second the platform sustains and "
        "the latency each sees under load, for a no-op function and the demo ETL function "
        "(etl.get a CSV from an HTTP server on the loopback interface, filter and "
        "aggregate it, post the JSON result back), through the HTTP API and the Python API, "
        "on each backend. We set up this experiment as follows (it is `usetl bench "
        "platform`): for each backend and API a fresh platform (a `usetl serve` process on "
        "the loopback interface, or a `Platform` object in the benchmark process) deploys "
        f"both functions; {doc.config['load_concurrency']} clients invoke back to "
        f"back for {fmt(doc.config['load_warmup_s'])} untimed seconds, so the pool "
        f"grows, then for {fmt(doc.config['load_seconds'])} timed seconds. "
        "Throughput is completed invocations over the timed window; a serial pass with one "
        "client gives the warm latency. Each client is a thread with its own keep-alive "
        "HTTP/1.1 connection (http.client: httpx's Python costs more per request than the "
        "bare endpoint below). In the same run the same load client drives a bare "
        "ASGI endpoint that answers a constant on the API's own server stack (the ceiling "
        "of the HTTP path), and a clone of the no-op's function template is invoked after "
        "each rollback (the recycled request) from the benchmark process."
    )


RECYCLED = "recycled_kvm_noop"  # timed alone, one caller: not a loaded series


def write(doc: Document, exp: dict) -> None:
    if not doc.section(exp, "Platform under load", _setup(doc)):
        return
    s = ok_series(exp)
    names = [n for n in exp["series"] if n != RECYCLED]
    _figure(doc, exp, s, names)
    rows = ["| API, backend, function | per second | median ms | p99 ms | errors "
            "| serial median ms |", "| --- | --- | --- | --- | --- | --- |"]
    for n in names:
        v = exp["series"][n]
        rows.append(f"| {v['label']} | {fmt(v['per_second'])} | {fmt(v['ms']['median'])} | "
                    f"{fmt(v['ms']['p99'])} | {v['errors']} | "
                    f"{fmt(v['serial_ms']['median'])} |" if n in s
                    else f"| {v['label']} | failed | | | | |")
    doc.out("\n".join(rows))
    if s:
        doc.out(" ".join(_text(doc, s) + _path_text(doc, s)))
    doc.failed_note(exp)


def _path_text(doc: Document, s: dict) -> list[str]:
    """The HTTP path against the recycled request it carries and the ceiling of its stack."""
    h, r, c = s.get("http_kvm_noop"), s.get(RECYCLED), s.get("http_ceiling")
    text = []
    if h and r:
        ratio = doc.d("platform.http_serial_over_recycled",
                      h["serial_ms"]["median"] / r["ms"]["median"])
        text.append(f"A warm no-op through HTTP with one client takes {ratio}× the "
                    f"{fmt(r['ms']['median'])} ms of the recycled request it carries.")
    if h and c:
        ratio = doc.d("platform.http_over_ceiling", h["per_second"] / c["per_second"])
        text.append(f"Under load HTTP reaches {ratio} of the "
                    f"{fmt(c['per_second'])} requests per second the bare endpoint answers.")
    return text


def _figure(doc: Document, exp: dict, s: dict, names: list[str]) -> None:
    def draw(ax) -> None:
        ax.barh([exp["series"][n]["label"] for n in names],
                [s[n]["per_second"] if n in s else 0 for n in names])
        ax.invert_yaxis()
        ax.set_xlabel("invocations per second")

    doc.figure("platform", "sustained invocations per second", draw)


def _text(doc: Document, s: dict) -> list[str]:
    best = max((n for n in s if n != RECYCLED), key=lambda n: s[n]["per_second"])
    text = [f"The highest throughput, {fmt(s[best]['per_second'])} invocations per "
            f"second at {fmt(s[best]['ms']['median'])} ms median latency, is the "
            f"{s[best]['label']}."]
    for backend in BACKENDS:
        p = s.get(f"python_{backend}_noop")
        if p:
            text.append(f"A warm no-op through the Python API alone (one client) takes "
                        f"{fmt(p['serial_ms']['median'])} ms at the median on the "
                        f"{backend} backend.")
    for backend in BACKENDS:
        text += _backend_text(doc, s, backend)
    pairs = [(s[f"python_{b}_noop"], s[f"python_{b}_etl"]) for b in BACKENDS
             if f"python_{b}_noop" in s and f"python_{b}_etl" in s]
    if pairs and all(t["ms"]["median"] < 2 * n["ms"]["median"] for n, t in pairs):
        text.append("The function's own work is the smaller part of an invocation "
                    "here: the platform's path sets the throughput of small functions.")
    return text


def _backend_text(doc: Document, s: dict, backend: str) -> list[str]:
    """On one backend: what HTTP adds to the Python API, and what the ETL work adds."""
    text = []
    h, p = s.get(f"http_{backend}_noop"), s.get(f"python_{backend}_noop")
    if h and p and h["ms"]["median"] <= p["ms"]["median"]:
        text.append(
            f"With the {backend} backend, HTTP shows no overhead over the Python "
            f"API in this run ({fmt(h['ms']['median'])} against "
            f"{fmt(p['ms']['median'])} ms at the median): the difference is within "
            "the noise of the run."
        )
    elif h and p:
        extra = doc.d(f"platform.http_minus_python_{backend}_ms",
                      h["ms"]["median"] - p["ms"]["median"])
        text.append(
            f"With the {backend} backend, HTTP adds {extra} ms to a no-op's median "
            f"({fmt(h['ms']['median'])} against {fmt(p['ms']['median'])} ms): "
            "a loopback connection, request parsing and JSON encoding in the "
            "server, which shares the machine's cores with the sandboxes."
        )
    n, t = s.get(f"python_{backend}_noop"), s.get(f"python_{backend}_etl")
    if n and t and t["ms"]["median"] > n["ms"]["median"]:
        extra = doc.d(f"platform.etl_minus_noop_{backend}_ms",
                      t["ms"]["median"] - n["ms"]["median"])
        text.append(f"The ETL function costs {extra} ms more than the no-op "
                    f"through the Python API ({backend} backend): a GET and a POST "
                    "carried out by the host, and the CSV parsed and aggregated "
                    "inside the sandbox.")
    return text


def summary(doc: Document) -> list[str]:
    """The summary's sentence on throughput through the HTTP API."""
    pl = doc.exp("platform")
    h = ok_series(pl).get("http_kvm_noop") if pl else None
    if not h:
        return []
    return [
        f"Through its HTTP API on the KVM backend the platform sustains "
        f"{fmt(h['per_second'])} no-op invocations per second at "
        f"{fmt(h['ms']['median'])} ms median latency on this machine."
    ]
