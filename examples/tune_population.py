"""Exploration in parallel: three trials of one job, one candidate LR each, then all three
go on from the winner's state.

    python examples/tune_population.py --trials 3 --steps 1500

Run as is, it starts a private Redis and a local Ray. Each trial is one worker on half a
core, so all three train at once on two cores (a stage starts when every trial reports).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch

from tuner import LRSpec, tune


def train_fn(config: dict[str, Any]) -> float:
    from workers.agent import Agent
    from workers.tasks.charlm import CharLMConfig, CharLMTask

    torch.set_num_threads(1)
    trial = int(os.environ["TAUTUNE_TRIAL"])
    task = CharLMTask(CharLMConfig(hidden=256, max_bytes=500_000))
    model = task.model(seed=trial)  # trials start apart; the stage's first step syncs them
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"])
    agent = Agent.attach()
    gen = torch.Generator().manual_seed(trial)
    # model= and the batch generator: the trials publish and load these states
    sched = agent.lr_scheduler(opt, model=model, extra_state={"batches": gen})
    for step in range(config["steps"]):
        loss = task.loss(model, *task.batch(gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
        agent.report(step, loss=loss)
        sched.step()
    agent.close()
    return task.evaluate(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    result = tune(
        train_fn,
        {"steps": args.steps, "lr": args.lr},
        num_workers=1,
        resources_per_worker={"CPU": 2 / args.trials},
        population=args.trials,
        lr=LRSpec(init_lr=args.lr, method="explore", total_steps=args.steps),
    )
    head = (result.head or {}).get("controller", {})
    print(
        f"job {result.job}: candidates {[f'{x:.2g}' for x in head.get('candidates', [])]}, "
        f"winner (round, trial) {head.get('winner')}, committed lr {head.get('lr') or 0:.3g}"
    )
    first = min((d.from_step for d in result.trials[0].decisions), default=None)
    print(f"the stage started at step {first} of {args.steps}")
    finals = [round(t.returns[0], 4) for t in result.trials]
    print(f"validation loss per trial {finals} (one state after the stage), {result.wall_s:.0f}s")


if __name__ == "__main__":
    main()
