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
