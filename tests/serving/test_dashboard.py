"""The dashboard at /ui in a real headless browser (Debian's chromium, driven by Playwright)
against a real server with the KVM backend: sign-in, and what it shows against the API."""

from __future__ import annotations

import base64
import bisect
import os
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from usetl.api.client import Client
from usetl.api.launcher import ServerProcess
from waiting import wait_until

pytestmark = pytest.mark.kvm

CHROMIUM = "/usr/bin/chromium"  # `make setup` installs it (the Makefile's host-tools)
# Test artefacts (the screenshot), kept after the run; not in git.
ARTEFACTS = Path(os.environ.get("USETL_ARTEFACTS", Path(__file__).parents[2] / "artefacts"))
HELLO = "def handler(event, context):\n    print('hello', event)\n    return {'hi': event}\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("usetl-ui")
    s = ServerProcess(root / "state", root / "modules", "kvm").start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def tenant(server):
    """A tenant with a function deployed twice and three finished invocations (one async)."""
    with Client(server.url, server.admin_token) as admin:
        token = admin.add_tenant("dana")["token"]
    client = Client(server.url, token)
    body = {"handler": "hello.py:handler",
            "files": {"hello.py": base64.b64encode(HELLO.encode()).decode()}}
    for _ in range(2):  # versions 1 and 2
        client.request("PUT", "/v1/functions/hello", json=body)
    client.request("PUT", "/v1/pipelines/twice",
                   json={"stages": ["hello", {"function": "hello", "retries": 1}]})
    ids = [client.invoke("hello", n)["id"] for n in (1, 2)]
    ids.append(client.invoke_async("hello", 3))
    for invocation_id in ids:  # each rolled back, its rollback's time in its record
        wait_until(lambda i=invocation_id: "rollback_ms" in client.invocation(i)["phases"],
                   "the rollback's time in the record")
    yield token, client, ids
    client.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no {CHROMIUM}: `make setup` installs it")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def test_the_api_records_where_each_invocations_time_went(tenant):
    _, client, ids = tenant
    for invocation_id in ids:
        phases = client.invocation(invocation_id)["phases"]
        assert {"queue_ms", "dispatch_ms", "guest_ms", "etl_ms", "rollback_ms"} <= set(phases)
        assert all(v >= 0 for v in phases.values())
    recent = client.request("GET", "/v1/invocations", params={"limit": 10})["invocations"]
    assert [r["id"] for r in recent] == sorted(ids, key=lambda i: -client.invocation(i)[
        "finished"])
    activity = client.request("GET", "/v1/activity", params={"window": 300})
    assert activity["invocations"] == sum(activity["per_second"]) == 3
    bounds = activity["latency"]["bounds_s"]
    expected = [0] * (len(bounds) + 1)
    for invocation_id in ids:  # a bucket counts durations above the previous bound, up to its
        seconds = client.invocation(invocation_id)["metrics"]["duration_ms"] / 1e3
        expected[bisect.bisect_left(bounds, seconds)] += 1
    assert activity["latency"]["counts"] == expected and activity["failed"] == 0
    instances = [i for p in client.pool()["functions"] for i in p["instances"]]
    assert instances and all(i["memory"]["uss"] > 0 for i in instances if i["state"] == "ready")


def test_a_bad_token_is_refused_with_a_clear_error(server, browser):
    page = browser.new_page()
    page.goto(f"{server.url}/ui")
    page.fill("#token", "usetl_not-a-token")
    page.click("#sign-in")
    expect(page.locator("#signin-error")).to_contain_text("That token was refused")
    expect(page.locator("#signin-error")).to_contain_text("a valid bearer token is required")
    assert page.evaluate("sessionStorage.getItem('usetl-token')") is None
    page.close()


def test_the_dashboard_shows_what_the_api_says(server, tenant, browser):
    token, client, ids = tenant
    run = client.run_pipeline("twice", 4)
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    page.goto(f"{server.url}/ui/")
    page.fill("#token", token)
    page.click("#sign-in")
    expect(page.locator("#tenant")).to_have_text("tenant dana")
    live = client.function("hello")
    expect(page.locator("[data-function=hello] [data-field=version]")).to_have_text(
        str(live["version"]))
    expect(page.locator("[data-function=hello] [data-field=versions]")).to_have_text(
        ", ".join(map(str, live["versions"])))
    for invocation_id in ids:
        record = client.invocation(invocation_id)
        row = page.locator(f"[data-invocation='{invocation_id}']")
        expect(row.locator("[data-field=duration]")).to_have_text(
            f"{record['metrics']['duration_ms']:.2f} ms")
    activity = client.request("GET", "/v1/activity", params={"window": 60})
    expect(page.locator("[data-field=activity-count]")).to_have_text(
        str(activity["invocations"]))
    bars = page.locator("#activity [data-count]")
    shown = [int(bars.nth(i).get_attribute("data-count")) for i in range(bars.count())]
    assert shown == activity["latency"]["counts"]
    for instance in (i for p in client.pool()["functions"] for i in p["instances"]):
        expect(page.locator(f"[data-instance='{instance['id']}']")).to_contain_text("MiB")
    page.click(f"[data-invocation='{ids[0]}']")
    detail = page.locator("#invocation-detail")
    expect(detail.locator("[data-field=stdout]")).to_have_text("hello 1\n")
    phases = client.invocation(ids[0])["phases"]
    for name, value in phases.items():
        expect(detail.locator(f"[data-phase={name}] td.num")).to_have_text(f"{value:.2f} ms")
    expect(page.locator("[data-pipeline=twice] [data-field=stages]")).to_have_text(
        "hello → hello (retries 1)")
    [listed] = client.pipeline_runs("twice")
    expect(page.locator(f"[data-pipeline=twice] [data-run='{run['id']}']")).to_have_text(
        f"succeeded {(listed['finished'] - listed['created']) * 1e3:.2f} ms")
    expect(page.locator("#hosts")).to_contain_text("Single host")
    expect(page.locator("#schedules")).to_contain_text("No schedules")
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTEFACTS / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"dashboard screenshot: {shot}")
    assert fetched and all(url.startswith(server.url) for url in fetched), fetched
    page.close()

