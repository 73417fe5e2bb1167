"""The real-handlers section: six ETL handlers in USFs and in host processes, side by side."""

from __future__ import annotations

from usetl.bench import handlers
from usetl.bench.report.document import Document


def write(doc: Document, exp: dict) -> None:
    runs = exp.get("runs", {})
    setup = (
        "In this experiment we show how real ETL handlers written for usetl run in a USF "
        "against the same code in a host process. We set up this experiment as follows: "
        "each handler is deployed on the platform (KVM backend, requirements from the module "
        "store; with its event as the deploy's warm-up where it does lazy work on its first "
        f"call) and invoked {runs.get('warm', '')} times on rolled-back instances, alternating "
        "with calls in one host process that already ran it once; then "
        f"{runs.get('clones', '')} new clones are forked from its template and invoked once, "
        f"and {runs.get('colds', '')} new host processes import and call it once. Inputs come "
        "from an HTTP server and moto's S3 server on the loopback interface, each a process "
        "of its own."
    )
    if not doc.section(exp, "Real ETL handlers", setup):
        return
    doc.out(handlers.format_report(exp))
