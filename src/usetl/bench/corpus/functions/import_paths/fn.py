"""Import machinery that plugin hosts and vendored code use: a namespace package split
over two directories, a .pth file processed by site.addsitedir (a path line and an import
line), modules and package data imported from a zip built in /tmp (zipimport,
importlib.resources), a meta path finder serving generated modules, and reloads."""

import importlib
import importlib.abc
import importlib.machinery
import importlib.resources
import os
import site
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))


class Generated(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Modules named gen_<n> whose code is made on import."""

    def find_spec(self, name, path, target=None):
        if name.startswith("gen_"):
            return importlib.machinery.ModuleSpec(name, self, origin="generated")
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        n = int(module.__name__[4:])
        exec(f"VALUE = {n} * {n}", module.__dict__)


def namespace():
    for d in ("vendor_a", "vendor_b"):
        sys.path.append(os.path.join(HERE, d))
    import acme
    import acme.billing
    import acme.shipping

    return {"paths": sorted(os.path.basename(os.path.dirname(p)) for p in acme.__path__),
            "file": getattr(acme, "__file__", None), "total": acme.billing.total([(2, 3), (1, 4)]),
            "zone": acme.shipping.zone("US"),
            "spec_origin": acme.__spec__.origin}


def pth():
    before = set(sys.path)
    site.addsitedir(os.path.join(HERE, "site"))
    added = sorted(os.path.basename(p) for p in set(sys.path) - before)
    import extras_mod

    return {"added": added, "greeting": extras_mod.GREETING,
            "import_line": os.environ.get("ACME_PTH_RAN")}


def zipped(tmp):
    archive = os.path.join(tmp, "bundle.zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zpkg/__init__.py", "from .core import double\n")
        z.writestr("zpkg/core.py", "def double(x):\n    return 2 * x\n")
        z.writestr("zpkg/data/rates.csv", "eur,1.0\nusd,1.09\n")
        z.writestr("zsingle.py", "NAME = __name__\nFILE = __file__\n")
    sys.path.insert(0, archive)
    import zpkg
    import zsingle

    rates = importlib.resources.files("zpkg").joinpath("data/rates.csv").read_text()
    loader = type(zpkg.__loader__).__name__
    file = os.path.relpath(zsingle.FILE, tmp)
    sys.path.remove(archive)
    return {"double": zpkg.double(21), "rates": rates.splitlines(), "loader": loader,
            "file": file, "name": zsingle.NAME}


def reload_from(tmp):
    path = os.path.join(tmp, "settings_mod.py")
    with open(path, "w") as f:
        f.write("LEVEL = 1\n")
    sys.path.insert(0, tmp)
    mod = importlib.import_module("settings_mod")
    first = mod.LEVEL
    with open(path, "w") as f:
        f.write("LEVEL = 2  # changed\n")
    importlib.invalidate_caches()
    second = importlib.reload(mod).LEVEL  # the source grew, so its cached pyc is stale
    sys.path.remove(tmp)
    return [first, second, os.path.basename(os.path.dirname(mod.__cached__))]


def handler(event, context):
    sys.meta_path.append(Generated())
    generated = [importlib.import_module(f"gen_{n}").VALUE for n in event["squares"]]
    with tempfile.TemporaryDirectory() as tmp:
        return {"namespace": namespace(), "pth": pth(), "zip": zipped(tmp),
                "generated": generated, "reload": reload_from(tmp)}
