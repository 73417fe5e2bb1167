"""The imports section: import time of real packages, a fresh USF against a fresh host process."""

from __future__ import annotations

from usetl.bench.report.document import Document, fmt


def write(doc: Document, exp: dict) -> None:
    setup = (
        "In this experiment we show what an import costs in a USF. We set up this experiment "
        "as follows: each package is installed by the module store, as a deployed function's "
        "requirement, and imported once by a handler in a fresh USF set up as the KVM backend "
        "sets up a function, in two ways: with the entries as host directories (every import "
        "a storm of path syscalls, each a VM exit; they hold no pycs, so the guest compiles "
        "them) and packed, imported from the module region by usetl.importer; against a "
        "fresh host process (`python -I -S`, pycs cached). We show the medians of "
        f"{exp.get('runs', 3)} runs, interleaved."
    )
    if not doc.section(exp, "Imports from memory", setup):
        return
    rows = ["| module | host ms | USF, importer ms | × host | USF, directories ms | × host "
            "| exits (importer / directories) | path syscalls (importer / directories) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for module, r in exp["packages"].items():
        imp, dirs = r["importer"], r["directories"]
        rows.append(
            f"| {module} | {fmt(r['host']['ms'])} | {fmt(imp['ms'])} "
            f"| {doc.d(f'imports.{module}.ratio', r['ratio'])} | {fmt(dirs['ms'])} "
            f"| {doc.d(f'imports.{module}.ratio_directories', r['ratio_directories'])} "
            f"| {fmt(imp['syscalls'])} / {fmt(dirs['syscalls'])} "
            f"| {fmt(imp['path_syscalls'])} / {fmt(dirs['path_syscalls'])} |")
    doc.out("\n".join(rows))
    doc.out(
        "Through the importer a module costs no syscall: what exits remain are ld.so's "
        "loading of extension modules (open, mmap, a copy of the library's bytes) and the "
        "files packages open by path, served from the same archive."
    )
