"""The Python tuning API: two data-parallel workers (DDP over gloo), tuned by a head.

    python examples/tune_ddp.py --workers 2 --steps 600

Run as is, it starts a private Redis and a local Ray. Submitted with `tautune submit`, it
joins that job: TAUTUNE_JOB, TAUTUNE_REDIS_URL and the cluster come from the environment.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from tuner import LRSpec, tune


def train_fn(config: dict[str, Any]) -> float:
    from workers.agent import Agent
    from workers.distributed import prepare_model, rank
    from workers.tasks.charlm import CharLMConfig, CharLMTask

    torch.set_num_threads(1)
    task = CharLMTask(CharLMConfig(hidden=256, max_bytes=500_000))
    model = prepare_model(task.model(seed=0))  # same init on every rank, then DDP
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"])
    agent = Agent.attach()
    gen = torch.Generator().manual_seed(rank())  # each rank its own batches
    # model= and the batch generator let the default LR method explore from snapshots:
    # every rank saves and restores its model, optimizer and batches at the same steps
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
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--tau", type=int, default=50)
    args = parser.parse_args()
    result = tune(
        train_fn,
        {"steps": args.steps, "lr": args.lr},
        num_workers=args.workers,
        lr=LRSpec(init_lr=args.lr, tau=args.tau, total_steps=args.steps),
    )
    print(
        f"job {result.job}: {len(result.decisions)} decisions, validation loss per rank "
        f"{[round(v, 4) for v in result.returns]}, {result.wall_s:.0f}s"
    )


if __name__ == "__main__":
    main()
