"""Packaging through the real server: sdists built in the sandbox, hashes, code archives."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
import textwrap
from pathlib import Path

import httpx
import pytest
from setuptools import build_meta

from usetl.api.client import ApiError, Client, read_requirements
from usetl.api.launcher import ServerProcess

USES_SDIST = """
import sdonly
def handler(event, context):
    return sdonly.hello()
"""
READS_DATA = """
import os
def handler(event, context):
    return os.path.getsize("data.bin")
"""


def build_sdist(root: Path) -> Path:
    """A pure-Python package published only as an sdist, built here with setuptools."""
    project = root / "sdonly-src"
    (project / "sdonly").mkdir(parents=True)
    (project / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "sdonly"
        version = "1.0"
    """))
    (project / "sdonly" / "__init__.py").write_text(
        "def hello():\n    return 'built from an sdist'\n")
    dist = root / "index"
    dist.mkdir()
    cwd = os.getcwd()
    os.chdir(project)
    try:
        name = build_meta.build_sdist(str(dist))
    finally:
        os.chdir(cwd)
    assert not list(dist.glob("*.whl"))
    return dist / name


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    # The index directory is read by the packaging sandbox's unprivileged user.
    index_root = Path(tempfile.mkdtemp(prefix="usetl-test-index-"))
    index_root.chmod(0o755)
    sdist = build_sdist(index_root)
    for path in (index_root / "index", sdist):
        path.chmod(0o755 if path.is_dir() else 0o644)
    root = tmp_path_factory.mktemp("packaging")
    server = ServerProcess(root / "state", root / "modules", "process",
                           "--wheelhouse", str(index_root / "index")).start()
    client = Client(server.url, server.admin_token)
    yield server, client, sdist, root
    client.close()
    server.stop()


def deploy(client: Client, tmp: Path, name: str, source: str, **options) -> tuple[dict, list]:
    code = tmp / name
    code.mkdir(exist_ok=True)
    (code / "main.py").write_text(textwrap.dedent(source))
    phases: list[str] = []
    version = client.deploy(name, code, progress=lambda phase, done, total: phases.append(phase),
                            **options)
    return version, phases


def code_dirs(root: Path, name: str) -> list[str]:
    return sorted(p.name for p in (root / "state" / "code").glob(f"*/{name}/*"))


def test_an_sdist_only_package_is_built_in_the_sandbox_deploys_and_imports(served, tmp_path):
    _, client, sdist, root = served
    version, phases = deploy(client, tmp_path, "uses-sdist", USES_SDIST, requirements=["sdonly"])
    assert version["requirements"] == ["sdonly"]
    assert {"upload", "resolve", "build", "install", "template"} <= set(phases)
    assert client.invoke("uses-sdist")["result"] == "built from an sdist"
    # The built wheel is kept by the sdist's sha256: a later deploy does not build it again.
    built = root / "modules" / ".built-wheels" / hashlib.sha256(sdist.read_bytes()).hexdigest()
    assert [w.name for w in built.iterdir()] == ["sdonly-1.0-py3-none-any.whl"]


def test_a_requirements_file_with_a_wrong_hash_is_refused(served, tmp_path):
    _, client, sdist, root = served
    right = hashlib.sha256(sdist.read_bytes()).hexdigest()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"-r more.txt\n# pinned\nsdonly==1.0 \\\n    --hash=sha256:{right}\n")
    (tmp_path / "more.txt").write_text("")
    assert read_requirements(requirements) == [f"sdonly==1.0 --hash=sha256:{right}"]
    deployed, _ = deploy(client, tmp_path, "hashed", USES_SDIST,
                         requirements=read_requirements(requirements))
    before = code_dirs(root, "hashed")
    wrong = f"sdonly==1.0 --hash=sha256:{'0' * 64}"
    with pytest.raises(ApiError) as refused:
        deploy(client, tmp_path, "hashed", USES_SDIST, requirements=[wrong])
    assert refused.value.code == "requirements_failed" and "HASH" in str(refused.value)
    assert client.function("hashed")["version"] == deployed["version"]  # nothing changed
    assert code_dirs(root, "hashed") == before
    assert client.invoke("hashed")["result"] == "built from an sdist"


def _put_archive(server, body: bytes, content_type: str = "application/gzip") -> httpx.Response:
    return httpx.put(f"{server.url}/v1/functions/archived", content=body, timeout=60,
                     headers={"Authorization": f"Bearer {server.admin_token}",
                              "Content-Type": content_type,
                              "X-Usetl-Deploy": '{"handler": "main.py:handler"}'})


def _tar(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_a_corrupt_or_oversized_archive_is_refused_and_changes_nothing(served, tmp_path):
    server, client, _, root = served
    deployed, _ = deploy(client, tmp_path, "archived", READS_DATA.replace(
        'os.path.getsize("data.bin")', '"v1"'))
    before = code_dirs(root, "archived")
    good = _tar({"main.py": b"def handler(event, context):\n    return 2\n"})
    cases = [
        (good[: len(good) // 2], 400, "invalid_archive"),  # cut short
        (b"this is not an archive", 400, "invalid_archive"),
        (_tar({"../escape.py": b"x = 1\n", "main.py": b""}), 400, "invalid_archive"),
        (_tar({"data.bin": bytes(251 << 20)}), 413, "code_too_large"),  # 250 MiB unpacked
    ]
    for body, status, code in cases:
        answer = _put_archive(server, body)
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)
    zipped = _put_archive(server, b"PK\x03\x04 broken", "application/zip")
    assert zipped.json()["error"]["code"] == "invalid_archive"
    assert client.function("archived")["version"] == deployed["version"]
    assert client.invoke("archived")["result"] == "v1"
    assert code_dirs(root, "archived") == before  # nothing half-deployed
    assert not list((root / "state" / "uploads").iterdir())


def test_a_60_mib_code_archive_deploys(served, tmp_path):
    _, client, _, _ = served
    code = tmp_path / "big"
    code.mkdir()
    (code / "main.py").write_text(textwrap.dedent(READS_DATA))
    (code / "data.bin").write_bytes(os.urandom(60 << 20))  # incompressible: 60 MiB on the wire
    sent = []
    client.deploy("big", code, progress=lambda phase, done, total: sent.append((phase, done)))
    assert max(done for phase, done in sent if phase == "upload") > 60 << 20
    assert client.invoke("big")["result"] == 60 << 20
