"""Plugin discovery as frameworks do it at start-up: importlib.metadata's entry points of a
distribution shipped in the function's code (groups, selection by name, loading), its
metadata and files, and pluggy's plugin manager loading the same entry points and calling
a hook across them."""

import importlib.metadata as md

import pluggy

hookspec = pluggy.HookspecMarker("acme")


class Spec:
    @hookspec
    def transform(self, text):
        """Each plugin's version of the text."""


def handler(event, context):
    groups = md.entry_points()
    exporters = groups.select(group="acme.exporters")
    rows = event["rows"]
    exported = {ep.name: ep.load()(rows) for ep in sorted(exporters, key=lambda e: e.name)}
    pm = pluggy.PluginManager("acme")
    pm.add_hookspecs(Spec)
    loaded = pm.load_setuptools_entrypoints("acme")
    results = sorted(pm.hook.transform(text=event["text"]))
    dist = md.distribution("acme-plugins")
    return {"groups": sorted(g for g in groups.groups if g.startswith("acme")),
            "names": sorted(ep.name for ep in groups.select(group="acme")),
            "exported": exported, "loaded": loaded, "results": results,
            "plugins": sorted(name for name, _ in pm.list_name_plugin()),
            "version": md.version("acme-plugins"), "requires": md.requires("acme-plugins"),
            "files": sorted(str(f) for f in dist.files),
            "pluggy": md.version("pluggy") == pluggy.__version__,
            "by_name": groups.select(group="acme.exporters", name="csv")["csv"].value}
