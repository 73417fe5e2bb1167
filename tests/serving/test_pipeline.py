"""Pipelines through the real server: stages, the zero-copy hand-off, fan-out, retries."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap

import pytest

from usetl.api.client import ApiError, Client
from usetl.api.launcher import ServerProcess

MIB16 = 16 << 20
RELAY = """
    from usetl import etl
    def handler(event, context):
        passed = etl.put("blob.bin", etl.stat("blob.bin"))
        if context.function == "relay-note":
            etl.put("note.txt", b"relayed")
        return {**event, "region": passed.region, "stat": etl.stat("blob.bin").region}
"""
STAGES = {
    # 16 MiB written into the guest region, for the next stage to read in place.
    "produce": """
        import hashlib
        from usetl import etl
        def handler(event, context):
            data = bytes(range(256)) * (event["mib"] << 12)
            with etl.open("blob.bin", "wb") as f:
                f.write(data)
            return {"sha": hashlib.sha256(data).hexdigest(), "size": len(data)}
    """,
    "check": """
        import hashlib
        from usetl import etl
        def handler(event, context):
            blob = etl.stat("blob.bin")
            same = hashlib.sha256(blob.view()).hexdigest() == event["sha"]
            with etl.open("count.txt", "w") as f:
                f.write(str(blob.view().tobytes().count(b"\\xff")))
            return {"same": same, "size": blob.size, "files": sorted(f.name for f in etl.ls())}
    """,
    "finish": """
        from usetl import etl
        def handler(event, context):
            return {"checked": event, "ff_bytes": int(etl.open("count.txt").read()),
                    "files": sorted(f.name for f in etl.ls())}
    """,
    # Hands the file it was given on as it is; deployed as relay-note, with a note of its own.
    "relay": RELAY,
    "relay-note": RELAY,
    "split": "def handler(event, context):\n    return list(range(1, event + 1))\n",
    "square": "def handler(event, context):\n    return event * event\n",
    "total": "def handler(event, context):\n    return sum(event)\n",
    "flaky": """
        def handler(event, context):
            print("attempt", context.request_id)
            raise RuntimeError("the source is down")
    """,
}


def deploy_functions(client: Client) -> None:
    for name, source in STAGES.items():
        body = {"handler": "fn.py:handler", "memory_mib": 128,
                "files": {"fn.py": base64.b64encode(textwrap.dedent(source).encode()).decode()}}
        client.request("PUT", f"/v1/functions/{name}", json=body)


def server_and_client(root, backend):
    server = ServerProcess(root / "state", root / "modules", backend).start()
    client = Client(server.url, server.admin_token)
    deploy_functions(client)
    return server, client


@pytest.fixture(scope="module")
def kvm(tmp_path_factory):
    server, client = server_and_client(tmp_path_factory.mktemp("pipeline-kvm"), "kvm")
    yield server, client
    client.close()
    server.stop()


def check_three_stages(record: dict) -> None:
    assert record["status"] == "succeeded", record["error"]
    checked = record["result"]["checked"]
    assert checked == {"same": True, "size": MIB16, "files": ["blob.bin", "count.txt"]}
    assert record["result"] == {"checked": checked, "ff_bytes": MIB16 // 256,
                                "files": ["count.txt"]}  # only the previous stage's files
    first, second, third = record["stages"]
    assert [s["function"] for s in record["stages"]] == ["produce", "check", "finish"]
    assert (first["files_in"], second["files_in"], second["bytes_in"]) == (0, 1, MIB16)
    assert all(s["status"] == "succeeded" and s["attempts"] == 1 for s in record["stages"])


@pytest.mark.kvm
def test_three_stages_hand_16_mib_on_without_a_copy(kvm):
    _, client = kvm
    deployed = client.deploy_pipeline("etl3", ["produce", "check", "finish"])
    assert [s["function"] for s in deployed["stages"]] == ["produce", "check", "finish"]
    record = client.run_pipeline("etl3", {"mib": 16})
    check_three_stages(record)
    # The host copied nothing to hand 16 MiB from stage 1 to 2 (it mapped the pages).
    assert [s["copied_bytes"] for s in record["stages"]] == [0, 0, 0]
    assert client.pipeline_run(record["id"]) == record
    for stage in record["stages"]:  # each invocation is an ordinary record of its function
        assert client.invocation(stage["invocations"][0])["status"] == "succeeded"


@pytest.mark.kvm
def test_a_stage_hands_a_file_it_was_given_on_without_a_copy(kvm):
    """etl.put of a handed-in file: the memory file it lies in goes on to the next stage (no
    copy, even in the guest); beside a file of the stage's own, it is copied and counted."""
    _, client = kvm
    client.deploy_pipeline("relayed", ["produce", "relay", "relay", "check", "finish"])
    record = client.run_pipeline("relayed", {"mib": 16})
    assert record["status"] == "succeeded", record["error"]
    assert record["result"]["checked"] == {"same": True, "size": MIB16,
                                           "files": ["blob.bin", "count.txt"]}
    assert [s["copied_bytes"] for s in record["stages"]] == [0, 0, 0, 0, 0]
    assert [s["bytes_in"] for s in record["stages"][1:4]] == [MIB16] * 3
    relay = client.invocation(record["stages"][1]["invocations"][0])["result"]
    assert (relay["region"], relay["stat"]) == ("host", "host")  # the handed file itself
    client.deploy_pipeline("noted", ["produce", "relay-note", "check"])
    record = client.run_pipeline("noted", {"mib": 16})
    assert record["status"] == "succeeded", record["error"]
    assert record["result"] == {"same": True, "size": MIB16,
                                "files": ["blob.bin", "count.txt", "note.txt"]}
    assert [s["copied_bytes"] for s in record["stages"]] == [0, MIB16, 0]


@pytest.mark.kvm
def test_a_fan_out_stage_runs_per_item_and_the_next_gets_the_list(kvm):
    _, client = kvm
    client.deploy_pipeline("fan", ["split", {"function": "square", "fan_out": True}, "total"])
    record = client.run_pipeline("fan", 4)
    assert (record["status"], record["result"]) == ("succeeded", 1 + 4 + 9 + 16)
    assert len(record["stages"][1]["invocations"]) == 4
    client.deploy_pipeline("fan-bad", [{"function": "square", "fan_out": True}])
    refused = client.run_pipeline("fan-bad", 3)
    assert refused["status"] == "failed" and refused["error"]["type"] == "InvalidFanOut"


@pytest.mark.kvm
def test_a_failing_stage_retries_then_fails_the_run_naming_the_stage(kvm):
    _, client = kvm
    client.deploy_pipeline("fails", ["split", {"function": "flaky", "retries": 2}, "total"])
    record = client.run_pipeline("fails", 2)
    assert record["status"] == "failed" and record["result"] is None
    error = record["error"]
    assert (error["type"], error["stage"], error["function"]) == ("StageFailed", 2, "flaky")
    assert "stage 2 (flaky) failed after 3 attempt(s): RuntimeError: the source is down" in (
        error["message"])
    assert [s["status"] for s in record["stages"]] == ["succeeded", "failed"]  # 3 never ran
    attempts = record["stages"][1]["invocations"]
    assert len(attempts) == 3 and len(set(attempts)) == 3
    assert all(client.invocation(i)["error"]["type"] == "RuntimeError" for i in attempts)
    again = client.run_pipeline("fails", 1)
    assert [r["id"] for r in client.pipeline_runs("fails")] == [again["id"], record["id"]]
    assert client.pipeline_runs("fails", limit=1) == [client.pipeline_run(again["id"])]
    assert client.pipeline_runs("fails", status="succeeded") == []
    for bad, code in (({"limit": 0}, "invalid_limit"), ({"status": "done"}, "invalid_status")):
        with pytest.raises(ApiError) as refused:
            client.pipeline_runs("fails", **bad)
        assert (refused.value.status, refused.value.code) == (400, code)
    with pytest.raises(ApiError) as missing:
        client.pipeline_runs("no-such-pipeline")
    assert (missing.value.status, missing.value.code) == (404, "pipeline_not_found")


@pytest.mark.kvm
def test_an_unknown_stage_is_refused_and_changes_nothing(kvm):
    _, client = kvm
    client.deploy_pipeline("kept", ["split", "total"])
    before = client.pipelines()
    for stages, code in ((["split", "no-such-fn"], "unknown_stage"),
                         ([{"function": "split", "retries": -1}], "invalid_pipeline"),
                         ([], "invalid_pipeline")):
        with pytest.raises(ApiError) as refused:
            client.deploy_pipeline("kept", stages)
        assert refused.value.code == code and refused.value.status == 400
    with pytest.raises(ApiError) as unknown:
        client.deploy_pipeline("other", ["no-such-fn"])
    assert "stage 1: no function 'no-such-fn' is deployed" in str(unknown.value)
    assert client.pipelines() == before
    assert client.run_pipeline("kept", 3)["result"] == 6
    with pytest.raises(ApiError) as missing:
        client.run_pipeline("nope", 1)
    assert missing.value.code == "pipeline_not_found"


@pytest.mark.kvm
def test_the_cli_deploys_runs_async_lists_and_removes(kvm, tmp_path):
    server, _ = kvm
    spec = tmp_path / "pipeline.toml"
    spec.write_text('[[stage]]\nfunction = "split"\n\n[[stage]]\nfunction = "square"\n'
                    'fan_out = true\nretries = 1\n\n[[stage]]\nfunction = "total"\n')

    def usetl(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "usetl", *args, "--url", server.url,
                               "--token", server.admin_token],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "split -> square[] (retries 1) -> total" in usetl("pipeline", "deploy", "cli",
                                                            "--spec", str(spec))
    assert usetl("pipeline", "run", "cli", "3").strip() == "14"
    run_id = usetl("pipeline", "run", "cli", "2", "--async").strip()
    shown = json.loads(usetl("pipeline", "show-run", run_id, "--wait"))
    assert (shown["status"], shown["result"], shown["mode"]) == ("succeeded", 5, "async")
    listed = usetl("pipeline", "runs", "cli").splitlines()
    assert listed[1].startswith(f"{run_id} succeeded   async") and len(listed) == 3
    assert "split:succeeded square:succeeded total:succeeded" in listed[2]
    assert [r["id"] for r in json.loads(usetl("pipeline", "runs", "cli", "--json"))][0] == run_id
    none_failed = usetl("pipeline", "runs", "cli", "--status", "failed")
    assert none_failed.strip() == "no runs of pipeline cli"
    assert "cli " in usetl("pipeline", "ls")
    usetl("pipeline", "rm", "cli")
    assert "cli " not in usetl("pipeline", "ls")


def test_the_process_backend_hands_files_on_by_copying_and_counts_it(tmp_path):
    server, client = server_and_client(tmp_path, "process")
    try:
        client.deploy_pipeline("etl3", ["produce", "check", "finish"])
        record = client.run_pipeline("etl3", {"mib": 16})
        check_three_stages(record)
        # Its sandbox maps the regions itself: out of stage 1 and into stage 2, copied.
        first, second, _ = record["stages"]
        assert first["copied_bytes"] == MIB16
        assert second["copied_bytes"] >= MIB16  # its own count.txt was copied out, too
        client.deploy_pipeline("relayed", ["produce", "relay", "check"])
        record = client.run_pipeline("relayed", {"mib": 16})
        assert record["status"] == "succeeded", record["error"]
        assert record["result"] == {"same": True, "size": MIB16,
                                    "files": ["blob.bin", "count.txt"]}
        # Passed on here by a copy into the guest region, and out of it: both counted.
        assert record["stages"][1]["copied_bytes"] >= 2 * MIB16
    finally:
        client.close()
        server.stop()
