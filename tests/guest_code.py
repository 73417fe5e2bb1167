"""Running a snippet of Python in a started USF, as the integration tests do."""

import textwrap


def run_ok(usf, code: str, timeout: float = 30):
    """The result of `code` (dedented) run in the USF's agent; it must not have raised."""
    r = usf.run_code(textwrap.dedent(code), timeout=timeout)
    assert r.error is None, (r.error, r.stderr)
    return r


def run_lines(usf, code: str, timeout: float = 30) -> list[str]:
    """What `code` printed, line by line."""
    return run_ok(usf, code, timeout).stdout.splitlines()
