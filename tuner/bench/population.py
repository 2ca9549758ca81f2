"""Population ``explore`` against ``explore`` on one trial: ``tautune bench population``.

For each task and seed, in the same process: ``tautune`` (:class:`ExploreLR`, candidates
one after another from one snapshot) and ``tautune-population-P`` (P trials of the same run,
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
    trials: tuple[int, ...] = (3, 5)
    jobs: int = 1


def method_name(trials: int) -> str:
    return f"tautune-population-{trials}"


def _row(task: str, seed: int, method: str, **fields: Any) -> dict[str, Any]:
    return {"task": task, "seed": seed, "method": method, **fields}


def run_set(task: str, seed: int, trials: Sequence[int]) -> list[dict[str, Any]]:
    """``tautune`` and a population of each size in ``trials`` on ``task`` with ``seed``."""
    import torch

    from tuner.bench.lr_population import run_population
    from tuner.controllers.explore_config import ExploreConfig
    from tuner.controllers.population_explore import PopulationExplore

    torch.set_num_threads(1)
    cfg = BenchConfig(task=task)
    t, total = cfg.spec, cfg.total_steps
    seq = execute(cfg, RunSpec(method="tautune", kind="tautune", seed=seed))
    rows = [
        _row(
            task,
            seed,
            "tautune",
            final_loss=seq["final_loss"],
            exploration_steps=seq["exploration_steps"],
            trained_steps=total,
            wall_s=seq["wall_s"],
            lr=seq["info"]["summary"].get("lr"),
        )
    ]
    config = ExploreConfig(
        init_lr=t.centre,
        lr_min=t.grid[0] / 4,
        lr_max=t.grid[-1] * 4,
        total_steps=total,
        warmup_steps=t.warmup_steps,
        seed=seed,
    )
    for p in trials:
        pop = run_population(
            method_name(p),
            [make_trainable(task, seed) for _ in range(p)],
            PopulationExplore(config, p, sync_margin=0),  # nothing claims steps ahead here
            schedule_fn("constant", t.centre, total, t.warmup_steps),
            total_steps=total,
            eval_every=cfg.eval_every,
            seed=seed,
        )
        rows.append(
            _row(
                task,
                seed,
                method_name(p),
                final_loss=pop.final_loss,
                exploration_steps=pop.exploration_steps,
                trained_steps=p * total,
                wall_s=round(pop.wall_s, 3),
                lr=pop.info["summary"].get("lr"),
            )
        )
    return rows


def run(bench: PopulationBench, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Every run, and the summary; the JSON document."""
    start = time.time()
    jobs = [(task, seed) for task in bench.tasks for seed in bench.seeds]
    rows: list[dict[str, Any]] = []
    machine = machine_info()
    if bench.jobs == 1:
        results: Any = (run_set(task, seed, bench.trials) for task, seed in jobs)
    else:
        pool = ProcessPoolExecutor(bench.jobs)
        results = pool.map(run_set, *zip(*jobs, strict=True), [bench.trials] * len(jobs))
    for (task, seed), runs in zip(jobs, results, strict=True):
        rows.extend(runs)
        progress(
            f"[{task} seed {seed}] "
            + ", ".join(
                f"{r['method']} {r['final_loss']:.4g} ({r['exploration_steps']} explored)"
                for r in runs
            )
        )
    return {
        "trials": list(bench.trials),
        "seeds": list(bench.seeds),
        "tasks": list(bench.tasks),
        "machine": machine,
        "bench_wall_s": round(time.time() - start, 1),
        "results": rows,
        "summary": summarize(rows, bench.tasks, bench.trials),
    }


def summarize(
    rows: Sequence[dict[str, Any]], tasks: Sequence[str], trials: Sequence[int]
) -> list[dict[str, Any]]:
    """Per task and method: medians, and a population's paired difference to ``tautune``."""
    out = []
    for task in tasks:
        by = {
            m: sorted(
                (r for r in rows if r["task"] == task and r["method"] == m),
                key=lambda r: r["seed"],
            )
            for m in ("tautune", *(method_name(p) for p in trials))
        }
        for name, runs in by.items():
            entry: dict[str, Any] = {
                "task": task,
                "method": name,
                "final_median": statistics.median(r["final_loss"] for r in runs),
                "final_min": min(r["final_loss"] for r in runs),
                "final_max": max(r["final_loss"] for r in runs),
                "exploration_median": statistics.median(r["exploration_steps"] for r in runs),
                "trained_steps": runs[0]["trained_steps"],
                "wall_median": statistics.median(r["wall_s"] for r in runs),
                "seeds": len(runs),
            }
            if name != "tautune":
                diffs = [
                    p["final_loss"] - s["final_loss"]
                    for s, p in zip(by["tautune"], runs, strict=True)
                ]
                entry["paired_diff_median"] = statistics.median(diffs)
                entry["lower"] = sum(d < 0 for d in diffs)
                entry["equal"] = sum(d == 0 for d in diffs)
            out.append(entry)
    return out


def page(doc: dict[str, Any], command: str) -> str:
    """docs/benchmarks-population.md from the JSON document."""
    sizes = " and ".join(str(p) for p in doc["trials"])
    lines = [
        "# Population exploration: one candidate per trial",
        "",
        f"Generated by `{command}` from the JSON it wrote; no number is edited by hand.",
        "",
        f"`tautune` is the default `explore` controller on one trial: it probes its candidates "
        f"one after another from one snapshot. `tautune-population-P` runs P ({sizes}) trials "
        "of the same training and probes one candidate per trial at once, from one state, "
        "then every "
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
    for e in summarize(doc["results"], doc["tasks"], doc["trials"]):
        delta = ""
        if e["method"] != "tautune":
            same = f", equal on {e['equal']}" if e["equal"] else ""
            delta = (
                f"{num_text(e['paired_diff_median'])} (lower on {e['lower']}{same} of {e['seeds']})"
            )
        lines.append(
            f"| {e['task']} | {e['method']} | {num_text(e['final_median'])} "
            f"[{num_text(e['final_min'])}–{num_text(e['final_max'])}] | "
            f"{e['exploration_median']:g} | {e['trained_steps']} | {delta} |"
        )
    lines.append("")
    return "\n".join(lines)
