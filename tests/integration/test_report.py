"""The evaluation runs end to end on small inputs and reports what it measured.

Real experiments (real VMs, real processes, a real HTTP server on 127.0.0.1)
run with tiny counts; the report must show every number from results.json,
every figure it links must exist, and failures must be shown, not dropped.
"""

import json
import re
import shutil
from dataclasses import replace

import pytest

from usetl.bench import config, report, runner
from usetl.bench.container import Container, rootfs_for
from usetl.bench.errors import BenchError, FeatureMissing
from usetl.bench.readme_table import END, START, update
from usetl.bench.report.document import fmt
from usetl.bench.workload import EXPECTED, WORK

TINY = replace(
    config.QUICK,
    coldstart_runs=3,
    coldstart_slow_runs=2,
    warmups=1,
    download_sizes_mib=(1, 2),
    download_runs=2,
    idle_instances=1,
    scaling_counts=(1, 2),
    density_budget_mib=512,  # well over 3 zygote children, and over other work's noise
    density_cap=3,
    heavy_cap=1,
    density_seconds=10,
    compat_modules=("json", "sqlite3", "numpy"),
    load_concurrency=2,
    load_warmup_s=0.3,
    load_seconds=0.7,
    platform_backends=("process",),
)


def broken(cfg, ctx):
    raise BenchError("broken on purpose by the test")


def partly_missing(cfg, ctx):
    """One series measured, one whose feature is missing: the second must not vanish."""

    def missing():
        raise FeatureMissing("missing on purpose by the test")

    return {"series": {
        "measured": ctx.attempt("measured series", lambda: {"ms": {"median": 1.5}}),
        "missing": ctx.attempt("missing series", missing),
    }}


def numbers_in_json(value, found: set[str]) -> None:
    """Every spelling the report may use for the numbers in a JSON value."""
    if isinstance(value, dict):
        for v in value.values():
            numbers_in_json(v, found)
    elif isinstance(value, list):
        for v in value:
            numbers_in_json(v, found)
    elif isinstance(value, bool):
        return
    elif isinstance(value, int | float):
        found.add(str(value))
        found.update(f"{value:.{d}f}" for d in range(5))
    elif isinstance(value, str):
        found.update(re.findall(r"-?\d+(?:\.\d+)*", value))


def numbers_in_text(text: str) -> list[str]:
    text = re.sub(r"\b(Figure|Table) \d+", "", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)  # figure file names
    return re.findall(r"(?<![\w.-])-?\d+(?:\.\d+)*(?![\w])", text)


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory, image):
    outdir = tmp_path_factory.mktemp("eval")
    chosen = [e for e in runner.EXPERIMENTS
              if e.name in ("floors", "coldstart", "memory", "scaling", "density", "download",
                            "rollback", "platform", "startup", "compat")]
    chosen.append(runner.Experiment("broken", "Broken experiment", broken))
    chosen.append(runner.Experiment("partial", "Partly missing experiment", partly_missing))
    results = runner.run_all(TINY, outdir, image=image, experiments=chosen)
    target = report.generate(outdir)
    return outdir, results, target.read_text()


@pytest.mark.kvm
def test_every_number_in_the_report_comes_from_the_json(evaluation):
    outdir, _, text = evaluation
    saved = json.loads((outdir / runner.RESULTS_FILE).read_text())
    known: set[str] = set()
    numbers_in_json(saved, known)
    stray = [n for n in numbers_in_text(text) if n not in known]
    assert not stray, f"numbers in the report that results.json does not hold: {stray[:20]}"
    assert saved["mode"] == "quick" and "**Quick mode.**" in text
    goals = {g["text"]: g for g in saved["goals"]}
    fork = saved["experiments"]["coldstart"]["series"]["hf_fork"]
    creation = goals["clone creation alone, median"]
    assert creation["measured"] == round(fork["fork_ms"]["median"], 3)
    assert creation["met"] == (creation["measured"] <= creation["target"])
    assert f"| {creation['text']} ({creation['source']}) |" in text
    in_turns = saved["experiments"]["coldstart"]["in_turns"]
    assert in_turns["status"] == "ok", in_turns
    to_zygote = goals["a new clone's fork to handler result against a SOCK-style zygote's "
                      "fork to result, median, in turns"]
    assert to_zygote["measured"] == round(in_turns["fork_vs_zygote"], 3)
    assert (in_turns["fork_vs_zygote"] == in_turns["hf_fork"]["ms"]["median"]
            / in_turns["zygote"]["ms"]["median"])
    assert "The goals table takes the cold paths from a second run" in text
    floors = saved["experiments"]["floors"]
    assert floors["recycled"]["request_exits"] <= 4 and floors["rollback"]["exits"] == 0
    assert goals["VM exits per rollback"]["met"] is True
    assert "The floors on this machine: a VM exit resumed from Python costs" in text
    bare = fmt(floors["bare_exit_us"])
    assert f"| bare exit: the port write alone, no handler | {bare} µs" in text


@pytest.mark.kvm
def test_every_figure_the_report_links_exists(evaluation):
    outdir, _, text = evaluation
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(linked) >= 3  # cold start, memory, download at least
    for name in linked:
        path = outdir / name
        assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.kvm
def test_the_measured_baselines_are_in_the_report(evaluation):
    _, results, text = evaluation
    cold = results["experiments"]["coldstart"]["series"]
    for name in ("usf_create", "usf_pool", "host_process", "zygote", "hf_fork", "hf_ready",
                 "hf_restore", "hf_recycle"):
        assert cold[name]["status"] == "ok", cold[name]
        median = cold[name]["ms"]["median"]
        assert median > 0
        assert f"| {cold[name]['label']} | {report.fmt(median)} |" in text
    memory = results["experiments"]["memory"]["series"]
    for name in ("hf_clone", "usf", "usf_monitor", "host_process", "container", "zygote"):
        assert memory[name]["status"] == "ok", memory[name]
        assert 0 < memory[name]["uss_mib"] <= memory[name]["rss_mib"]
    # A clone shares its template's pages: it owns less than a USF started on its own.
    assert memory["hf_clone"]["uss_mib"] < memory["usf"]["uss_mib"]
    scaling = results["experiments"]["scaling"]["series"]
    for name in ("hf_clone", "usf"):
        assert scaling[name]["status"] == "ok", scaling[name]
    assert [p["n"] for p in scaling["hf_clone"]["points"]] == [1, 2]
    assert [p["n"] for p in scaling["usf"]["points"]] == [1]  # heavy: capped at heavy_cap
    density = results["experiments"]["density"]["series"]["zygote"]
    assert density["held"] == TINY.density_cap and density["fits_in_budget"] >= density["held"]
    compat = results["experiments"]["compat"]["modules"]
    assert compat["json"]["usf"]["ok"] and compat["sqlite3"]["usf"]["ok"]
    for path in ("usf_etl", "usf_socket", "host_shm", "host_disk"):
        dl = results["experiments"]["download"]["series"][path]
        assert dl["status"] == "ok", dl
        assert [p["mib"] for p in dl["points"]] == [1, 2]
    assert "## Experimental setup" in text
    assert results["machine"]["kvm_backend"] in text
    rollback = results["experiments"]["rollback"]
    assert rollback["status"] == "ok", rollback.get("reason")
    assert [p["pages"] for p in rollback["points"]] == list(TINY.rollback_pages)
    assert all(p["restored_pages"]["median"] >= p["pages"] for p in rollback["points"])
    platform = results["experiments"]["platform"]["series"]
    for name in ("http_process_noop", "python_process_etl"):
        assert platform[name]["status"] == "ok", platform[name]
        assert platform[name]["errors"] == 0 and platform[name]["per_second"] > 0


@pytest.mark.kvm
def test_failures_are_reported_not_dropped(evaluation):
    _, results, text = evaluation
    assert results["experiments"]["broken"]["status"] == "failed"
    failures = text.split("## Failures", 1)[1]
    assert "broken on purpose by the test" in failures
    partial = results["experiments"]["partial"]
    assert partial["status"] == "ok"
    assert partial["series"]["measured"]["status"] == "ok"
    assert partial["series"]["missing"] == {
        "status": "failed", "label": "missing series",
        "reason": "FeatureMissing: missing on purpose by the test"}
    assert ("**missing series**: failed: FeatureMissing: missing on purpose by the test "
            "(Partly missing experiment)") in failures
    for exp in results["experiments"].values():
        for series in exp.get("series", {}).values():
            if series["status"] != "ok":
                assert f"**{series['label']}**: failed: {series['reason']}" in failures


@pytest.mark.kvm
def test_readme_table_is_replaced_between_its_markers(evaluation, tmp_path):
    outdir, results, _ = evaluation
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{START}\nstale\n{END}\nafter\n")
    update(readme, outdir)
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n") and text.endswith(f"{END}\nafter\n")
    assert "stale" not in text
    assert results["machine"]["kvm_backend"] in text
    usf = results["experiments"]["coldstart"]["series"]["usf_create"]["ms"]
    assert f"| USF, created per call | {report.fmt(usf['median'])} / " in text
    known: set[str] = set()
    numbers_in_json(json.loads((outdir / runner.RESULTS_FILE).read_text()), known)
    table = text.split(START, 1)[1].split(END, 1)[0]
    stray = [n for n in numbers_in_text(table) if n not in known]
    assert not stray, f"numbers in the README table that results.json does not hold: {stray}"


@pytest.mark.kvm
@pytest.mark.skipif(shutil.which("runc") is None, reason="runc is installed by `make setup`")
def test_a_container_runs_the_workload_read_only(image):
    assert (rootfs_for(image) / image.meta["executable"].lstrip("/")).exists()
    with Container(image, ["-I", "-S", "-c", WORK]) as c:
        assert c.run().decode().strip() == EXPECTED
    with Container(image, ["-I", "-S", "-c", "open('/written', 'w')"]) as c, \
            pytest.raises(BenchError, match="Read-only file system"):
        c.run()
