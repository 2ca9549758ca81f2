"""The LR benchmark end to end at a tiny size: every method runs, the JSON has the issue's
shape, the verdict follows from the numbers, and the docs page is generated from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuner.bench.lr import BenchConfig, run_bench
from tuner.bench.lr_docs import write_docs
from tuner.bench.lr_report import steps_to
from tuner.cli import main
from tuner.errors import ConfigError


@pytest.fixture(scope="module")
def nqm_doc() -> dict:
    return run_bench(BenchConfig(task="nqm", seeds=(0, 1), steps=300))


def test_nqm_doc_has_every_method_and_the_issue_fields(
    nqm_doc: dict, result_keys: frozenset[str]
) -> None:
    methods = {r["method"] for r in nqm_doc["results"]}
    assert methods == {
        "tautune",
        "autolrs-classic",
        "cosine-grid-best",
        "linear",
        "constant",
        "optimal",
    }
    for r in nqm_doc["results"]:
        assert set(r) >= result_keys and r["total_steps"] == 300
    cos = [r for r in nqm_doc["results"] if r["method"] == "cosine-grid-best"]
    assert nqm_doc["target_loss"] == pytest.approx(
        sorted(r["final_loss"] for r in cos)[0] / 2 + sorted(r["final_loss"] for r in cos)[1] / 2
    )
    grid = cos[0]["info"]["grid"]
    assert len(grid) == 6
    assert min(grid.values()) == pytest.approx(nqm_doc["target_loss"])
    # nothing beats the optimum of the exact expected loss
    best = min(row["final_loss_median"] for row in nqm_doc["summary"])
    opt = next(row for row in nqm_doc["summary"] if row["method"] == "optimal")
    assert opt["final_loss_median"] == pytest.approx(best, rel=1e-9)
    assert opt["ratio_to_optimal"] == pytest.approx(1.0)
    # exploring methods say what they threw away; fixed schedules throw nothing away
    rows = {row["method"]: row for row in nqm_doc["summary"]}
    assert rows["autolrs-classic"]["exploration_steps_median"] > 0
    assert rows["constant"]["exploration_steps_median"] == 0


def test_verdict_follows_from_the_medians(nqm_doc: dict) -> None:
    dw = nqm_doc["done_when"]
    rows = {row["method"]: row for row in nqm_doc["summary"]}
    assert dw["beats_cosine_grid_best"] == (
        rows["tautune"]["final_loss_median"] < rows["cosine-grid-best"]["final_loss_median"]
    )
    assert dw["within_10pct_of_optimal"] == (rows["tautune"]["ratio_to_optimal"] <= 1.1)


def test_nqm_reports_the_best_possible_after_tautunes_exploration(nqm_doc: dict) -> None:
    floor = nqm_doc["exploration_floor"]
    rows = {row["method"]: row for row in nqm_doc["summary"]}
    assert floor["exploration_steps"] == rows["tautune"]["exploration_steps_median"] > 0
    # fewer steps cannot do better than the optimum over all of them, nor can tautune,
    # which trains on exactly that many kept steps, beat the optimum over them
    assert floor["ratio"] > 1
    assert rows["tautune"]["final_loss_median"] >= floor["optimal_kept_final_loss"]
    ratio = nqm_doc["done_when"]["best_possible_ratio_after_tautune_exploration"]
    assert ratio == floor["ratio"]


def test_steps_to_target_ignores_states_that_were_thrown_away() -> None:
    curve = [[0, 3.0, True], [10, 1.0, False], [20, 1.5, True], [30, 0.9, True]]
    assert steps_to(curve, 1.2) == 30
    assert steps_to(curve, 0.5) is None


def test_docs_page_is_generated_from_the_json(nqm_doc: dict, tmp_path: Path) -> None:
    paths = write_docs([nqm_doc], tmp_path / "benchmarks.md", tmp_path)
    text = (tmp_path / "benchmarks.md").read_text()
    assert "autolrs-classic" in text and f"{nqm_doc['target_loss']:.4g}"[:4] in text
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_cli_writes_json_for_a_real_task(tmp_path: Path) -> None:
    out = tmp_path / "digits.json"
    rc = main(
        [
            "bench",
            "digits",
            "--steps",
            "60",
            "--seeds",
            "0",
            "--methods",
            "tautune,cosine-grid-best,constant",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["task"] == "digits" and {r["method"] for r in doc["results"]} == {
        "tautune",
        "cosine-grid-best",
        "constant",
    }


def test_unknown_task_or_method_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown LR benchmark"):
        run_bench(BenchConfig(task="mnist"))
    with pytest.raises(ConfigError, match="unknown methods"):
        run_bench(BenchConfig(task="nqm", steps=100, methods=("pbt",)))


def test_held_out_tasks_are_registered_apart_from_the_main_ones() -> None:
    from tuner.bench.lr import HELD_OUT_TASKS, MAIN_TASKS, TASKS

    assert MAIN_TASKS == ("nqm", "charlm", "digits")
    assert HELD_OUT_TASKS == ("digits-cnn", "digits-adamw", "charlm-sgd", "bytegpt")
    assert all(t.help and t.text for t in TASKS.values())
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "charlm-sgd", "--help"])  # every task has its own command
    assert exit_.value.code == 0


def test_held_out_group_writes_its_own_page(tmp_path: Path) -> None:
    (tmp_path / "benchmarks.md").write_text("# main\n")
    (tmp_path / "benchmarks-peers.md").write_text("# peers\n")
    rc = main(
        [
            "bench",
            "held-out",
            "--steps",
            "100",
            "--seeds",
            "0",
            "--methods",
            "tautune,cosine-grid-best",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    page = (tmp_path / "benchmarks-held-out.md").read_text()
    assert page.startswith("# Learning-rate schedule held-out tasks")
    assert "not designed on" in page and "(benchmarks.md)" in page
    assert "tautune bench held-out --out" in page
    assert "(benchmarks-peers.md)" in page and "(benchmarks-held-out.md)" not in page
    for task in ("digits-cnn", "digits-adamw", "charlm-sgd", "bytegpt"):
        doc = json.loads((tmp_path / f"bench-{task}.json").read_text())
        assert doc["task"] == task and len(doc["results"]) == 2
        assert f"bench-{task}.png" in page
    assert (tmp_path / "benchmarks.md").read_text() == "# main\n"  # the main page is not touched
