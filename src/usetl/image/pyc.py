"""Precompiling sources for the guest: hash-based .pyc files that are never checked.

The guest's filesystem is read-only and its mtimes are whatever the image
says, so timestamp-based pycs would be useless there: UNCHECKED_HASH pycs
(PEP 552) are used as they are, and CPython never has to compile stdlib
modules inside the VM (which would also mean writing files it cannot write).
"""

from __future__ import annotations

import importlib.util
import marshal

from usetl.abi.archive import pyc_of

# PEP 552 flags word: bit 0 = hash-based, bit 1 = check the source (left clear).
UNCHECKED_HASH_FLAGS = (0b01).to_bytes(4, "little")
PYC_HEADER_SIZE = 16


def pyc_path(py_path: str) -> str:
    """Where CPython looks for a module's pyc: ``DIR/__pycache__/NAME.<cache_tag>.pyc``.

    Computed here rather than with importlib.util.cache_from_source, which
    would follow the builder's own PYTHONPYCACHEPREFIX.
    """
    return pyc_of(py_path)


def compile_pyc(source: bytes, display_path: str) -> bytes:
    """The pyc bytes for a module; raises SyntaxError or ValueError for bad source."""
    code = compile(source, display_path, "exec", dont_inherit=True, optimize=0)
    return (
        importlib.util.MAGIC_NUMBER
        + UNCHECKED_HASH_FLAGS
        + importlib.util.source_hash(source)
        + marshal.dumps(code)
    )


def source_hash_of_pyc(pyc: bytes) -> bytes:
    """The source hash a hash-based pyc was made from."""
    return pyc[8:PYC_HEADER_SIZE]
