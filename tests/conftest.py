"""Lets `python3 -m pytest` find the package without an install (`make setup` installs it)."""

import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

import os  # noqa: E402

import pytest  # noqa: E402

from http_servers import LocalHttpServer  # noqa: E402

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


@pytest.fixture
def http_server():
    server = LocalHttpServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def module_http_server():
    """One server for a whole module (a USF's allow-list names its port)."""
    server = LocalHttpServer()
    yield server
    server.close()


@pytest.fixture
def other_http_server():
    """A second server, on another port (for what the allow-list does not cover)."""
    server = LocalHttpServer()
    yield server
    server.close()


@pytest.fixture
def closed_port():
    """A port on 127.0.0.1 nothing listens on: connecting is refused."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stalling_port():
    """A port on 127.0.0.1 that accepts connections (in the kernel's backlog) and never answers."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s.getsockname()[1]
    s.close()


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL (initdb/pg_ctl in a temporary directory), stopped at the end."""
    from usetl.cluster.servers import TemporaryPostgres

    with TemporaryPostgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server, request):
    """A fresh, empty database on the throwaway server, owned by the gateway's role."""
    import re

    import psycopg

    name = "t_" + re.sub(r"[^a-z0-9]", "_", request.node.name.lower())[:50]
    with psycopg.connect(postgres_server.url("usetl_admin", "postgres"), autocommit=True) as db:
        db.execute(f"DROP DATABASE IF EXISTS {name}")
        db.execute(f"CREATE DATABASE {name} OWNER usetl_gateway")
    return postgres_server.url("usetl_gateway", name)


@pytest.fixture(params=["sqlite", "postgres"])
def registry_where(request, tmp_path):
    """Where a registry lives: a SQLite file, or a fresh database on a throwaway PostgreSQL
    (the registry suites run on both)."""
    if request.param == "sqlite":
        return tmp_path / "registry.db"
    return request.getfixturevalue("postgres_url")
