"""Fixtures the VM tests share."""

import pytest

from usetl.usf import start_usf


@pytest.fixture(scope="module")
def usf(image):
    """One started USF shared by a module's tests (a module may define its own instead)."""
    u = start_usf(image)
    yield u
    u.close()
