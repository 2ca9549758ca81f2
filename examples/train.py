"""A training script instrumented with tautune's agent; runs the same way everywhere.

    TAUTUNE_JOB=my-job TAUTUNE_REDIS_URL=redis://... python examples/train.py --steps 2000

With no head attached it trains on its base schedule (here: constant AdamW LR). Start a head
with `tautune attach my-job --lr ...` while it runs, or launch it with `tautune submit`, and
the LR follows the head's decisions from the next stage boundary on. The scheduler gets the
model and the batch generator, so the default LR method explores candidate LRs from
in-memory snapshots; `--no-restore` leaves them out, and the head falls back to the search
that never rewinds the model.
"""

from __future__ import annotations

import argparse
import time

import torch

from workers.agent import Agent
from workers.tasks.charlm import CharLMConfig, CharLMTask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--sleep", type=float, default=0.0, help="extra seconds per step")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument(
        "--no-restore",
        action="store_true",
        help="do not hand the model and batches to the scheduler (no snapshots to explore from)",
    )
    args = parser.parse_args()

    torch.set_num_threads(1)
    task = CharLMTask(CharLMConfig(hidden=args.hidden, max_bytes=500_000))
    model = task.model(seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    agent = Agent.attach()
    gen = torch.Generator().manual_seed(agent.rank)
    if args.no_restore:
        sched = agent.lr_scheduler(opt, base="constant")
    else:  # a snapshot rewinds the batches with the model, so candidates see the same data
        sched = agent.lr_scheduler(opt, base="constant", model=model, extra_state={"batches": gen})
    for step in range(args.steps):
        loss = task.loss(model, *task.batch(gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
        agent.report(step, loss=loss.item())
        sched.step()
        if args.sleep:
            time.sleep(args.sleep)
        if step % 200 == 0:
            print(
                f"step {step} loss {loss.item():.3f} lr {opt.param_groups[0]['lr']:.2e}", flush=True
            )
    agent.close()
    print(f"done: {args.steps} steps, validation loss {task.evaluate(model):.4f}", flush=True)


if __name__ == "__main__":
    main()
