"""The platform under load, as `usetl bench platform` (bench/sustained.py) measures it.

For each backend (KVM, process), API (HTTP through a `usetl serve` process,
Python through a `Platform` object) and function (a no-op, and the demo ETL
function: etl.get a CSV from a local HTTP server, aggregate, post JSON back),
`load_concurrency` clients invoke back to back for `load_warmup_s` untimed
seconds, then for `load_seconds` timed ones; a serial pass with one client
gives the warm latency. Beside them: the same load against a bare ASGI
endpoint on the API's server stack (the ceiling), and a recycled no-op in a
clone (KVM backend). This module turns those numbers into the report's
series, each ok or failed with its reason.
"""

from __future__ import annotations

from usetl.bench.config import BenchConfig
from usetl.bench.errors import FeatureMissing

APIS = {"http": "HTTP", "python": "Python"}
FUNCTIONS = {"noop": "no-op", "etl": "demo ETL function"}


def run(cfg: BenchConfig, ctx) -> dict:
    try:
        from usetl.bench import sustained
    except ImportError as e:
        raise FeatureMissing(f"the platform (issue 5) has not landed: {e}") from e
    measured = sustained.run(list(cfg.platform_backends), cfg.load_concurrency,
                             cfg.load_seconds, cfg.load_warmup_s, say=ctx.say)["series"]
    series = {}
    ceiling = measured.get("http/ceiling", {"failed": "not measured"})
    series["http_ceiling"] = _series(ceiling, "HTTP, bare ASGI endpoint (the ceiling)")
    if "kvm" in cfg.platform_backends:
        recycled = measured.get("recycled/kvm/noop", {"failed": "not measured"})
        series["recycled_kvm_noop"] = (
            {"status": "failed", "label": "recycled no-op in a clone",
             "reason": recycled["failed"][:300]} if "failed" in recycled else
            {"status": "ok", "label": "recycled no-op in a clone", "ms": recycled["ms"]})
    for api, api_label in APIS.items():
        for backend in cfg.platform_backends:
            for fn, fn_label in FUNCTIONS.items():
                label = f"{api_label} API, {backend} backend, {fn_label}"
                # A whole API and backend that failed is one entry without the function.
                v = measured.get(f"{api}/{backend}/{fn}") or measured.get(f"{api}/{backend}")
                if v is None or "failed" in v:
                    reason = v["failed"] if v else "not measured"
                    series[f"{api}_{backend}_{fn}"] = {"status": "failed", "label": label,
                                                        "reason": reason[:300]}
                    continue
                series[f"{api}_{backend}_{fn}"] = _series(v, label)
    return {"series": series}


def _series(measured: dict, label: str) -> dict:
    """One loaded series (sustained.measure's numbers) in the report's form."""
    if "failed" in measured:
        return {"status": "failed", "label": label, "reason": measured["failed"][:300]}
    load = measured["load"]
    return {"status": "ok", "label": label, "ms": load["ms"], "per_second": load["per_second"],
            "errors": load["errors"], "first_error": load["first_error"],
            "serial_ms": measured["serial_ms"]}
