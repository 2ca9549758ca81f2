"""`tautune demo` end to end in a subprocess: summary, plot, and no process left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

WATCHED = ("redis-server", "raylet", "gcs_server", "ray::")


def _watched_pids() -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(name in cmd for name in WATCHED):
            pids.add(int(entry.name))
    return pids


@contextmanager
def _leaves_no_process() -> Iterator[None]:
    """Fails if a Redis or Ray process started inside the block outlives it by 20 s."""
    before = _watched_pids()
    yield
    deadline = time.monotonic() + 20
    while (left := _watched_pids() - before) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"processes left behind: {left}"


def _demo(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``tautune demo ARGS`` in a subprocess on the embedded Redis; it must exit 0."""
    env = {k: v for k, v in os.environ.items() if k != "TAUTUNE_REDIS_URL"}
    proc = subprocess.run(
        [sys.executable, "-m", "tuner.cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_demo_runs_end_to_end_and_cleans_up(tmp_path: Path) -> None:
    with _leaves_no_process():
        proc = _demo("--steps", "300", "--tau", "50", "--out", str(tmp_path), timeout=300)
        assert "Same model, data order and step budget" in proc.stdout
        assert "constant LR" in proc.stdout and "tautune (tuned LR)" in proc.stdout
        png = tmp_path / "demo.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["decisions"] >= 4
        for run in summary["runs"].values():
            assert 0 < run["val_loss"] < 6.0  # 5.55 nats/byte is a uniform guess


def test_mixture_demo_tunes_lr_and_mixture_in_one_job(tmp_path: Path) -> None:
    with _leaves_no_process():
        proc = _demo(
            "--mixture", "--steps", "240", "--tau", "40", "--out", str(tmp_path), timeout=400
        )
        assert "final mixture" in proc.stdout
        assert (tmp_path / "demo-mixture.png").read_bytes()[:4] == b"\x89PNG"
        summary = json.loads((tmp_path / "summary-mixture.json").read_text())
        assert summary["decisions"] >= 4 and summary["head"]["error"] is None
        weights = summary["final_weights"]
        assert abs(sum(weights.values()) - 1.0) < 1e-6 and len(weights) == 5
