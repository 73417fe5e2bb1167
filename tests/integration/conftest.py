"""Fixtures the VM tests share."""

import pytest

from usetl.hyperfork import Template
from usetl.usf import start_usf


@pytest.fixture(scope="module")
def usf(image):
    """One started USF shared by a module's tests (a module may define its own instead)."""
    u = start_usf(image)
    yield u
    u.close()


@pytest.fixture(scope="module")
def template(image_path):
    """A jailed base template shared by a module's tests: its clones' guest memory is
    copy-on-write and their monitors run under the jail (seccomp: no connect), as the
    platform's do."""
    t = Template.start(image_path)
    yield t
    t.close()
