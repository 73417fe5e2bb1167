"""Schedules, retries, dead letters, callbacks, secrets and `usetl logs -f` through a real
`usetl serve` (process backend) on 127.0.0.1, with a real HTTP receiver for the callbacks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest
from test_api import RAISES, deploy

from http_servers import Receiver
from usetl.api.client import ApiError, Client
from usetl.api.launcher import SRC, ServerProcess
from waiting import wait_until

TICKS = """
def handler(event, context):
    return {"event": event, "id": context.request_id}
"""
FETCHES = """
from usetl import etl
def handler(event, context):
    return etl.get(event["url"]).bytes().decode()
"""
SPINS = """
def handler(event, context):
    while True:
        pass
"""
USES_SECRET = """
def handler(event, context):
    password = context.secrets["DB_PASSWORD"]
    print("connecting with", password)
    return {"length": len(password), "echo": "pw=" + password, "names": sorted(context.secrets)}
"""
PRINTS = """
def handler(event, context):
    print("followed", event)
    return event
"""


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, receiver):
    root = tmp_path_factory.mktemp("usetl-async")
    s = ServerProcess(root / "state", root / "modules", "process",
                      "--callback-allow", receiver.base + "/hooks/",
                      "--callback-backoff", "0.05", "--callback-attempts", "4").start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def admin(server):
    c = Client(server.url, server.admin_token)
    yield c
    c.close()


@pytest.fixture(scope="module")
def alice(server, admin):
    c = Client(server.url, admin.add_tenant("alice")["token"])
    yield c
    c.close()


def _error(call) -> ApiError:
    with pytest.raises(ApiError) as e:
        call()
    return e.value


def _finished(client: Client, invocation_id: str) -> dict:
    return wait_until(lambda: (r := client.invocation(invocation_id))["status"]
                      not in ("queued", "running") and r, f"invocation {invocation_id}")


def test_bad_schedules_get_clear_errors_and_change_nothing(alice):
    deploy(alice, "ticks", TICKS)
    for cron, why in [("61 * * * *", "not valid"), ("* * * *", "4 fields"),
                      ("0 0 31 2 *", "never fires")]:
        e = _error(lambda c=cron: alice.add_schedule("ticks", c))
        assert (e.status, e.code) == (400, "invalid_cron") and why in str(e)
    e = _error(lambda: alice.add_schedule("no-such-function", "* * * * *"))
    assert (e.status, e.code) == (404, "function_not_found")
    assert _error(lambda: alice.delete_schedule("0123456789abcdef")).code == "schedule_not_found"
    assert alice.schedules() == []


def _metric(admin: Client, name: str, label: str) -> float:
    """The sum of a counter's samples whose labels contain `label`."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in admin.metrics().splitlines()
               if line.startswith(name + "{") and label in line.rsplit(" ", 1)[0])


def test_an_every_second_schedule_fires_each_tick_once(admin, alice):
    deploy(alice, "every-second", TICKS)
    schedule = alice.add_schedule("every-second", "* * * * * *", {"batch": 7})
    assert [(s["id"], s["function"], s["cron"], s["event"]) for s in alice.schedules()] == \
        [(schedule["id"], "every-second", "* * * * * *", {"batch": 7})]  # its ticks move on

    def ticked() -> list[dict]:
        return [r for r in alice.logs("every-second", limit=100)
                if r["trigger"] and r["status"] == "succeeded"]

    runs = wait_until(lambda: len(t := ticked()) >= 3 and t, "three ticks")
    alice.delete_schedule(schedule["id"])
    assert alice.schedules() == []
    ticks = sorted(r["trigger"]["tick"] for r in runs)
    assert len(set(ticks)) == len(ticks) and all(t == int(t) for t in ticks)  # once each
    for r in runs:
        assert r["mode"] == "async" and r["trigger"]["schedule"] == schedule["id"]
        assert r["result"] == {"event": {"batch": 7}, "id": r["id"]}
        assert r["created"] >= r["trigger"]["tick"]  # never before its tick
    assert _metric(admin, "usetl_schedule_ticks_total", '/every-second"}') >= len(runs)


def test_a_failing_async_invocation_is_retried_then_dead_lettered(admin, alice):
    deploy(alice, "always-fails", RAISES, retries=2, retry_backoff_s=0.05)
    assert alice.function("always-fails")["retries"] == 2
    deploy(alice, "fine", TICKS, retries=2)
    failing = alice.invoke_async("always-fails", 7)
    fine = alice.invoke_async("fine", 1)
    record = _finished(alice, failing)
    assert record["status"] == "failed" and record["error"]["type"] == "ValueError"
    assert [(a["error"]["type"], a["error"]["kind"]) for a in record["attempts"]] == \
        [("ValueError", "handler")] * 3  # the first run and two retries
    assert _finished(alice, fine)["status"] == "succeeded"
    dead = alice.failed_invocations()
    assert failing in [r["id"] for r in dead] and fine not in [r["id"] for r in dead]
    assert [r["id"] for r in alice.failed_invocations("fine")] == []
    assert _metric(admin, "usetl_async_retries_total", "/always-fails/") == 2
    assert _metric(admin, "usetl_dead_letters_total", "/always-fails/") == 1
    assert _metric(admin, "usetl_dead_letters_total", "/fine/") == 0
    e = _error(lambda: deploy(alice, "bad-policy", TICKS, retries=11))
    assert (e.status, e.code) == (400, "invalid_retries")
    e = _error(lambda: deploy(alice, "bad-policy", TICKS, retry_backoff_s=-1))
    assert (e.status, e.code) == (400, "invalid_retries")


def test_a_retried_invocation_succeeds_once_its_source_answers(alice, receiver):
    receiver.failures["/flaky"] = 2
    receiver.bodies["/flaky"] = b"rows"
    deploy(alice, "fetches", FETCHES, retries=3, retry_backoff_s=0.05, allow=[receiver.base])
    record = _finished(alice, alice.invoke_async("fetches", {"url": receiver.base + "/flaky"}))
    assert record["status"] == "succeeded" and record["result"] == "rows"
    assert [a["error"] is None for a in record["attempts"]] == [False, False, True]
    assert "503" in record["attempts"][0]["error"]["message"]


def test_sandbox_failures_are_retried_and_platform_errors_are_not(alice):
    deploy(alice, "spins", SPINS, timeout_s=0.3, retries=1, retry_backoff_s=0.05)
    record = _finished(alice, alice.invoke_async("spins"))
    assert [a["error"]["type"] for a in record["attempts"]] == ["Timeout", "Timeout"]
    alice.set_secret("SHORT_LIVED", "gone-soon")
    deploy(alice, "needs-secret", TICKS, secrets=["SHORT_LIVED"], retries=3)
    alice.delete_secret("SHORT_LIVED")
    record = _finished(alice, alice.invoke_async("needs-secret"))
    assert record["status"] == "failed" and len(record["attempts"]) == 1
    assert record["error"]["kind"] == "platform" and "SHORT_LIVED" in record["error"]["message"]


def test_a_callback_is_retried_until_the_receiver_accepts(admin, alice, receiver):
    deploy(alice, "calls-back", TICKS)
    receiver.failures["/hooks/done"] = 2
    invocation_id = alice.invoke_async("calls-back", {"n": 3},
                                       callback_url=receiver.base + "/hooks/done")
    record = wait_until(lambda: (r := alice.invocation(invocation_id))["callback"]["state"]
                        != "pending" and r, "the callback to be delivered")
    assert record["callback"]["state"] == "delivered"
    assert [a["status"] for a in record["callback"]["attempts"]] == [503, 503, 200]
    assert _metric(admin, "usetl_callback_attempts_total", 'state="delivered"}') >= 1
    posts = receiver.posts_to("/hooks/done")
    assert [status for status, _ in posts] == [503, 503, 200]
    sent = json.loads(posts[-1][1])
    assert (sent["id"], sent["status"]) == (invocation_id, "succeeded")
    assert sent["result"] == {"event": {"n": 3}, "id": invocation_id}


def test_a_callback_never_accepted_is_given_up_after_its_attempts(alice, receiver):
    deploy(alice, "fails-back", RAISES)
    receiver.failures["/hooks/never"] = 1000
    invocation_id = alice.invoke_async("fails-back", 1, callback_url=receiver.base + "/hooks/never")
    record = wait_until(lambda: (r := alice.invocation(invocation_id))["callback"]["state"]
                        != "pending" and r, "the callback to be given up")
    assert record["callback"]["state"] == "failed" and len(record["callback"]["attempts"]) == 4
    assert all(a["status"] == 503 for a in record["callback"]["attempts"])
    assert json.loads(receiver.posts_to("/hooks/never")[0][1])["status"] == "failed"


def test_a_callback_url_outside_the_policy_is_refused_and_nothing_is_queued(alice, receiver):
    deploy(alice, "refused-back", TICKS)
    before = alice.logs("refused-back")
    for url in [receiver.base + "/elsewhere", "http://127.0.0.1:1/hooks/", "http://10.1.2.3/",
                "file:///etc/passwd", "not a url", receiver.base + "/hooks/../admin"]:
        e = _error(lambda u=url: alice.invoke_async("refused-back", 1, callback_url=u))
        assert (e.status, e.code) == (400, "callback_refused"), url
        assert "callback URL refused" in str(e)
    assert alice.logs("refused-back") == before


def test_secrets_are_given_by_name_kept_per_tenant_and_redacted(server, admin, alice):
    deploy(alice, "uses-secret", TICKS)
    e = _error(lambda: deploy(alice, "uses-secret", USES_SECRET, secrets=["DB_PASSWORD"]))
    assert (e.status, e.code) == (400, "secret_not_found")
    assert alice.function("uses-secret")["version"] == 1  # the refused deploy changed nothing
    for name in ("1ABC", "has-dash", "x" * 129):
        assert _error(lambda n=name: alice.set_secret(n, "v")).code == "invalid_name"
    assert _error(lambda: alice.set_secret("EMPTY", "")).code == "invalid_secret"
    e = _error(lambda: alice.request("PUT", "/v1/secrets/LONE", content=b'{"value": "\\ud800"}',
                                     headers={"Content-Type": "application/json"}))
    assert e.code == "invalid_secret"  # a lone surrogate: not text that can be stored
    value = "hunter2-" + os.urandom(8).hex()
    assert alice.set_secret("DB_PASSWORD", "first") == {"name": "DB_PASSWORD", "created": True}
    assert alice.set_secret("DB_PASSWORD", value)["created"] is False
    assert [s["name"] for s in alice.secrets()] == ["DB_PASSWORD"]
    assert value not in json.dumps(alice.secrets())
    v = deploy(alice, "uses-secret", USES_SECRET, secrets=["DB_PASSWORD"])
    assert v["secrets"] == ["DB_PASSWORD"]
    record = alice.invoke("uses-secret", None)
    assert record["result"] == {"length": len(value), "echo": "pw=[secret DB_PASSWORD]",
                                "names": ["DB_PASSWORD"]}
    assert record["stdout"] == "connecting with [secret DB_PASSWORD]\n"
    assert value not in json.dumps(alice.logs("uses-secret"))
    bob = Client(server.url, admin.add_tenant("bob")["token"])
    assert bob.secrets() == []
    e = _error(lambda: deploy(bob, "steals", USES_SECRET, secrets=["DB_PASSWORD"]))
    assert e.code == "secret_not_found"
    assert _error(lambda: bob.delete_secret("DB_PASSWORD")).code == "secret_not_found"
    bob.close()


def test_logs_follow_prints_invocations_as_they_finish_and_ends_on_ctrl_c(server, alice,
                                                                          tmp_path):
    deploy(alice, "followed", PRINTS)
    alice.invoke("followed", "before")
    env = dict(os.environ, PYTHONPATH=str(SRC), USETL_URL=server.url, USETL_TOKEN=alice.token,
               USETL_CONFIG=str(tmp_path / "config.json"))
    follower = subprocess.Popen(
        [sys.executable, "-m", "usetl", "logs", "-f", "followed", "--interval", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(follower.stdout), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("followed before" in ln for ln in lines), "the earlier output")
        alice.invoke("followed", "live-1")
        alice.invoke_async("followed", "live-2")
        wait_until(lambda: sum("followed live" in ln for ln in lines) == 2, "the live output")
    finally:
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=30)
    reader.join(timeout=30)
    assert follower.returncode == 0 and "Traceback" not in err, err
    assert sum("followed before" in ln for ln in lines) == 1  # printed once
    assert sum("followed live-1" in ln for ln in lines) == 1


def test_the_cli_for_schedules_secrets_and_dead_letters(server, alice, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(SRC), USETL_URL=server.url, USETL_TOKEN=alice.token,
               USETL_CONFIG=str(tmp_path / "config.json"))

    def usetl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "usetl", *args], capture_output=True,
                              text=True, env=env, input=stdin, timeout=60)

    deploy(alice, "cli-fails", RAISES)
    bad = usetl("schedule", "add", "cli-fails", "61 * * * *")
    assert bad.returncode == 2 and "usetl: cron expression '61 * * * *' is not valid" in bad.stderr
    added = usetl("schedule", "add", "cli-fails", "0 3 * * *", "--event", '{"day": 1}')
    assert added.returncode == 0, added.stderr
    listed = usetl("schedule", "ls")
    assert added.stdout.strip() in listed.stdout and '{"day": 1}' in listed.stdout
    alice.delete_schedule(added.stdout.strip())
    stored = usetl("secret", "set", "CLI_TOKEN", stdin="from-stdin\n")
    assert stored.returncode == 0 and "stored secret CLI_TOKEN" in stored.stdout
    secrets = usetl("secret", "ls")
    assert "CLI_TOKEN" in secrets.stdout and "from-stdin" not in secrets.stdout
    alice.delete_secret("CLI_TOKEN")
    missing = usetl("secret", "rm", "CLI_TOKEN")
    assert missing.returncode == 2 and "no secret 'CLI_TOKEN'" in missing.stderr
    failed = _finished(alice, alice.invoke_async("cli-fails", 5))["id"]
    dead = usetl("invocations", "--failed", "--function", "cli-fails")
    assert dead.returncode == 0 and failed in dead.stdout
    assert "ValueError: no good: 5" in dead.stdout


def test_a_pending_callback_and_a_waiting_retry_resume_after_a_restart_when_due(tmp_path,
                                                                                receiver):
    """Nothing waits only in memory: both are in the registry, with when they are due, when
    the server stops; after a restart each runs then (not at once, and not never)."""
    receiver.failures["/hooks/restart"] = 1
    receiver.failures["/flaky-restart"] = 1
    receiver.bodies["/flaky-restart"] = b"ok"
    backoff = 5.0  # longer than a restart takes here, so the wait outlives the server
    server = ServerProcess(tmp_path / "state", tmp_path / "modules", "process",
                           "--callback-allow", receiver.base + "/hooks/",
                           "--callback-backoff", str(backoff)).start()
    try:
        client = Client(server.url, server.admin_token)
        deploy(client, "slow-retry", FETCHES, retries=1, retry_backoff_s=backoff,
               allow=[receiver.base])
        deploy(client, "calls-back", TICKS)
        retried = client.invoke_async("slow-retry", {"url": receiver.base + "/flaky-restart"})
        called = client.invoke_async("calls-back", 1, callback_url=receiver.base + "/hooks/restart")
        waiting = wait_until(lambda: (r := client.invocation(retried))["retry_at"] and r,
                             "the first attempt")
        assert waiting["status"] == "queued"
        assert waiting["retry_at"] == waiting["attempts"][0]["finished"] + backoff
        pending = wait_until(lambda: (c := client.invocation(called)["callback"])["attempts"]
                             and c, "the first delivery attempt")
        assert pending["state"] == "pending"
        assert pending["retry_at"] >= pending["attempts"][0]["at"] + backoff
        client.close()
        server.stop()
        server.start()
        client = Client(server.url, server.admin_token)
        record = _finished(client, retried)
        assert record["status"] == "succeeded" and len(record["attempts"]) == 2
        assert record["attempts"][1]["started"] >= waiting["retry_at"]  # not early
        assert record["retry_at"] is None
        record = wait_until(lambda: (r := client.invocation(called))["callback"]["state"]
                            == "delivered" and r, "the callback after the restart")
        assert [a["status"] for a in record["callback"]["attempts"]] == [503, 200]
        assert record["callback"]["attempts"][1]["at"] >= pending["retry_at"]
        client.close()
    finally:
        server.stop()
