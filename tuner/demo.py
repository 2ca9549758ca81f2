"""``tautune demo``: tune a real model on this machine, next to a constant-LR run.

Starts the embedded Redis and a local Ray, starts the job's head (a Ray actor running the
default LR method, which explores candidate LRs from in-memory snapshots: the training
loop hands its model and batch generator to the scheduler), then trains a byte-level
language model on the standard library's source twice with the same seed, data order and
budget: once with tautune pushing its LR decisions (exploration counted in the budget),
once at the constant LR the tuned run started from. Prints a summary and writes a PNG of
LR and loss against step.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tuner.demo_runner import Budget, Demo
from tuner.plot import plot_runs
from workers.agent import Agent
from workers.tasks.charlm import CharLMTask


@dataclass
class RunLog:
    step: list[int]
    lr: list[float]
    loss: list[float]
    val_loss: float = float("nan")
    wall_s: float = 0.0

    def final_train_loss(self, last: int = 100) -> float:
        tail = self.loss[-last:]
        return sum(tail) / len(tail)


def _train(
    task: CharLMTask, budget: Budget, agent: Agent | None, progress: Progress, label: str
) -> RunLog:
    steps, lr = budget.steps, budget.lr
    model = task.model(budget.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scheduler: torch.optim.lr_scheduler.LRScheduler
    gen = torch.Generator().manual_seed(budget.seed)
    if agent is not None:
        # model= (and the generator the batches come from) let the default LR method
        # explore candidate LRs from snapshots, every candidate on the same batches
        scheduler = agent.lr_scheduler(optimizer, model=model, extra_state={"batches": gen})
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    log = RunLog([], [], [])
    task_id = progress.add_task(label, total=steps, loss=float("nan"), lr=lr, stage="-")
    start = time.perf_counter()
    for step in range(steps):
        current_lr = optimizer.param_groups[0]["lr"]
        loss = task.loss(model, *task.batch(gen))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        value = loss.item()
        log.step.append(step)
        log.lr.append(current_lr)
        log.loss.append(value)
        stage = "-"
        if agent is not None:
            agent.report(step, loss=value)  # before scheduler.step(), which may wait for it
            d = agent.decision(step)
            stage = f"{d.stage} {d.kind.value}" if d is not None else "base"
        scheduler.step()
        if step % 10 == 0 or step == steps - 1:
            progress.update(task_id, completed=step + 1, loss=value, lr=current_lr, stage=stage)
    log.wall_s = time.perf_counter() - start
    log.val_loss = task.evaluate(model)
    return log


def run_demo(
    *,
    steps: int = 2000,
    tau: int = 100,
    lr: float = 3e-4,
    seed: int = 0,
    out_dir: str | Path = "tautune-out",
    redis_url: str | None = None,
    ray_address: str | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the demo; returns the summary it prints (also written as ``summary.json``)."""
    console = console or Console()
    budget = Budget(steps=steps, tau=tau, lr=lr, seed=seed)
    spec = {"init_lr": lr, "tau": tau, "total_steps": steps}  # the default method
    task = CharLMTask()
    console.print(
        f"[bold]tautune demo[/]: byte-level LM on the stdlib source "
        f"({len(task.train_data) / 1e6:.1f} MB), AdamW, {steps} steps, stage τ={tau} steps"
    )
    demo = Demo.start("demo", out_dir, console, redis_url, ray_address)
    columns = (
        TextColumn("{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  lr {task.fields[lr]:.2e}"),
        TextColumn("stage {task.fields[stage]}"),
        TimeElapsedColumn(),
    )
    pair = demo.run_pair(partial(_train, task, budget), spec, "constant", columns)
    tuned, constant = pair.tuned, pair.baseline
    console.print(f"Redis: {'embedded' if pair.embedded_redis else 'external'}; job {demo.job}")
    summary = {
        **demo.summary(budget, pair),
        "stall_s": pair.stall_s,
        "wall_s": demo.wall_s(),
        "runs": {
            name: {
                "final_train_loss": r.final_train_loss(),
                "val_loss": r.val_loss,
                "wall_s": r.wall_s,
            }
            for name, r in (("tautune", tuned), ("constant", constant))
        },
        "head": pair.head,
    }
    plot = plot_runs(
        demo.out / "demo.png",
        {"tautune": asdict(tuned), f"constant {lr:g}": asdict(constant)},
        title=f"tautune demo: stdlib byte-LM, AdamW, {steps} steps",
        boundaries=[d.from_step for d in pair.decisions],
    )
    demo.write_summary("summary.json", summary)
    _print_summary(console, summary, tuned, constant, plot)
    return summary


def _print_summary(
    console: Console, summary: dict[str, Any], tuned: RunLog, constant: RunLog, plot: Path
) -> None:
    table = Table(title="Same model, data order and step budget")
    for col in ("run", "final train loss (last 100)", "validation loss", "train time"):
        table.add_column(col, justify="right" if col != "run" else "left")
    for name, r in (
        ("tautune (tuned LR)", tuned),
        (f"constant LR {summary['init_lr']:g}", constant),
    ):
        table.add_row(name, f"{r.final_train_loss():.4f}", f"{r.val_loss:.4f}", f"{r.wall_s:.1f}s")
    console.print(table)
    gain = (constant.val_loss - tuned.val_loss) / constant.val_loss * 100
    console.print(
        f"Validation loss {'down' if gain > 0 else 'up'} {abs(gain):.1f}% against the constant "
        f"LR; {summary['decisions']} decisions, {summary['stall_s'] * 1000:.0f} ms waiting at "
        f"stage boundaries, {summary['wall_s']:.0f}s in all."
    )
    console.print(f"Plot: {plot}")
