"""The LR benchmark page: tables, verdicts and figures from two small synthetic documents."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from tuner.bench.lr_docs import load_docs, main, plot_task, render, write_docs
from tuner.errors import ConfigError

SEEDS = [0, 1, 2]
MACHINE = {
    "platform": "Linux-test",
    "cpu": "Test CPU",
    "cpu_count": 2,
    "load_avg_at_start": [0.5, 0.4, 0.3],
    "python": "3.11.7",
    "torch": "2.13.0",
}


def _median_none_last(values: list[int | None]) -> int | None:
    """The benchmark's median of steps to target: never reached (None) ranks worst."""
    ranked = sorted(values, key=lambda v: (v is None, v or 0))
    return ranked[len(ranked) // 2]


def _doc(task: str, runs: dict[str, tuple[list[float], list[int | None]]]) -> dict[str, Any]:
    """A document in the benchmark's shape: per method, final losses and steps to target by
    seed; the summary is computed from them the way the benchmark does."""
    results = []
    for method, (finals, stts) in runs.items():
        for seed, final, stt in zip(SEEDS, finals, stts, strict=True):
            explore = 300 if method == "tautune" else 0
            peak = 0.1 * (seed + 1)
            info = (
                {"peak": 0.1, "grid": {"0.01": 0.9, "0.1": final}, "grid_total_steps": 4000}
                if method == "cosine-grid-best"
                else {}
            )
            results.append(
                {
                    "method": method,
                    "seed": seed,
                    "final_loss": final,
                    "steps_to_target": stt,
                    "total_steps": 2000,
                    "exploration_steps": explore,
                    "wall_s": 1.0 + seed,
                    "curve": [[s, 2.0 / (1 + s / 100) + final] for s in range(0, 2001, 250)],
                    "schedule": [[s, peak * (1 - s / 2100)] for s in range(0, 2001, 100)],
                    "info": info,
                }
            )
    optimal = statistics.median(runs["optimal"][0]) if "optimal" in runs else None
    summary = []
    for method, (finals, stts) in runs.items():
        median = statistics.median(finals)
        summary.append(
            {
                "method": method,
                "final_loss_median": median,
                "final_loss_min": min(finals),
                "final_loss_max": max(finals),
                "steps_to_target_median": _median_none_last(stts),
                "reached": f"{sum(s is not None for s in stts)}/{len(stts)}",
                "exploration_steps_median": 300 if method == "tautune" else 0,
                "wall_s_median": 2.0,
                "ratio_to_optimal": median / optimal if optimal else None,
            }
        )
    return {
        "task": task,
        "target_loss": 0.3,
        "target_method": "cosine-grid-best",
        "machine": dict(MACHINE),
        "config": {
            "seeds": SEEDS,
            "total_steps": 2000,
            "optimizer": "sgd",
            "tau": 200,
            "quick": False,
        },
        "command": f"tautune bench {task} --json docs/bench-{task}.json",
        "results": results,
        "summary": summary,
        "done_when": None,
    }


@pytest.fixture
def docs() -> list[dict[str, Any]]:
    nqm = _doc(
        "nqm",
        {
            "tautune": ([0.2, 0.4, 0.25], [1400, None, 1500]),
            "cosine-grid-best": ([0.3, 0.3, 0.31], [2000, 2000, None]),
            "constant": ([0.9, 0.8, 1.0], [None, None, None]),
            "optimal": ([0.125, 0.125, 0.125], [900, 950, 1000]),
        },
    )
    nqm["done_when"] = {
        "within_10pct_of_optimal": False,
        "beats_classic": True,
        "beats_cosine_grid_best": True,
        "tautune_final_median": 0.25,
    }
    digits = _doc(
        "digits",
        {
            "tautune": ([0.07, 0.09, 0.08], [1200, 1300, 1100]),
            "linear": ([0.1, 0.11, 0.12], [None, 1900, None]),
        },
    )
    digits["machine"]["cpu"] = "Other CPU"
    digits["text"] = "MLP on the bundled digits."
    return [nqm, digits]


def _row(md: str, section: str, method: str) -> str:
    body = md.split(f"## `{section}`", 1)[1].split("\n## ", 1)[0]
    return next(line for line in body.splitlines() if line.startswith(f"| {method}"))


def test_table_shows_medians_ranges_and_steps_to_target(docs: list[dict[str, Any]]) -> None:
    md = render(docs)
    # tautune on nqm: finals 0.2, 0.4, 0.25 -> median 0.25; steps 1400, never, 1500 -> 1500.
    row = _row(md, "nqm", "tautune")
    assert "| 0.25 [0.2–0.4] |" in row
    assert "| 1500 (1400, –, 1500) |" in row
    assert "| 300 |" in row  # exploration steps
    assert row.endswith("| 2 |")  # ratio to optimal: 0.25 / 0.125
    assert "| 0.9 [0.8–1] | – (–, –, –) |" in _row(md, "nqm", "constant")
    assert _row(md, "nqm", "cosine-grid-best").startswith("| cosine-grid-best (peak 0.1) |")
    assert "| 0.08 [0.07–0.09] | 1200 (1200, 1300, 1100) |" in _row(md, "digits", "tautune")
    assert "| 0.11 [0.1–0.12] | – (–, 1900, –) |" in _row(md, "digits", "linear")


def test_ratio_column_only_where_there_is_an_optimum(docs: list[dict[str, Any]]) -> None:
    md = render(docs)
    nqm, digits = md.split("## `nqm`")[1].split("## `digits`")
    assert "| wall s | ratio to optimal |" in nqm
    assert "| ratio to optimal |" not in digits


def test_page_names_commands_machine_verdicts_and_plots(docs: list[dict[str, Any]]) -> None:
    md = render(docs, "img")
    assert md.startswith("# Learning-rate schedule benchmarks")
    assert "`tautune bench nqm --json docs/bench-nqm.json`" in md
    assert "`tautune bench digits --json docs/bench-digits.json`" in md
    assert "Test CPU, 2 logical CPUs" in md
    assert "disagree on the machine" in md and "`digits`: Other CPU" in md
    assert "**Done-when (2 of 3 met).**" in md
    assert "within 10pct of optimal: not met; beats classic: met" in md
    assert "tautune final median: 0.25" in md
    assert "no criteria recorded" in md.split("## `digits`")[1]
    assert "## `digits`\n\nMLP on the bundled digits.\n" in md
    assert "(img/bench-nqm.png)" in md and "(img/bench-digits.png)" in md
    assert "seeds [0, 1, 2]; total steps 2000; optimizer `sgd`; tau 200; quick no;" in md
    assert "grid, final loss by peak LR: 0.01 → 0.9, 0.1 → 0.3." not in md  # differs by seed
    assert "grid (seed 2), final loss by peak LR: 0.01 → 0.9, 0.1 → 0.31." in md
    assert "Chosen peak: 0.1. Grid total steps: 4000." in md


def test_same_machine_is_not_flagged(docs: list[dict[str, Any]]) -> None:
    docs[1]["machine"] = dict(MACHINE, load_avg_at_start=[1.5, 1.0, 0.5])
    md = render(docs)
    assert "disagree" not in md
    assert "`nqm` [0.5, 0.4, 0.3], `digits` [1.5, 1, 0.5]" in md


def test_write_docs_writes_page_and_one_png_per_task(
    docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    out_md = tmp_path / "docs" / "benchmarks.md"
    written = write_docs(docs, out_md, tmp_path / "plots")
    assert written == [
        out_md,
        tmp_path / "plots" / "bench-nqm.png",
        tmp_path / "plots" / "bench-digits.png",
    ]
    for png in written[1:]:
        assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 5000
    assert "(../plots/bench-nqm.png)" in out_md.read_text()


def test_plot_survives_diverged_runs_and_missing_curves(
    docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    doc = docs[0]
    doc["results"][0]["curve"][-1][1] = float("nan")
    doc["results"][3]["curve"] = []
    path = plot_task(doc, tmp_path / "x" / "nqm.png")
    assert path.stat().st_size > 0


def test_load_docs_round_trip_and_errors_name_the_file(
    docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    good = tmp_path / "bench-nqm.json"
    good.write_text(json.dumps(docs[0]))
    assert load_docs([good]) == [docs[0]]

    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError, match=r"nope\.json: no such file"):
        load_docs([good, missing])

    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({k: v for k, v in docs[0].items() if k != "results"}))
    with pytest.raises(ConfigError, match=r"broken\.json: missing key 'results'"):
        load_docs([broken])

    no_task = tmp_path / "no-task.json"
    no_task.write_text(json.dumps({"results": []}))
    with pytest.raises(ConfigError, match=r"no-task\.json: missing key 'task'"):
        load_docs([no_task])

    not_json = tmp_path / "garbage.json"
    not_json.write_text("{not json")
    with pytest.raises(ConfigError, match=r"garbage\.json: not valid JSON"):
        load_docs([not_json])

    bad_row = tmp_path / "bad-row.json"
    bad_row.write_text(json.dumps(dict(docs[0], results=[{"method": "x"}])))
    with pytest.raises(ConfigError, match=r"bad-row\.json: results\[0\]"):
        load_docs([bad_row])


def test_one_document_per_task(docs: list[dict[str, Any]]) -> None:
    with pytest.raises(ConfigError, match="more than one document"):
        render([docs[0], docs[0]])
    with pytest.raises(ConfigError, match="no benchmark documents"):
        render([])


def test_main_regenerates_from_json(docs: list[dict[str, Any]], tmp_path: Path) -> None:
    paths = []
    for doc in docs:
        paths.append(tmp_path / f"bench-{doc['task']}.json")
        paths[-1].write_text(json.dumps(doc))
    out = tmp_path / "benchmarks.md"
    assert main([*map(str, paths), "--out", str(out)]) == 0
    text = out.read_text()
    assert "Generated by `python -m tuner.bench.lr_docs " in text
    assert (tmp_path / "bench-digits.png").stat().st_size > 0
    assert main([str(tmp_path / "missing.json"), "--out", str(out)]) == 1


def test_grid_shared_by_seeds_is_shown_once(docs: list[dict[str, Any]]) -> None:
    rows = [r for r in docs[0]["results"] if r["method"] == "cosine-grid-best"]
    for row, peak in zip(rows, [0.1, 0.1, 0.01], strict=True):
        row["info"] = {"peak": peak, "grid": {"0.00753566": 0.5, "0.1": 0.3}}
    md = render(docs)
    assert md.count("grid, final loss by peak LR: 0.00754 → 0.5, 0.1 → 0.3.") == 1
    assert "grid (seed" not in md
    assert "Chosen peaks: 0.1 (seed 0), 0.1 (seed 1), 0.01 (seed 2)." in md
    assert "| cosine-grid-best |" in md  # no single peak to name in the table
