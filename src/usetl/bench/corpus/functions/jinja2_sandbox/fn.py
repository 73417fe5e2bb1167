"""User-supplied templates rendered safely, as CMS and notification handlers do: Jinja2's
SandboxedEnvironment refusing unsafe attribute access, an immutable sandbox refusing
mutation, autoescaping, custom filters, templates from the code directory with a
bytecode cache in /tmp, and native types."""

import os
import tempfile

from jinja2 import Environment, FileSystemBytecodeCache, FileSystemLoader, select_autoescape
from jinja2.nativetypes import NativeEnvironment
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment, SecurityError

HERE = os.path.dirname(os.path.abspath(__file__))
UNSAFE = ["{{ ''.__class__.__mro__[1].__subclasses__() }}",
          "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
          "{{ self._TemplateReference__context }}",
          "{{ (lambda: 1).__code__ }}"]


def sandboxed(user_templates):
    env = SandboxedEnvironment(autoescape=True)
    out = []
    for source in UNSAFE + user_templates:
        try:
            out.append(["ok", env.from_string(source).render(name="<b>x</b>", items=[3, 1, 2])])
        except SecurityError as e:
            out.append(["security", type(e).__name__])
        except Exception as e:
            out.append(["error", type(e).__name__])
    immutable = ImmutableSandboxedEnvironment()
    try:
        immutable.from_string("{{ items.append(4) }}").render(items=[1])
        mutated = "allowed"
    except SecurityError:
        mutated = "refused"
    return out, mutated


def cached_files(rows, cache_dir):
    def make_env():
        env = Environment(loader=FileSystemLoader(os.path.join(HERE, "templates")),
                          autoescape=select_autoescape(["html"]),
                          bytecode_cache=FileSystemBytecodeCache(cache_dir), trim_blocks=True,
                          lstrip_blocks=True)
        env.filters["money"] = lambda v: f"€{v:,.2f}"
        return env

    context = {"user": {"name": "Ada & Co"}, "rows": rows, "note": "<script>x</script>"}
    first = make_env().get_template("report.html").render(context)
    cached = len(os.listdir(cache_dir))  # names hash the path, so only the count
    second = make_env().get_template("report.html").render(context)  # from the cache
    return {"html": first.split("\n")[:4], "same": first == second, "cache": cached,
            "escaped": "&lt;script&gt;" in first, "lines": first.count("<tr>")}


def handler(event, context):
    results, mutated = sandboxed(event["templates"])
    with tempfile.TemporaryDirectory() as cache:
        files = cached_files(event["rows"], cache)
    native = NativeEnvironment().from_string("{{ a + b }}").render(a=[1, 2], b=[3])
    return {"sandbox": results, "immutable": mutated, "files": files, "native": native}
