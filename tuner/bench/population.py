"""Population ``explore`` against ``explore`` on one trial: ``tautune bench population``.

For each task and seed, in the same process: ``tautune`` (:class:`ExploreLR`, candidates
one after another from one snapshot) and ``tautune-population`` (P trials of the same run,
one candidate each, every trial on from the winner's state:
:class:`~tuner.controllers.population_explore.PopulationExplore`, driven by
:func:`~tuner.bench.lr_population.run_population`). Both have the same config, budget,
model, batches and step count. Reported per method: the final loss; the exploration steps
on one trial's timeline (steps its final state does not descend from); the steps all of
its trials trained; and, per seed, the population's final loss minus ``tautune``'s.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from tuner.bench.docs_common import machine_section, num_text
from tuner.bench.lr import BenchConfig, RunSpec, execute, make_trainable, schedule_fn
from tuner.bench.mixture_report import machine_info

DEFAULT_TASKS = ("charlm", "digits", "nqm", "digits-cnn", "digits-adamw", "charlm-sgd")


@dataclass(frozen=True)
class PopulationBench:
    tasks: tuple[str, ...] = DEFAULT_TASKS
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    trials: int = 3
    jobs: int = 1


def run_pair(task: str, seed: int, trials: int) -> list[dict[str, Any]]:
    """``tautune`` and ``tautune-population`` on ``task`` with ``seed``."""
    import torch

    from tuner.bench.lr_population import run_population
    from tuner.controllers.explore_config import ExploreConfig
    from tuner.controllers.population_explore import PopulationExplore

    torch.set_num_threads(1)
    cfg = BenchConfig(task=task)
    t, total = cfg.spec, cfg.total_steps
    seq = execute(cfg, RunSpec(method="tautune", kind="tautune", seed=seed))
    config = ExploreConfig(
        init_lr=t.centre,
        lr_min=t.grid[0] / 4,
        lr_max=t.grid[-1] * 4,
        total_steps=total,
        warmup_steps=t.warmup_steps,
        seed=seed,
    )
    pop = run_population(
        "tautune-population",
        [make_trainable(task, seed) for _ in range(trials)],
        PopulationExplore(config, trials, sync_margin=0),  # nothing claims steps ahead here
        schedule_fn("constant", t.centre, total, t.warmup_steps),
        total_steps=total,
        eval_every=cfg.eval_every,
        seed=seed,
    )
    rows = []
    for method, final, explored, trained, wall, summary in (
        (
            "tautune",
            seq["final_loss"],
            seq["exploration_steps"],
            total,
            seq["wall_s"],
            seq["info"]["summary"],
        ),
        (
            "tautune-population",
            pop.final_loss,
            pop.exploration_steps,
            trials * total,
            pop.wall_s,
            pop.info["summary"],
        ),
    ):
        rows.append(
            {
                "task": task,
                "seed": seed,
                "method": method,
                "final_loss": final,
                "exploration_steps": explored,
                "trained_steps": trained,
                "wall_s": round(wall, 3),
                "lr": summary.get("lr"),
            }
        )
    return rows


def run(bench: PopulationBench, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Every pair of runs, and the summary; the JSON document."""
    start = time.time()
    jobs = [(task, seed) for task in bench.tasks for seed in bench.seeds]
    rows: list[dict[str, Any]] = []
    machine = machine_info()
    if bench.jobs == 1:
        results: Any = (run_pair(task, seed, bench.trials) for task, seed in jobs)
    else:
        pool = ProcessPoolExecutor(bench.jobs)
        results = pool.map(run_pair, *zip(*jobs, strict=True), [bench.trials] * len(jobs))
    for (task, seed), pair in zip(jobs, results, strict=True):
        rows.extend(pair)
        seq, pop = pair
        progress(
            f"[{task} seed {seed}] tautune {seq['final_loss']:.4g} ({seq['exploration_steps']} "
            f"explored), population {pop['final_loss']:.4g} ({pop['exploration_steps']})"
        )
    return {
        "trials": bench.trials,
        "seeds": list(bench.seeds),
        "tasks": list(bench.tasks),
        "machine": machine,
        "bench_wall_s": round(time.time() - start, 1),
        "results": rows,
        "summary": summarize(rows, bench.tasks),
    }


def summarize(rows: Sequence[dict[str, Any]], tasks: Sequence[str]) -> list[dict[str, Any]]:
    """Per task: each method's medians, and the paired difference of final losses."""
    out = []
    for task in tasks:
        by = {
            m: sorted(
                (r for r in rows if r["task"] == task and r["method"] == m), key=lambda r: r["seed"]
            )
            for m in ("tautune", "tautune-population")
        }
        seq, pop = by["tautune"], by["tautune-population"]
        diffs = [p["final_loss"] - s["final_loss"] for s, p in zip(seq, pop, strict=True)]
        entry: dict[str, Any] = {
            "task": task,
            "paired_diff_median": statistics.median(diffs),
            "population_lower": sum(d < 0 for d in diffs),
            "population_equal": sum(d == 0 for d in diffs),
            "seeds": len(diffs),
        }
        for name, runs in by.items():
            entry[name] = {
                "final_median": statistics.median(r["final_loss"] for r in runs),
                "final_min": min(r["final_loss"] for r in runs),
                "final_max": max(r["final_loss"] for r in runs),
                "exploration_median": statistics.median(r["exploration_steps"] for r in runs),
                "trained_steps": runs[0]["trained_steps"],
                "wall_median": statistics.median(r["wall_s"] for r in runs),
            }
        out.append(entry)
    return out


def page(doc: dict[str, Any], command: str) -> str:
    """docs/benchmarks-population.md from the JSON document."""
    p = doc["trials"]
    lines = [
        "# Population exploration: one candidate per trial",
        "",
        f"Generated by `{command}` from the JSON it wrote; no number is edited by hand.",
        "",
        f"`tautune` is the default `explore` controller on one trial: it probes its candidates "
        f"one after another from one snapshot. `tautune-population` runs {p} trials of the "
        "same training and probes one candidate per trial at once, from one state, then every "
        'trial goes on from the winner\'s (`tune(population=P, lr=LRSpec(method="explore"))`, '
        "[`population_explore`](../tuner/controllers/population_explore.py)). Same task "
        "config, budget, seeds and step count; the trials run in lockstep in one process "
        "(states in memory instead of Redis), where no trial claims steps ahead of the head, "
        "so the stage starts where `explore`'s does (in a job it starts 32 steps past the "
        "furthest trial's horizon).",
        "",
        "- **final loss**: median over seeds [min–max].",
        "- **explored**: steps on one trial's timeline that its final state does not descend "
        "from (median): the time exploration costs.",
        "- **trained**: steps all of the method's trials trained: the compute.",
        "- **paired Δ**: median over seeds of the population's final loss minus `tautune`'s "
        "(negative: the population is lower), and on how many seeds it is lower, or equal "
        "to the last bit (both made the same pick from the same state and kept as many "
        "steps).",
        "",
        *machine_section(doc["machine"]),
        f"Seeds {doc['seeds']}; {doc['bench_wall_s']} s for the whole benchmark.",
        "",
        "| task | method | final loss | explored | trained | paired Δ |",
        "|---|---|---|---|---|---|",
    ]
    for e in summarize(doc["results"], doc["tasks"]):
        for name in ("tautune", "tautune-population"):
            m = e[name]
            same = f", equal on {e['population_equal']}" if e["population_equal"] else ""
            delta = (
                f"{num_text(e['paired_diff_median'])} (lower on {e['population_lower']}"
                f"{same} of {e['seeds']})"
                if name != "tautune"
                else ""
            )
            lines.append(
                f"| {e['task']} | {name} | {num_text(m['final_median'])} "
                f"[{num_text(m['final_min'])}–{num_text(m['final_max'])}] | "
                f"{m['exploration_median']:g} | {m['trained_steps']} | {delta} |"
            )
    lines.append("")
    return "\n".join(lines)
