"""Plugins the handler's own distribution declares through entry points."""

import pluggy

hookimpl = pluggy.HookimplMarker("acme")


class Upper:
    @hookimpl
    def transform(self, text):
        return text.upper()


class Reverse:
    @hookimpl
    def transform(self, text):
        return text[::-1]


# pluggy registers what an entry point names: instances, whose hooks are bound
upper = Upper()
reverse = Reverse()


def csv_exporter(rows):
    return "\n".join(",".join(map(str, r)) for r in rows)


def json_exporter(rows):
    import json

    return json.dumps(rows)
