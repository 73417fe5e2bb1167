"""Secrets: sealing under a key kept outside the registry, and, end to end with the KVM
backend, a secret's value never on disk: not in the registry, the logs, the state
directory's files or the template's snapshot."""

from __future__ import annotations

import base64
import hashlib
import mmap
import os
import stat
from pathlib import Path

import pytest
from test_api_kvm import deploy

from usetl.api.client import Client
from usetl.api.launcher import ServerProcess
from usetl.platform.secrets import KEY_ENV, KEY_FILE, SecretBox, SecretError

USES_TOKEN = """
import hashlib
def handler(event, context):
    secrets = getattr(context, "secrets", None)
    if context.request_id == "warmup":
        print("the warm-up sees secrets:", secrets is not None)
        return None
    token = secrets["API_TOKEN"]
    print("calling the API with", token)
    with open("/tmp/token", "w") as f:
        f.write(token)
    return {"sha256": hashlib.sha256(token.encode()).hexdigest()}
"""


def test_a_key_file_is_made_once_with_mode_0600(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    box = SecretBox(tmp_path)
    assert not (tmp_path / KEY_FILE).exists()  # made on first use
    sealed = box.seal(1, "A", "value-1")
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    assert b"value-1" not in sealed
    assert SecretBox(tmp_path).open(1, "A", sealed) == "value-1"  # the same key, read back
    assert box.seal(1, "A", "value-1") != sealed  # a fresh nonce each time
    for tenant, name in ((2, "A"), (1, "B")):  # bound to its tenant and name
        with pytest.raises(SecretError, match="does not open"):
            box.open(tenant, name, sealed)


def test_the_key_may_come_from_the_environment_instead(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, base64.urlsafe_b64encode(os.urandom(32)).decode())
    sealed = SecretBox(tmp_path).seal(1, "A", "v")
    assert not (tmp_path / KEY_FILE).exists()
    assert SecretBox(tmp_path / "elsewhere").open(1, "A", sealed) == "v"
    monkeypatch.setenv(KEY_ENV, base64.urlsafe_b64encode(os.urandom(16)).decode())
    with pytest.raises(SecretError, match="16 bytes"):
        SecretBox(tmp_path).seal(1, "A", "v")
    monkeypatch.setenv(KEY_ENV, "not base64 !")
    with pytest.raises(SecretError, match="base64"):
        SecretBox(tmp_path).seal(1, "A", "v")


def _files_holding(root: Path, needle: bytes) -> list[Path]:
    holding = []
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink() or path.stat().st_size == 0:
            continue
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            if m.find(needle) != -1:
                holding.append(path)
    return holding


@pytest.mark.kvm
def test_a_secret_never_reaches_the_disk_the_logs_or_a_snapshot(tmp_path):
    value = "tok-" + os.urandom(12).hex()
    server = ServerProcess(tmp_path / "state", tmp_path / "modules", "kvm").start()
    try:
        client = Client(server.url, server.admin_token)
        client.set_secret("API_TOKEN", value)
        v = deploy(client, "uses-token", USES_TOKEN, secrets=["API_TOKEN"], warmup={})
        assert "the warm-up sees secrets: False" in v["warmup"]["stdout"]
        record = client.invoke("uses-token", None)
        assert record["result"] == {"sha256": hashlib.sha256(value.encode()).hexdigest()}
        assert record["stdout"] == "calling the API with [secret API_TOKEN]\n"
        answers = [record, client.logs("uses-token"), client.secrets(), client.functions()]
        client.close()
    finally:
        server.stop()  # SIGTERM: the template is snapshotted on the way out
    snapshots = [p for p in (tmp_path / "state" / "snapshots").rglob("*") if p.is_file()]
    assert snapshots and (tmp_path / "state" / "registry.db").exists()
    assert value.encode() not in str(answers).encode()
    assert value not in server.output
    assert _files_holding(tmp_path, value.encode()) == []
    assert _files_holding(tmp_path, hashlib.sha256(value.encode()).hexdigest().encode())  # the
    # search finds what is there: the result that derives from the secret is in the registry
