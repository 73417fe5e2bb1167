"""The benchmark layer's errors: a wrong result, a missing tool, a feature not landed."""

from usetl.errors import UsetlError


class BenchError(UsetlError):
    """An environment gave a wrong result or could not be set up."""


class FeatureMissing(BenchError):
    """A part of usetl an experiment measures has not landed yet."""


def reason(e: BaseException) -> str:
    """An exception as one line for the results: its type and first line."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]
