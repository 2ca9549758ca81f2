"""``tautune bench accel`` at its smoke size on this machine's device (the CPU in CI): every
variant timed, the tautune variants' reports all sent, the snapshot rows, the page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuner.bench.accel import VARIANTS, AccelConfig, run_accel
from tuner.bench.accel_cli import main
from tuner.errors import ConfigError


def test_the_quick_run_times_every_variant_and_snapshot(tmp_path: Path) -> None:
    cfg = AccelConfig.quick()
    doc = run_accel(cfg, progress=lambda _line: None)
    (section,) = doc["step_overhead"]
    assert [r["variant"] for r in section["rows"]] == list(VARIANTS)
    for r in section["rows"]:
        assert len(r["step_ms_reps"]) == cfg.reps
        assert r["step_ms"] > 0
    assert section["rows"][0]["over_bare_pct"] == 0.0
    # both tautune variants reported every step, warm-up block included
    assert section["reports_sent"] == 2 * (cfg.reps + 1) * cfg.steps
    kinds = [r["kind"] for r in doc["snapshot"]]
    assert kinds[1] == "snapshot on host" and kinds[2].startswith("state as bytes")
    assert kinds[3].startswith("those bytes through Redis")
    small = doc["snapshot"][0]["bytes"]
    assert small > 3 * 4 * section["rows"][0]["params"]  # weights and AdamW's two moments


def test_the_command_writes_json_and_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, page = tmp_path / "a.json", tmp_path / "a.md"
    assert main(["--quick", "--reps", "2", "--json", str(out), "--docs", str(page)]) == 0
    doc = json.loads(out.read_text())
    assert doc["config"]["reps"] == 2 and doc["device"]
    text = page.read_text()
    assert "## Run 1: tiny on " in text and "`tautune+tensor`" in text
    assert main(["--page", str(out)]) == 0
    assert "## Run 1: tiny" in capsys.readouterr().out


def test_a_section_alone(tmp_path: Path) -> None:
    cfg = AccelConfig(models=("tiny",), sections=("snapshot",), snapshot_reps=1)
    doc = run_accel(cfg, progress=lambda _l: None)
    assert doc["step_overhead"] == [] and len(doc["snapshot"]) == 4


def test_unknown_models_are_named() -> None:
    with pytest.raises(ConfigError, match="models are small, base, medium, large, tiny"):
        AccelConfig(models=("huge",))
    assert main(["--models", "huge", "--json", "/dev/null"]) == 1
    with pytest.raises(ConfigError, match="sections are overhead, snapshot"):
        AccelConfig(sections=("speed",))
