"""Function code written into tmp_path for the sandbox tests (imported, not a conftest)."""

import textwrap
from pathlib import Path


def write_function(directory: Path, source: str, name: str = "fn.py") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(textwrap.dedent(source))
    # The sandbox's unprivileged user reads it through the test's tmp_path.
    for d in [directory, *directory.parents]:
        if str(d) in ("/", "/tmp"):
            break
        d.chmod(d.stat().st_mode | 0o755)
    return directory


def write_wheel(directory: Path, name: str, version: str, files: dict[str, str],
                requires: tuple[str, ...] = ()) -> Path:
    """A pure-Python wheel written by hand into `directory` (no build backend, no index)."""
    import base64
    import hashlib
    import zipfile

    info = f"{name}-{version}.dist-info"
    metadata = "".join([f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
                        *(f"Requires-Dist: {r}\n" for r in requires)])
    members = {**{path: textwrap.dedent(text) for path, text in files.items()},
               f"{info}/METADATA": metadata,
               f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: usetl-tests\n"
                                "Root-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, text in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    members[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in members.items():
            z.writestr(path, text)
    return wheel


# A handler whose first call imports a module lazily, and counts its calls (warm-up tests).
LAZY = """
import sys
CALLS = 0
def handler(event, context):
    global CALLS
    CALLS += 1
    before = "fractions" in sys.modules
    import fractions
    print("call", CALLS, context.request_id)
    if event == "fail":
        raise ValueError("not this event")
    return {"calls": CALLS, "imported_before": before}
"""
