"""Packaging at run time: importlib.metadata versions, files and entry points of the
function's requirements, importlib.resources data, pkgutil."""

import importlib.metadata as md
import importlib.resources
import pkgutil

import certifi
import requests


def handler(event, context):
    dists = sorted(d.metadata["Name"].lower() for d in md.distributions())
    req = md.requires("requests") or []
    files = [str(f) for f in (md.files("certifi") or []) if f.name == "cacert.pem"]
    bundle = importlib.resources.files("certifi").joinpath("cacert.pem").read_text()
    return {"requests": md.version("requests") == requests.__version__,
            "has_deps": {"urllib3", "idna", "certifi", "charset-normalizer"} <= set(dists),
            "requires_urllib3": any(r.startswith("urllib3") for r in req),
            "files": files, "bundle": bundle.count("BEGIN CERTIFICATE") > 50,
            "where": certifi.where().endswith("cacert.pem"),
            "pkgutil": len(pkgutil.get_data("certifi", "cacert.pem")) == len(bundle.encode()),
            "modules": "adapters" in {m.name for m in pkgutil.iter_modules(requests.__path__)}}
