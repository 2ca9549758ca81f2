"""A torch LR scheduler driven by tautune decisions, with a base schedule underneath."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from tuner.errors import ConfigError
from workers.schedules import BaseSchedule, Constant, parse_schedule

if TYPE_CHECKING:
    from workers.agent import Agent
    from workers.explore import StateMover


class TautuneLR(LRScheduler):
    """Sets each step's LR from the decision covering it, else from ``base``.

    Honours torch's contract: call ``step()`` once after each ``optimizer.step()``;
    ``get_last_lr()`` returns the LRs in force; ``state_dict()`` holds the step count and
    the base schedule's spec, never the agent or its connection. ``last_epoch`` is the
    index of the optimizer step the current LR is for (0 for the first step).

    With several parameter groups, a decision's LR applies to the first group and the
    others keep their ratio to it (as set by their initial ``lr``).

    With a ``mover`` (:class:`~workers.explore.StateMover`), a decision that snapshots or
    restores at a step has that done when ``step()`` moves to it, before the LR is set.
    Without one, such a decision raises :class:`~tuner.errors.ConfigError`: the job's LR
    controller explores from snapshots, and this worker cannot.

    Given ``total_steps``, it warns once when the job's final decision (its decay) ends
    elsewhere than this loop does: the spec's ``total_steps`` and the loop's disagree.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        agent: Agent | None,
        *,
        base: str | BaseSchedule | None = None,
        total_steps: int | None = None,
        last_epoch: int = -1,
        mover: StateMover | None = None,
    ) -> None:
        self.agent = agent
        self.mover = mover
        first_lr = float(
            optimizer.param_groups[0].get("initial_lr", optimizer.param_groups[0]["lr"])
        )
        if first_lr <= 0:
            raise ConfigError(f"the optimizer's first param group needs an lr > 0, got {first_lr}")
        if base is None:
            base = Constant(first_lr)
        elif isinstance(base, str):
            base = parse_schedule(base, peak_lr=first_lr, total_steps=total_steps)
        self.base = base
        self.total_steps = total_steps
        self._warned_end = False
        self._warned_other = False
        self._resumed = False
        self._after_final: list[Any] | None = None  # [until_step, its LR] of a final decision
        self._ratios = [
            float(g.get("initial_lr", g["lr"])) / first_lr for g in optimizer.param_groups
        ]
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step: int) -> float:
        """The LR of the first parameter group at optimizer ``step``."""
        decision = self.agent.decision(step) if self.agent is not None else None
        if decision is not None and decision.moves_state and decision.from_step == step:
            if self.mover is None:
                raise ConfigError(
                    f"decision v{decision.version} asks every rank to snapshot or restore its "
                    f"training state at step {step}, and this worker cannot: pass model= (and "
                    "sampler=, if any) to agent.lr_scheduler(), or tune the job with "
                    "method=stagewise (or auto, which picks it for workers that cannot "
                    "restore); explore and autolrs restore"
                )
            self.mover.apply(step, decision)
        if decision is not None and not self._warned_end and decision.info.get("final"):
            self._check_end(decision.until_step)
        lr = decision.lr_at(step) if decision is not None else None
        if decision is not None and decision.info.get("final") and decision.until_step:
            self._after_final = [decision.until_step, decision.lr_at(decision.until_step)]
        elif decision is None and self._after_final and step >= self._run_end():
            lr = self._after_final[1]  # past the run and its final decay: the decay's end
        if lr is None:
            lr = self.base.lr(step)
        if self.agent is not None:
            rewindable = self.mover is not None and len(self.mover.store) > 0
            missed = None if self.mover is None else self.mover.missed
            self.agent._applied(step, lr, decision, rewindable=rewindable, missed=missed)
        return lr

    def _run_end(self) -> int:
        """Where the run ends: ``total_steps``, else where the job's final decision does."""
        assert self._after_final is not None
        return max(int(self._after_final[0]), self.total_steps or 0)

    def _check_end(self, until: int | None) -> None:
        self._warned_end = True
        if until is None or self.total_steps is None or until == self.total_steps:
            return
        what = (
            f"the LR follows the base schedule from step {until} on"
            if until < self.total_steps
            else f"the run ends {until - self.total_steps} steps before the decay does"
        )
        warnings.warn(
            f"tautune: the job's final LR decision ends at step {until}, but this scheduler "
            f"was given total_steps={self.total_steps}: {what}. Give the job's LR spec the "
            "total_steps this loop trains.",
            stacklevel=2,
        )

    def get_lr(self) -> list[float]:  # type: ignore[override]
        self._check_untouched()
        lr = self.lr_at(max(self.last_epoch, 0))
        return [lr * ratio for ratio in self._ratios]

    def _check_untouched(self) -> None:
        """Warn once when the optimizer's LR is not the one this scheduler set last: another
        scheduler (or code) changes it between steps, multiplying or replacing tautune's.
        Not right after :meth:`load_state_dict` (a checkpoint's scheduler may come with a
        fresh optimizer)."""
        resumed = self._resumed
        last, self._resumed = getattr(self, "_last_lr", None), False
        if self._warned_other or not last or resumed:
            return
        now = float(self.optimizer.param_groups[0]["lr"])
        if abs(now - float(last[0])) <= 1e-6 * max(abs(float(last[0])), 1e-12):
            return
        self._warned_other = True
        warnings.warn(
            f"tautune: at step {self.last_epoch} the optimizer's LR was {now:.6g}, not the "
            f"{float(last[0]):.6g} tautune's scheduler set: something else changes it between "
            "steps (another LR scheduler, or code that sets param_groups' lr), and tautune "
            "sets it again at every step, so the two compound. Drop the other one and give "
            "its shape as base=, e.g. agent.lr_scheduler(opt, base='warmup=100+cosine').",
            stacklevel=3,
        )

    def state_dict(self) -> dict[str, Any]:
        state = {
            k: v
            for k, v in self.__dict__.items()
            if k not in ("optimizer", "agent", "base", "mover")
        }
        state["base"] = self.base.to_spec()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        base = state.pop("base", None)
        if base is not None:
            self.base = parse_schedule(base)
        self.__dict__.update(state)
        self._resumed = True
