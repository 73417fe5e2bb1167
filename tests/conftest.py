"""Lets `python3 -m pytest` find the package without an install (`make setup` installs it)."""

import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

import os  # noqa: E402

import pytest  # noqa: E402

HAVE_KVM = os.access("/dev/kvm", os.R_OK | os.W_OK)


def pytest_collection_modifyitems(config, items):
    if HAVE_KVM:
        return
    skip = pytest.mark.skip(reason="needs /dev/kvm, which this machine does not have")
    for item in items:
        if "kvm" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a machine with /dev/kvm, a skipped VM test is a failure."""
    outcome = yield
    report = outcome.get_result()
    if HAVE_KVM and report.skipped and "kvm" in item.keywords:
        report.outcome = "failed"
        report.longrepr = f"VM test skipped on a machine that has /dev/kvm: {report.longrepr}"


@pytest.fixture(scope="session")
def image_path():
    """The default image, baked once into the cache (~/.cache/usetl or $USETL_CACHE)."""
    from usetl.image import default_image

    return default_image()


@pytest.fixture(scope="session")
def image(image_path):
    from usetl.image import ImageArchive

    return ImageArchive.open(image_path)
