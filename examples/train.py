"""A training script instrumented with tautune's agent; runs the same way everywhere.

    TAUTUNE_JOB=my-job TAUTUNE_REDIS_URL=redis://... python examples/train.py --steps 2000

With no head attached it trains on its base schedule (here: constant AdamW LR). Start a head
with `tautune attach my-job --lr ...` while it runs, or launch it with `tautune submit`, and
the LR follows the head's decisions from the next stage boundary on. The scheduler gets the
model and the batch generator, so the default LR method explores candidate LRs from
in-memory snapshots; `--no-restore` leaves them out, and the head falls back to the search
that never rewinds the model.

With `--checkpoint PATH` it saves its state every `--checkpoint-every` steps and, started
again with the same PATH (after a crash, say), resumes from it: the agent reports under a
higher attempt, and a head in the middle of an exploration stage gives that stage up and
sends every rank back to the stage's snapshot, instead of the run failing.
"""

from __future__ import annotations

import argparse
import os
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
    parser.add_argument("--checkpoint", default=None, help="save here; resume from it if it exists")
    parser.add_argument("--checkpoint-every", type=int, default=100)
    args = parser.parse_args()

    torch.set_num_threads(1)
    task = CharLMTask(CharLMConfig(hidden=args.hidden, max_bytes=500_000))
    model = task.model(seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    agent = Agent.attach()
    gen = torch.Generator().manual_seed(agent.rank)
    first = 0
    if args.checkpoint and os.path.exists(args.checkpoint):
        saved = torch.load(args.checkpoint)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        gen.set_state(saved["gen"])
        first = saved["step"]
        print(f"resumed from step {first} (attempt {agent.attempt})", flush=True)
    if args.no_restore:
        sched = agent.lr_scheduler(opt, base="constant", last_epoch=first - 1)
    else:  # a snapshot rewinds the batches with the model, so candidates see the same data
        sched = agent.lr_scheduler(
            opt, base="constant", model=model, extra_state={"batches": gen}, last_epoch=first - 1
        )
    for step in range(first, args.steps):
        if args.checkpoint and step % args.checkpoint_every == 0 and step > first:
            state = {"model": model.state_dict(), "opt": opt.state_dict()}
            torch.save({**state, "gen": gen.get_state(), "step": step}, args.checkpoint)
        loss = task.loss(model, *task.batch(gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
        agent.report(step, loss=loss)
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
