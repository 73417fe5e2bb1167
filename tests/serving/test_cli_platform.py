"""The client commands against a real server: tenant add, deploy, invoke (sync, --async), ls,
logs, stats, rm."""

import os
import subprocess
import sys

import pytest

from usetl.api.launcher import SRC, ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("usetl-cli")
    s = ServerProcess(root / "state", root / "modules").start()
    yield s
    s.stop()


def usetl(server, tmp_path, *args, token=None):
    env = dict(os.environ, PYTHONPATH=str(SRC), USETL_URL=server.url,
               USETL_CONFIG=str(tmp_path / "config.json"), USETL_STATE=str(tmp_path / "state"))
    env.pop("USETL_TOKEN", None)
    if token:
        env["USETL_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "usetl", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def test_a_tenant_deploys_invokes_and_cleans_up(server, tmp_path):
    added = usetl(server, tmp_path, "tenant", "add", "carol", token=server.admin_token)
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert token.startswith("usetl_") and (tmp_path / "config.json").exists()
    fn = tmp_path / "greet.py"
    fn.write_text("def handler(event, context):\n    print('greeting', event)\n"
                  "    return {'hello': event}\n")
    deployed = usetl(server, tmp_path, "deploy", "greet", str(fn))  # the saved token
    assert deployed.returncode == 0, deployed.stderr
    assert "deployed greet version 1" in deployed.stdout
    out = usetl(server, tmp_path, "invoke", "greet", '"world"')
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '{"hello": "world"}'
    assert "greeting world" in out.stderr
    queued = usetl(server, tmp_path, "invoke", "greet", '"later"', "--async")
    record = usetl(server, tmp_path, "invocation", queued.stdout.strip(), "--wait")
    assert '"hello": "later"' in record.stdout
    listed = usetl(server, tmp_path, "ls")
    assert "greet" in listed.stdout and "greet.py:handler" in listed.stdout
    logs = usetl(server, tmp_path, "logs", "greet")
    assert "greeting world" in logs.stdout and "greeting later" in logs.stdout
    timed = [line for line in logs.stdout.splitlines() if "time (ms): queue " in line]
    assert len(timed) == 2 and all(" guest " in line and " etl " in line for line in timed)
    usage = usetl(server, tmp_path, "usage")
    assert usage.returncode == 0 and usage.stdout.splitlines()[1].split()[:2] == ["greet", "2"]
    stats = usetl(server, tmp_path, "stats", "--once", token=server.admin_token)
    assert stats.returncode == 0 and "/greet/1" in stats.stdout
    bad = usetl(server, tmp_path, "invoke", "greet", "{oops")
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr
    assert usetl(server, tmp_path, "rm", "greet").returncode == 0
    gone = usetl(server, tmp_path, "invoke", "greet", "1")
    assert gone.returncode == 2 and "no function 'greet'" in gone.stderr
    anonymous = usetl(server, tmp_path / "nowhere", "ls")
    assert anonymous.returncode == 2 and "unauthenticated" in anonymous.stderr
