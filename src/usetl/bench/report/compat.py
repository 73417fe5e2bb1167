"""The compatibility section: which modules import and pass a smoke test in a USF."""

from __future__ import annotations

from usetl.bench.report.document import Document

SETUP = (
    "In this experiment we show which stdlib modules and packages a function can use "
    "in a USF. We set up this experiment as follows: for each module a USF imports it "
    "and runs a smoke test; a host process runs the same check beside it. Modules the "
    "image does not carry come from the module store (installed once with pip, shown "
    "to the guest read-only, with the system libraries the store copied beside them "
    "loaded first, as the platform loads a function's requirements)."
)


def write(doc: Document, exp: dict) -> None:
    if not doc.section(exp, "Compatibility", SETUP):
        return
    modules = exp["modules"]
    rows = ["| module | from | USF | host | USF error |", "| --- | --- | --- | --- | --- |"]
    for name, m in modules.items():
        u, h = m["usf"], m["host"]
        rows.append(f"| `{name}` | {m.get('source', 'image')} | "
                    f"{'pass' if u['ok'] else 'FAIL'} | {'pass' if h['ok'] else 'FAIL'} | "
                    f"{u['error'].replace('|', '/')} |")
    doc.out("\n".join(rows))
    both = [n for n, m in modules.items() if not m["usf"]["ok"] and not m["host"]["ok"]]
    only = [n for n, m in modules.items() if not m["usf"]["ok"] and m["host"]["ok"]]
    host_only = [n for n, m in modules.items() if m["usf"]["ok"] and not m["host"]["ok"]]
    text = [f"{exp['usf_passed']} of {exp['total']} modules pass in a USF and "
            f"{exp['host_passed']} on the host."]
    if both:
        text.append("Missing on the host as well, so not a USF limitation: "
                    + ", ".join(f"`{n}`" for n in both) + ".")
    if only:
        text.append("Failing only in the USF: " + ", ".join(f"`{n}`" for n in only) + ".")
    if host_only:
        text.append("Failing only on the host: " + ", ".join(
            f"`{n}` ({modules[n]['host']['error']})" for n in host_only) + ".")
    text.append("The guest runs the host's own CPython and extension modules, so what "
                "imports on the host imports in a USF unless it needs a file the image does "
                "not carry or a syscall the monitor does not serve; the error column names "
                "which.")
    doc.out(" ".join(text))


def summary(doc: Document) -> list[str]:
    """The summary's sentence on how many modules pass."""
    cp = doc.exp("compat")
    if not cp:
        return []
    return [
        f"Of {cp['total']} stdlib modules and packages checked, {cp['usf_passed']} import "
        f"and pass their smoke test in a USF ({cp['host_passed']} on the host)."
    ]
