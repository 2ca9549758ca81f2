"""The mixture benchmark: its tasks, one run with a live controller, the summary and docs.

Small configurations only (tens of steps); the real numbers come from the full benchmark.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from tuner.bench.mixture import (
    METHODS,
    BenchConfig,
    add_parser,
    aliases,
    grid_points,
    ordered_schedule,
    run_bench,
    run_specs,
)
from tuner.bench.mixture_docs import selection_ranks, write_docs
from tuner.bench.mixture_report import done_when, evaluate, merge, summarize
from tuner.bench.mixture_run import RunSpec, steps_to_target, train_run
from tuner.errors import ConfigError
from workers.tasks.mixture_lm import (
    MixtureLMConfig,
    _split_docs,
    base64_blob,
    build_task,
    sums,
)

SMALL = MixtureLMConfig(domain_bytes=20_000, val_chunks=16)


@pytest.fixture(scope="module")
def task() -> Any:
    return build_task("mixture", SMALL)


# -- the tasks -------------------------------------------------------------------------------


def test_mixture_task_has_its_domains_and_a_clean_target(task: Any) -> None:
    assert task.arms == ("code", "prose", "arith_easy", "arith_hard", "base64")
    assert task.target == "clean" and "base64" not in task.targets["clean"]
    assert set(task.val) == set(task.arms)
    assert all(v.shape == (16, SMALL.chunk) for v in task.val.values())
    text = bytes(task.train[task.arm_starts["arith_easy"][0] :][:200].tolist()).decode()
    for line in text.splitlines()[1:-1]:
        a, rest = line.split("+")
        b, c = rest.split("=")
        assert int(a) + int(b) == int(c) and int(a) < 100 and int(b) < 100


def test_chunks_stay_inside_their_domain(task: Any) -> None:
    ranges = list(task.arm_starts.values())
    bounds = [r.start for r in ranges[1:]] + [len(task.train)]
    for r, end in zip(ranges, bounds, strict=True):
        assert r.step == SMALL.predict and r[-1] + SMALL.chunk <= end
        assert end - (r[-1] + SMALL.chunk) < SMALL.predict  # the domain is used up to its end


def test_tasks_are_deterministic() -> None:
    a, b = build_task("mixture", SMALL), build_task("mixture", SMALL)
    assert torch.equal(a.train, b.train)
    assert all(torch.equal(a.val[d], b.val[d]) for d in a.val)
    other = build_task("mixture", MixtureLMConfig(domain_bytes=20_000, val_chunks=16, data_seed=1))
    assert not torch.equal(a.val["arith_hard"], other.val["arith_hard"])


def test_validation_is_held_out() -> None:
    docs = [f"doc{i};".encode() for i in range(30)]
    split = _split_docs(docs, 10_000)
    held = {d for d in docs if d in split.val}
    assert held == {docs[9], docs[19], docs[29]}
    assert not any(d in split.train for d in held)
    # Generated domains: validation comes from another random stream than training.
    rng = __import__("numpy").random.default_rng
    assert sums(rng([0, 2, 0]), 500, 0, 10**5) != sums(rng([0, 2, 1]), 500, 0, 10**5)
    blob = base64_blob(rng(0), 300)
    assert set(blob) <= set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n")


def test_curriculum_buckets_are_padded_sums_of_their_digit_count() -> None:
    cur = build_task("curriculum", SMALL)
    assert cur.arms == cur.good_order == ("d1", "d2", "d3", "d4") and cur.target == "d4"
    for d, arm in enumerate(cur.arms, start=1):
        start = cur.arm_starts[arm][3]
        lines = bytes(cur.train[start : start + 200].tolist()).decode().splitlines()[1:-1]
        for line in lines:
            m = re.fullmatch(r"(\d{4})\+(\d{4})=(\d{5})", line)
            assert m, line
            a, b, c = map(int, m.groups())
            assert (a + b == c and len(str(a)) == len(str(b)) == d) or (d == 1 and a < 10)


def test_per_sample_loss_starts_near_uniform_bytes(task: Any) -> None:
    model = task.model(0)
    x = task.gather([task.arm_starts["code"][0], task.arm_starts["prose"][5]])
    loss = task.per_sample_loss(model, x)
    assert loss.shape == (2,)
    assert all(abs(v - math.log(256)) < 0.5 for v in loss.tolist())
    assert set(task.evaluate(model)) == set(task.arms)


# -- one run ---------------------------------------------------------------------------------


def test_a_controller_run_moves_the_weights_stage_by_stage(task: Any) -> None:
    spec = RunSpec(
        method="exp3s",
        seed=0,
        steps=48,
        eval_every=16,
        controller={"method": "exp3s", "tau": 12, "eta": 4.0},
    )
    run = train_run(task, spec)
    starts = [w["step"] for w in run["weights"]]
    assert starts == [0, 12, 24, 36]  # contiguous stages from step 0, none in the past
    vectors = {tuple(round(v, 6) for v in w["weights"].values()) for w in run["weights"]}
    assert len(vectors) > 1, "the controller never changed the mixture"
    summary = run["controller"]
    assert summary["scored_stages"] == 4 and summary["unattributed"] == 0
    assert summary["late_reports"] == 4 * 3  # each stage's last lead = tau // 4 steps
    assert run["curve"]["step"] == [0, 16, 32, 48]


def test_fixed_weights_and_schedules_are_what_the_run_records(task: Any) -> None:
    only_code = {a: float(a == "code") for a in task.arms}
    run = train_run(task, RunSpec(method="x", seed=1, steps=5, eval_every=5, weights=only_code))
    assert run["weights"] == [{"step": 0, "weights": only_code}] and "controller" not in run
    schedule = ordered_schedule(("a", "b", "c", "d"), 100)
    assert [s for s, _ in schedule] == [0, 25, 50, 75]
    assert schedule[1][1] == {"a": 0.5 / 3, "b": 0.5, "c": 0.5 / 3, "d": 0.5 / 3}
    with pytest.raises(ConfigError):
        RunSpec(method="x", seed=0, steps=5, eval_every=5)


def test_steps_to_target_is_the_first_measured_step_at_or_below_it() -> None:
    steps, losses = [0, 10, 20, 30], [1.0, 0.8, 0.5, 0.6]
    assert steps_to_target(steps, losses, 0.5) == 20
    assert steps_to_target(steps, losses, 0.6) == 20
    assert steps_to_target(steps, losses, 0.4) is None
    assert steps_to_target(steps, losses, 2.0) == 10  # step 0 does not count


# -- summary, grid and docs on synthetic runs ------------------------------------------------


def _run(method: str, seed: int, losses: list[float], weights: Any = None) -> dict[str, Any]:
    return {
        "method": method,
        "seed": seed,
        "total_steps": 30,
        "exploration_steps": 0,
        "wall_s": 1.0,
        "curve": {"step": [0, 10, 20, 30], "val": {"a": losses, "b": [9.0] * 4}},
        "weights": weights or [{"step": 0, "weights": {"a": 0.5, "b": 0.5}}],
    }


def _raw(task: str = "mixture") -> dict[str, Any]:
    moving = [
        {"step": 0, "weights": {"a": 0.5, "b": 0.5}},
        {"step": 10, "weights": {"a": 0.9, "b": 0.1}},
    ]
    runs = []
    for seed in (0, 1, 2):
        runs += [
            _run("uniform", seed, [3.0, 2.0, 1.5, 1.0]),
            _run("grid:+a", seed, [3.0, 1.8, 0.9, 0.85]),
            _run("grid:-a", seed, [3.0, 2.5, 2.4, 2.3]),
            _run("tautune", seed, [3.0, 1.5, 0.95 if seed else 1.2, 0.8], moving),
            _run("odm", seed, [3.0, 2.5, 2.2, 2.1]),
        ]
    return {
        "task": task,
        "arms": ["a", "b"],
        "targets": {"a_only": {"a": 1.0}, "both": {"a": 1.0, "b": 1.0}},
        "config": {
            "seeds": [0, 1, 2],
            "steps": 30,
            "tau": 10,
            "eval_every": 10,
            "jobs": 1,
            "model": {},
        },
        "machine": {
            "cpu": "test",
            "cpu_count": 2,
            "load_avg_at_start": None,
            "platform": "p",
            "python": "3",
            "torch": "2",
            "torch_threads_per_run": 1,
        },
        "command": "tautune bench mixture --seeds 0,1,2",
        "bench_wall_s": 1.0,
        "specs": {"controllers": {}},
        "runs": runs,
    }


def test_evaluate_picks_the_grid_best_and_measures_steps_against_uniform() -> None:
    ev = evaluate(_raw(), "a_only")
    assert ev["target_loss"] == 1.0 and ev["grid_best"] == "grid:+a"
    by = {(r["method"], r["seed"]): r for r in ev["results"]}
    assert {m for m, _ in by} == {"uniform", "static-grid-best", "tautune", "odm"}
    assert by[("uniform", 0)]["steps_to_target"] == 30 and by[("uniform", 0)]["speedup"] == 1.0
    assert by[("static-grid-best", 0)]["steps_to_target"] == 20
    assert by[("static-grid-best", 0)]["exploration_steps"] == 2 * 30
    assert (
        by[("tautune", 0)]["steps_to_target"] == 30 and by[("tautune", 1)]["steps_to_target"] == 20
    )
    assert by[("odm", 0)]["steps_to_target"] is None and by[("odm", 0)]["speedup"] is None
    summary = {row["method"]: row for row in ev["summary"]}
    assert summary["tautune"]["speedup_median"] == 1.5  # speedups 1.0, 1.5, 1.5
    assert summary["odm"]["speedup_median"] is None and summary["odm"]["reached"] == 0
    assert summary["tautune"]["final_loss_median"] == 0.8


def test_done_when_needs_both_speed_and_no_worse_than_the_grid(
    result_keys: frozenset[str],
) -> None:
    doc = summarize(_raw())
    dw = doc["done_when"]
    assert dw["speedup_met"] and dw["no_worse_met"] and dw["met"]
    rows = [dict(r) for r in doc["summary"]]
    next(r for r in rows if r["method"] == "tautune")["final_loss_median"] = 0.95
    assert not done_when(rows)["met"]  # slower to lose than the grid's 0.9
    assert summarize(_raw("curriculum")).get("done_when") is None
    both = doc["other_targets"]["both"]
    assert both["target_loss"] == 5.0  # (1.0 + 9.0) / 2
    for key in ("task", "target_loss", "results"):
        assert key in doc
    for row in doc["results"]:
        assert result_keys <= set(row)


def test_docs_show_the_measured_numbers_and_write_a_png(tmp_path: Path) -> None:
    doc = summarize(_raw())
    md, png = write_docs([doc], tmp_path / "b.md", tmp_path / "w.png", [doc], "regen-cmd")
    text = md.read_text()
    assert "| tautune | 0.8000 [0.8000–0.8000] | 20 (30, 20, 20) | 1.50 (1.00, 1.50, 1.50)" in text
    assert "static-grid-best (`grid:+a`)" in text and "Done-when (met)" in text
    assert "tautune bench mixture --seeds 0,1,2" in text and "test, 2 logical CPUs" in text
    assert "`regen-cmd`" in text and "| tautune | `{}` | 0.8000 | 1.50 | 1 | 1.00 |" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_selection_ranks_final_loss_and_speedup_and_finalists_come_first() -> None:
    def doc(task: str, rows: dict[str, tuple[float, float | None]]) -> dict[str, Any]:
        summary = [{"method": "uniform", "final_loss_median": 9.0, "speedup_median": 1.0}]
        summary += [
            {"method": m, "final_loss_median": f, "speedup_median": s} for m, (f, s) in rows.items()
        ]
        return {"task": task, "summary": summary}

    first = doc("mixture", {"low": (1.0, 1.1), "fast": (1.2, 1.5), "both": (1.1, 1.4)})
    second = doc("curriculum", {"fast": (2.0, None), "both": (1.9, 1.2)})
    ranked = selection_ranks([first, second])
    assert [r["method"] for r in ranked] == ["both", "fast", "low"]
    by = {r["method"]: r for r in ranked}
    assert by["both"]["scores"] == [2.0, 1.0]  # 2nd by final and by speedup, then 1st by both
    assert by["fast"]["scores"] == [2.0, 2.0]  # never arriving ranks last by speedup
    assert by["both"]["mean_score"] == 1.5 and by["fast"]["mean_score"] == 2.0
    assert by["low"]["tasks"] == 1 and by["low"]["mean_score"] == 2.0  # round one only


def test_merge_joins_candidate_batches_and_refuses_runs_that_disagree() -> None:
    a, b = _raw(), _raw()
    a["runs"] = [r for r in a["runs"] if r["method"] != "odm"]
    b["runs"] = [r for r in b["runs"] if r["method"] in ("uniform", "odm")]
    a["specs"] = {"controllers": {"tautune": {"method": "exp3s"}}}
    b["specs"] = {"controllers": {"odm": {"method": "odm"}}}
    merged = merge([summarize(a), summarize(b)])
    assert merged["summary"] == summarize(_raw())["summary"]
    assert set(merged["specs"]["controllers"]) == {"tautune", "odm"}
    b["runs"][0] = {**b["runs"][0], "curve": {"step": [0, 30], "val": {"a": [3, 2], "b": [9, 9]}}}
    with pytest.raises(ValueError, match="differs"):
        merge([summarize(a), summarize(b)])
    b["config"] = {**b["config"], "steps": 31}
    with pytest.raises(ValueError, match="cannot merge"):
        merge([summarize(a), summarize(b)])


def test_merge_joins_seeds_and_needs_every_method_on_every_seed() -> None:
    a, b = _raw(), _raw()
    a["runs"] = [r for r in a["runs"] if r["seed"] < 2]
    b["runs"] = [r for r in b["runs"] if r["seed"] == 2]
    merged = merge([summarize(a), summarize(b)])
    assert merged["config"]["seeds"] == [0, 1, 2]
    assert merged["summary"] == summarize(_raw())["summary"]
    b["runs"] = [r for r in b["runs"] if r["method"] != "odm"]
    with pytest.raises(ValueError, match="'odm' has no runs for seeds \\[2\\]"):
        merge([summarize(a), summarize(b)])


# -- the harness end to end, tiny ------------------------------------------------------------


def test_run_bench_writes_the_lr_benchmark_shape() -> None:
    cfg = BenchConfig(
        task="mixture",
        seeds=(0,),
        steps=24,
        tau=8,
        eval_every=8,
        quick=True,
        methods=("uniform", "tautune"),
    )
    doc = run_bench(cfg)
    json.dumps(doc)  # JSON data only
    assert doc["task"] == "mixture" and doc["target"] == "clean"
    assert [r["method"] for r in doc["results"]] == ["uniform", "tautune"]
    uniform = doc["results"][0]
    assert uniform["steps_to_target"] is not None and uniform["steps_to_target"] <= 24
    assert doc["target_loss"] == uniform["final_loss"]
    assert len(doc["results"][1]["weights"]) == 3
    assert doc["config"]["tau"] == 8 and doc["machine"]["cpu_count"]


def test_a_method_with_the_same_controller_trains_once_and_is_reported_twice() -> None:
    same = {"method": "exp3s", "reward": "learning_progress", "eta": 2.0}  # exp3s's defaults
    cfg = BenchConfig(
        task="mixture",
        seeds=(0,),
        steps=8,
        tau=4,
        eval_every=4,
        quick=True,
        methods=("uniform", "exp3s"),
        extra={"copy": same, "other": {"method": "exp3s", "eta": 1.0}},
    )
    assert aliases(cfg) == {"copy": "exp3s"}
    trained = [s.method for s in run_specs(cfg, build_task("mixture", SMALL))]
    assert trained == ["uniform", "exp3s", "other"]
    doc = run_bench(cfg)
    rows = {r["method"]: r for r in doc["results"]}
    assert rows["copy"]["same_as"] == "exp3s" and "same_as" not in rows["other"]
    assert rows["copy"]["final_loss"] == rows["exp3s"]["final_loss"]
    assert rows["other"]["final_loss"] != rows["exp3s"]["final_loss"]


def test_grid_and_cli() -> None:
    points = dict(grid_points(("a", "b", "c")))
    assert len(points) == 7 and points["grid:+a"] == {"a": 0.5, "b": 0.25, "c": 0.25}
    assert points["grid:-b"] == {"a": 0.5, "b": 0.0, "c": 0.5}
    assert all(abs(sum(w.values()) - 1) < 1e-12 for w in points.values())
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(
        [
            "curriculum",
            "--json",
            "x.json",
            "--seeds",
            "3,4,5",
            "--quick",
            "--spec",
            'd={"method": "dts"}',
        ]
    )
    assert args.bench_task == "curriculum" and args.seeds == (3, 4, 5) and args.quick
    assert args.spec == [("d", {"method": "dts"})] and args.json == "x.json"
    assert METHODS == ("uniform", "static-grid-best", "odm", "sec", "exp3s", "tautune")
    with pytest.raises(ConfigError):
        run_bench(BenchConfig(task="nope", seeds=(0,), steps=2))
