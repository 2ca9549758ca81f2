"""``tautune demo --mixture``: the LR and the data mixture tuned together, in one job.

A byte-level LM trains on five domains built from what Python carries (stdlib source,
pydoc's topic prose, easy and hard generated arithmetic, and base64 junk; see
:mod:`workers.tasks.mixture_lm`). The head runs the stage-wise LR search and a bandit over
the domains on one stage grid (a composite controller); the worker draws every batch with
``agent.mixture_sampler``-style lazy sampling and reports per-domain losses. A second run
with a uniform mixture at the constant starting LR, same seed and budget, is the baseline.
The target is the mean validation loss of the four clean domains.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from tuner.controllers.mixture import DEFAULT_MIXTURE
from tuner.demo_runner import Budget, Demo
from workers.agent import Agent
from workers.arm_loss import arm_metrics, split_loss_by_arm
from workers.batch_sampler import MixtureBatchSampler
from workers.mixture import decision_weights
from workers.tasks.mixture_lm import MixtureLMConfig, MixtureLMTask, build_task


def _train(
    task: MixtureLMTask, budget: Budget, agent: Agent | None, progress: Progress, label: str
) -> dict[str, Any]:
    steps, seed = budget.steps, budget.seed
    weights_for = decision_weights(lambda s: agent.decision(s, wait=False)) if agent else None
    sampler = MixtureBatchSampler(task.arm_starts, task.cfg.batch_size, weights_for, seed=seed)
    model = task.model(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=budget.lr)
    sched: torch.optim.lr_scheduler.LRScheduler = (
        agent.lr_scheduler(opt) if agent else torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    )
    log: dict[str, Any] = {"step": [], "lr": [], "loss": [], "weights": []}
    bar = progress.add_task(label, total=steps)
    batches = iter(sampler)
    start = time.perf_counter()
    for step in range(steps):
        slots = next(batches)
        per_sample = task.per_sample_loss(model, task.gather([s.idx for s in slots]))
        loss = per_sample.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        log["step"].append(step)
        log["lr"].append(opt.param_groups[0]["lr"])
        opt.step()
        log["loss"].append(loss.item())
        log["weights"].append(dict(sampler.weights))
        if agent is not None:
            arm_loss, arm_count = split_loss_by_arm(per_sample, [s.arm for s in slots], task.arms)
            agent.report(
                step, loss=loss.item(), **arm_metrics(arm_loss, arm_count, slots[0].version)
            )
        sched.step()
        if step % 10 == 0 or step == steps - 1:
            progress.update(bar, completed=step + 1)
    log["wall_s"] = time.perf_counter() - start
    log["val"] = task.evaluate(model)
    log["target"] = task.target_loss(log["val"])
    return log


def run_mixture_demo(
    *,
    steps: int = 1500,
    tau: int = 100,
    lr: float = 1e-3,
    seed: int = 0,
    out_dir: str | Path = "tautune-out",
    redis_url: str | None = None,
    ray_address: str | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the demo; returns the summary it prints (also written as ``summary-mixture.json``)."""
    console = console or Console()
    budget = Budget(steps=steps, tau=tau, lr=lr, seed=seed)
    task = build_task("mixture", MixtureLMConfig(domain_bytes=400_000))
    spec = {
        "method": "composite",
        "lr": {"method": "stagewise", "init_lr": lr, "tau": tau, "total_steps": steps},
        "mixture": {
            **DEFAULT_MIXTURE,
            "arms": list(task.arms),
            "tau": tau,
            "total_steps": steps,
            "seed": seed,
        },
    }
    console.print(
        f"[bold]tautune demo --mixture[/]: byte LM over {', '.join(task.arms)}; LR and mixture "
        f"({DEFAULT_MIXTURE['method']} on {DEFAULT_MIXTURE['reward']}) decided every {tau} "
        f"steps; {steps} steps"
    )
    demo = Demo.start("demo-mixture", out_dir, console, redis_url, ray_address)
    pair = demo.run_pair(partial(_train, task, budget), spec, "uniform")
    tuned, uniform = pair.tuned, pair.baseline
    summary = {
        **demo.summary(budget, pair),
        "wall_s": demo.wall_s(),
        "head": pair.head,
        "runs": {
            name: {"target_val_loss": r["target"], "val": r["val"], "wall_s": r["wall_s"]}
            for name, r in (("tautune", tuned), ("uniform", uniform))
        },
        "final_weights": tuned["weights"][-1],
    }
    plot = _plot(demo.out / "demo-mixture.png", tuned, uniform, task.arms)
    demo.write_summary("summary-mixture.json", summary)
    table = Table(title="Same model, seed and step budget; target: clean-domain validation loss")
    for col in ("run", "target val loss", *task.arms):
        table.add_column(col, justify="right")
    for name, r in (("tautune (LR + mixture)", tuned), (f"uniform, constant LR {lr:g}", uniform)):
        table.add_row(name, f"{r['target']:.4f}", *(f"{r['val'][a]:.3f}" for a in task.arms))
    console.print(table)
    weights = ", ".join(f"{a} {w:.2f}" for a, w in tuned["weights"][-1].items())
    gain = (uniform["target"] - tuned["target"]) / uniform["target"] * 100
    console.print(
        f"Target loss {'down' if gain > 0 else 'up'} {abs(gain):.1f}%; final mixture: "
        f"{weights}; {len(pair.decisions)} decisions, {summary['wall_s']:.0f}s in all."
    )
    console.print(f"Plot: {plot}")
    return summary


def _plot(
    path: Path, tuned: dict[str, Any], uniform: dict[str, Any], arms: tuple[str, ...]
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tuner.plot import smooth

    fig, (ax_lr, ax_w, ax_loss) = plt.subplots(3, 1, figsize=(9, 8.5), sharex=True)
    ax_lr.plot(tuned["step"], tuned["lr"], label="tautune")
    ax_lr.plot(uniform["step"], uniform["lr"], label="constant")
    ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    ax_lr.legend()
    stack = [[w[a] for w in tuned["weights"]] for a in arms]
    ax_w.stackplot(tuned["step"], stack, labels=arms)
    ax_w.set_ylabel("mixture weight (tautune)")
    ax_w.set_ylim(0, 1)
    ax_w.legend(loc="upper left", fontsize=8, ncol=len(arms))
    ax_loss.plot(tuned["step"], smooth(tuned["loss"]), label="tautune")
    ax_loss.plot(uniform["step"], smooth(uniform["loss"]), label="uniform")
    ax_loss.set_ylabel("training loss (moving average)")
    ax_loss.set_xlabel("optimizer step")
    ax_loss.legend()
    fig.suptitle("tautune demo --mixture: LR and data mixture tuned together")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
