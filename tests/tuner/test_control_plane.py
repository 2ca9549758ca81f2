"""The control-plane benchmark (``tautune bench control-plane``): a tiny run of every
section end to end against real redis-servers, the command capture its load generator
pipelines with, and the command line.

The sizes here only check that each section measures what it says; the numbers come from
the full run.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest

from trials.store import Store
from tuner.bench import control_plane_cli
from tuner.bench.control_plane import SECTIONS, SuiteConfig
from tuner.bench.control_plane_cli import add_parser, build_config, main
from tuner.bench.cp_capture import CommandCapture
from tuner.bench.cp_common import summary
from tuner.errors import ConfigError
from tuner.records import Decision, DecisionKind, Report

TINY = [
    "--quick",
    "--workers",
    "60",
    "--seconds",
    "1",
    "--overhead-reps",
    "2",
    "--stall-steps",
    "110",
    "--latency-samples",
    "8",
    "--bo-observations",
    "4,66",
]


@pytest.fixture(scope="module")
def doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("control-plane")
    path, png = out / "cp.json", out / "cp.png"
    assert main([*TINY, "--json", str(path), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def test_the_document_has_every_section_and_judged_targets(doc: dict[str, Any]) -> None:
    assert doc["suite"] == "control-plane" and doc["quick"] is True
    assert set(doc["results"]) == set(SECTIONS)
    assert doc["machine"]["cpus_usable"] >= 1 and doc["machine"]["redis_version"]
    assert set(doc["usage"]) == set(SECTIONS)
    assert all(u["wall_s"] > 0 for u in doc["usage"].values())
    expected = {
        "agent_overhead_healthy",
        "agent_overhead_unattended",
        "boundary_stall_sync",
        "boundary_stall_async",
        "boundary_stall_async_flush",
        "decision_latency_within_sync_stall_limit",
        "scale_p99",
        "bo_cost_bounded",
    }
    assert set(doc["targets"]) == expected
    assert all(isinstance(t["met"], bool) for t in doc["targets"].values())
    assert doc["targets"]["agent_overhead_healthy"]["limit_us"] == pytest.approx(50.0)


def test_agent_overhead_ran_the_real_agent_in_both_cases(doc: dict[str, Any]) -> None:
    section = doc["results"]["agent_overhead"]
    cfg = section["config"]
    rows = {r["case"]: r for r in section["results"]}
    assert set(rows) == {"healthy", "unattended"}
    for row in rows.values():
        timed = cfg["reps"] * cfg["steps_per_block"]
        assert row["inline_us"]["n"] == timed == row["inline_bare_us"]["n"]
        assert row["step_us"] > 1000  # a 5 ms step, give or take a busy machine
        assert row["reports_sent"] == timed + cfg["steps_per_block"]  # and the warm-up
        assert row["redis_scripts_per_step"] > 0
    # healthy: the decisions written up front were applied; unattended: the base schedule
    assert rows["healthy"]["decision_version_at_end"] >= 1
    assert rows["unattended"]["decision_version_at_end"] == 0
    # unattended: one claim per lookahead (16 steps), one append per flush (32 reports),
    # plus the reporter's timed flush (every 0.5 s, bare blocks included: each timed step
    # spans a bare step and an agent step of wall time), however slow the machine
    row = rows["unattended"]
    timed_flushes = (row["step_us"] + row["with_agent_us"]) / 1e6 / 0.5
    assert row["redis_scripts_per_step"] <= 1 / 16 + 1 / 32 + timed_flushes + 0.01


def test_boundary_stall_crossed_boundaries_with_a_live_head(doc: dict[str, Any]) -> None:
    scenarios = doc["results"]["boundary_stall"]["scenarios"]
    assert set(scenarios) == {"sync", "async", "async_flush"}
    for run in scenarios.values():
        assert run["head_error"] is None
        assert run["boundaries"] >= 1 and run["late_boundaries"] == 0
        assert run["stall_off_boundary_ms"] == 0.0
        assert (
            run["stall_total_ms"]
            < 1000 * doc["results"]["boundary_stall"]["config"]["sync_timeout_s"]
        )
    assert scenarios["sync"]["spec"]["lead"] == 1 and "lead" not in scenarios["async"]["spec"]
    assert scenarios["async_flush"]["agent"]["flush_every"] == 4


def test_decision_latency_timed_every_decision(doc: dict[str, Any]) -> None:
    section = doc["results"]["decision_latency"]
    assert section["missed"] == 0 and section["head_error"] is None
    assert section["latency_ms"]["n"] == 8
    assert 0 < section["latency_ms"]["p50"] <= section["latency_ms"]["max"]
    assert section["latency_ms"]["p50"] >= section["append_ms"]["p50"]


def test_scale_stored_every_report_it_sent(doc: dict[str, Any]) -> None:
    section = doc["results"]["scale"]
    (level,) = section["levels"]
    assert level["workers"] == 60 and level["jobs"] == 1
    assert level["errors"] == 0 and level["crashed"] is None
    assert level["reports_stored"] == level["reports_sent"]
    assert level["latency_ms"]["n"] > 0
    memory = level["memory"]
    assert memory["per_job_bytes"] > 0 and memory["per_1000_reports_bytes"] > 0
    assert any("reports" in key for key in memory["by_key_bytes"])
    assert section["largest_held"] in (0, 60)


def test_bo_cost_window_caps_the_points_kept(doc: dict[str, Any]) -> None:
    section = doc["results"]["bo_cost"]
    window = section["default_window"]
    rows = {r["observations"]: r for r in section["bounded"]}
    assert rows[66]["kept"] == window and rows[4]["kept"] < window
    assert all(r["observe_suggest_ms"] > 0 and r["best_lr_ms"] > 0 for r in rows.values())
    assert section["unbounded"] == []  # --quick leaves the unbounded contrast out


def test_capture_sends_exactly_the_stores_commands(store: Store) -> None:
    cap = CommandCapture(store.url)
    captured, direct = cap.job("captured"), store.job("direct")
    reports = [Report(rank=3, step=s, metrics={"loss": 1.0 / (s + 1)}) for s in range(5)]
    command = cap.capture(lambda: captured.append_reports(reports))
    assert command[0] == "EVALSHA" and captured.report_count() == 0  # nothing was sent
    direct.append_reports(reports)
    store.client.execute_command(*command)
    assert captured.progress() == direct.progress() == {3: (0, 4)}
    assert captured.report_count() == direct.report_count() == 5

    decision = Decision(stage=0, kind=DecisionKind.COMMIT, from_step=0, until_step=50, lr=0.2)
    for job in (captured, direct):
        job.commit(expected_version=0, decision=decision)
    claim = direct.claim(7)  # (which also loads the claim script into Redis)
    command = cap.capture(lambda: captured.claim(7))
    raw, valid_until, _alive = store.client.execute_command(*command)
    assert claim.decision is not None and int(valid_until) == claim.valid_until == 50
    assert json.loads(raw)["lr"] == claim.decision.lr == 0.2
    assert captured.horizon() == direct.horizon() == 49  # the promise was written too
    cap.close()


def test_cli_builds_the_config_it_is_asked_for() -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="bench_task"))
    args = parser.parse_args(["control-plane", "--json", "x.json", *TINY])
    cfg = build_config(args)
    assert cfg.quick and cfg.scale.workers == (60,) and cfg.scale.seconds == 1.0
    assert cfg.overhead.reps == 2 and cfg.stall.steps == 110 and cfg.latency.samples == 8
    assert cfg.bo.observations == (4, 66)
    full = build_config(parser.parse_args(["control-plane", "--json", "x.json"]))
    assert full == SuiteConfig.full() and not full.quick
    assert full.scale.workers == (500, 1000, 2000, 5000, 10000)
    with pytest.raises(SystemExit):
        parser.parse_args(["control-plane", "--json", "x", "--sections", "nope"])
    with pytest.raises(ConfigError):
        SuiteConfig(sections=("nope",))
    assert control_plane_cli.SECTIONS == SECTIONS  # the parser's copy (it imports no torch)


def test_summary_reports_observed_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    s = summary(values)
    assert (s["n"], s["p50"], s["p99"], s["max"], s["mean"]) == (100, 50.0, 99.0, 100.0, 50.5)
    assert summary([]) == {"n": 0}
    assert summary([0.002], 1e3)["p99"] == 2.0
