"""The peers benchmark: step and compute counting, the optimizer trainables, the CLI and
docs, and (slow) the whole suite on nqm with real Ray Tune PBT and PB2."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pytest

from tuner.bench import peers_cli
from tuner.bench.lr import BenchConfig
from tuner.bench.peers import PeersConfig, add_compute, command_line, population_spec, run_peers
from tuner.bench.peers_docs import load_suite, write_peers_docs
from tuner.bench.peers_ray import PopulationSpec, lineage_row
from tuner.errors import ConfigError


def _spec(population_steps: int = 80) -> PopulationSpec:
    return PopulationSpec("pbt", "nqm", 0, population_steps, 10, 2, (0.01, 1.0))


def _report(trial: str, point: str, parent: str, step: int, loss: float) -> dict[str, Any]:
    return {
        "trial": trial,
        "point": point,
        "parent": parent,
        "state_step": step,
        "trained": 10,
        "loss": loss,
        "lr": 0.1,
        "loss0": 5.0,
    }


def test_lineage_is_followed_across_an_exploit_and_counted_in_population_steps() -> None:
    reports = [
        _report("a", "a1", "", 10, 3.0),
        _report("b", "b1", "", 10, 4.0),
        _report("a", "a2", "a1", 20, 2.0),
        _report("b", "b2", "b1", 20, 3.5),
        _report("b", "b3", "a2", 30, 1.0),  # b restored a's state at 20, trained 10 more
        _report("a", "a3", "a2", 30, 1.5),
    ]
    row = lineage_row(_spec(60), reports, wall=1.0)
    assert row["final_loss"] == 1.0 and row["total_steps"] == 60
    # lineage a1 -> a2 -> b3: x is the population's steps when each loss arrived
    assert row["curve"] == [[0, 5.0], [10, 3.0], [30, 2.0], [50, 1.0]]
    assert row["info"]["lineage_curve"] == [[0, 5.0], [10, 3.0], [20, 2.0], [30, 1.0]]
    assert row["info"]["lineage_member_switches"] == 1
    assert row["exploration_steps"] == 60 - 30
    assert row["info"]["member_state_steps"] == [30, 30]


def test_a_diverged_member_is_never_the_best() -> None:
    reports = [_report("a", "a1", "", 10, math.nan), _report("b", "b1", "", 10, 4.0)]
    row = lineage_row(_spec(20), reports, wall=1.0)
    assert row["final_loss"] == 4.0
    assert row["info"]["member_final_losses"][0] == 4.0  # NaN ranked last


def _row(method: str, stt: int | None, total: int = 100) -> dict[str, Any]:
    return {"method": method, "steps_to_target": stt, "total_steps": total}


def test_compute_to_target_charges_the_grid_to_the_methods_that_need_it() -> None:
    doc: dict[str, Any] = {
        "results": [
            _row("cosine-grid-best", 90),
            _row("linear", 80),
            _row("schedulefree@grid-peak", None),
            _row("tautune", 70),
            _row("pbt", 400, total=600),
        ],
        "summary": [
            {"method": m}
            for m in ("cosine-grid-best", "linear", "schedulefree@grid-peak", "tautune", "pbt")
        ],
    }
    add_compute(doc, total=100)
    got = {r["method"]: (r["compute_to_target"], r["total_compute"]) for r in doc["results"]}
    assert got == {
        "cosine-grid-best": (600, 600),
        "linear": (680, 700),
        "schedulefree@grid-peak": (None, 700),
        "tautune": (70, 100),
        "pbt": (400, 600),
    }
    assert doc["compute_to_target"]["linear"] == 680


def test_population_gets_the_grids_budget_and_perturbs_about_every_tenth() -> None:
    spec = population_spec("pb2", BenchConfig(task="digits", steps=1500), 3)
    assert spec.population_steps == 6 * 1500
    assert spec.lr_bounds == pytest.approx((0.003 / 4, 0.3 * 4))
    assert spec.perturbation_steps == 150 and spec.warmup == 30
    lrs = spec.initial_lrs()
    assert len(lrs) == 4 and all(0.003 / 4 <= x <= 1.2 for x in lrs)
    assert lrs == population_spec("pbt", BenchConfig(task="digits", steps=1500), 3).initial_lrs()


def test_bad_configs_are_refused_clearly() -> None:
    with pytest.raises(ConfigError, match="unknown peers task"):
        PeersConfig(tasks=("mnist",)).check()
    with pytest.raises(ConfigError, match="jobs"):
        PeersConfig(jobs=0).check()
    with pytest.raises(ConfigError, match="distinct"):
        PeersConfig(seeds=(1, 1)).check()
    with pytest.raises(ConfigError, match="population method"):
        PopulationSpec("asha", "nqm", 0, 10, 1, 1, (0.1, 1.0))
    with pytest.raises(ConfigError, match="lr_bounds"):
        PopulationSpec("pbt", "nqm", 0, 10, 1, 1, (1.0, 0.1))


def test_command_line_and_defaults() -> None:
    quick = PeersConfig(quick=True)
    assert quick.task_list == ("digits", "nqm") and quick.seed_list == (0, 1)
    assert PeersConfig().task_list == (
        "nqm",
        "charlm",
        "digits",
        "digits-cnn",
        "digits-adamw",
        "charlm-sgd",
        "bytegpt",
    )  # every LR task, the held-out ones after the main ones
    assert (
        command_line(PeersConfig(jobs=2), "x.json") == "tautune bench peers --json x.json --jobs 2"
    )


@pytest.mark.slow
def test_schedulefree_and_prodigy_train_digits_and_restore_exactly() -> None:
    from tuner.bench.lr import make_trainable
    from tuner.bench.peers_optim import OptimizerTrainable, execute_optimizer

    cfg = BenchConfig(task="digits", steps=60)
    for method in ("schedulefree", "prodigy"):
        row = execute_optimizer(cfg, method, method, 0, 0.3, {})
        assert row["total_steps"] == 60 and row["final_loss"] < row["curve"][0][1]
    task = make_trainable("digits", 0).task  # type: ignore[attr-defined]
    sf = OptimizerTrainable(task, "schedulefree", "sgd", 0, 0.3, 5)
    for _ in range(10):
        sf.step(0.3)
    state = sf.save()
    first = [sf.step(0.3) for _ in range(5)] + [sf.evaluate()]
    assert all(g["train_mode"] for g in sf.opt.param_groups)  # evaluate switched back
    sf.load(state)
    assert [sf.step(0.3) for _ in range(5)] + [sf.evaluate()] == first


def _tiny_suite() -> dict[str, Any]:
    doc: dict[str, Any] = {
        "task": "nqm",
        "target_loss": 1.0,
        "config": {"seeds": [0], "total_steps": 100},
        "results": [
            {
                **_row("cosine-grid-best", 100),
                "seed": 0,
                "final_loss": 1.0,
                "curve": [[0, 3.0], [100, 1.0]],
                "schedule": [[0, 0.1], [99, 0.01]],
                "info": {"peak": 0.1, "grid": {"0.1": 1.0}, "grid_total_steps": 600},
            },
            {
                **_row("pbt", 500, total=600),
                "seed": 0,
                "final_loss": 0.9,
                "curve": [[0, 3.0], [500, 0.9]],
                "schedule": [[0, 0.2]],
                "info": {"member_final_losses": [0.9, 1.2], "initial_lrs": [0.2, 0.02]},
            },
        ],
        "summary": [
            {"method": m, "final_loss_median": x, "final_loss_min": x, "final_loss_max": x}
            for m, x in (("cosine-grid-best", 1.0), ("pbt", 0.9))
        ],
        "not_applicable": [{"method": "prodigy", "reason": "no torch optimizer"}],
    }
    add_compute(doc, total=100)
    for row in doc["summary"]:
        row["steps_to_target_median"] = row["compute_to_target_median"]
    command = "tautune bench peers --json x"
    return {"benchmark": "peers", "command": command, "bench_wall_s": 1.0, "tasks": [doc]}


def test_cli_writes_json_and_docs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tuner.bench.peers as peers

    monkeypatch.setattr(peers, "run_peers", lambda cfg, progress, json_path: _tiny_suite())
    out, md = tmp_path / "peers.json", tmp_path / "docs" / "peers.md"
    parser = argparse.ArgumentParser()
    peers_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["peers", "--json", str(out), "--quick", "--docs", str(md)])
    assert args.func(args) == 0
    suite = load_suite(out)
    assert suite["tasks"][0]["task"] == "nqm"
    text = md.read_text()
    assert "**Not applicable:** `prodigy`: no torch optimizer." in text and "| pbt |" in text
    assert (tmp_path / "docs" / "bench-peers-nqm.png").stat().st_size > 0


def test_load_suite_refuses_other_documents(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_suite(tmp_path / "missing.json")
    lr_doc = tmp_path / "bench-nqm.json"
    lr_doc.write_text(json.dumps({"task": "nqm", "results": [], "summary": []}))
    with pytest.raises(ConfigError, match="not a peers benchmark"):
        load_suite(lr_doc)


@pytest.mark.slow
def test_suite_on_nqm_with_real_pbt_and_pb2(tmp_path: Path, result_keys: frozenset[str]) -> None:
    suite = run_peers(PeersConfig(tasks=("nqm",), seeds=(0,), quick=True))
    (doc,) = suite["tasks"]
    total = doc["config"]["total_steps"]
    methods = {r["method"] for r in doc["results"]}
    assert methods == {"tautune", "cosine-grid-best", "linear", "pbt", "pb2"}
    assert {na["method"] for na in doc["not_applicable"]} == {
        "schedulefree",
        "schedulefree@grid-peak",
        "schedulefree@10x-grid-peak",
        "prodigy",
    }
    assert all(na["reason"] for na in doc["not_applicable"])
    for r in doc["results"]:
        assert set(r) >= result_keys | {"compute_to_target", "total_compute"}
    for r in (r for r in doc["results"] if r["method"] in ("pbt", "pb2")):
        report = r["info"]["report_every"]
        assert 6 * total <= r["total_steps"] < 6 * total + report
        steps = [x for x, _ in r["curve"]]
        assert steps == sorted(steps) and steps[-1] <= r["total_steps"]
        assert r["final_loss"] == min(r["info"]["member_final_losses"])
        assert r["exploration_steps"] == r["total_steps"] - r["info"]["best_member_state_steps"]
        assert r["compute_to_target"] == r["steps_to_target"]
    grid = next(r for r in doc["results"] if r["method"] == "cosine-grid-best")
    assert grid["total_compute"] == 6 * total and grid["info"]["grid_wall_s"] > 0
    assert set(doc["compute_to_target"]) == methods
    path = tmp_path / "peers.json"
    path.write_text(json.dumps(suite))
    written = write_peers_docs(load_suite(path), tmp_path / "benchmarks-peers.md")
    assert all(p.stat().st_size > 0 for p in written)
