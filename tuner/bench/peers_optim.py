"""Schedule-free and Prodigy on the torch LR benchmark tasks, as :class:`Trainable` runs.

- ``schedulefree``: :class:`schedulefree.AdamWScheduleFree` on AdamW tasks (weight decay
  0.01, as the task's AdamW) and :class:`schedulefree.SGDScheduleFree` on SGD tasks
  (momentum 0.9), at a constant LR with the optimizer's own ``warmup_steps`` set to the
  task's warmup. Training runs with ``optimizer.train()``; every evaluation switches to
  ``optimizer.eval()`` (the averaged weights) and back, and snapshots are taken in train
  mode.
- ``prodigy``: :class:`prodigyopt.Prodigy` with ``lr=1.0`` and its authors' recommended
  settings -- a cosine decay of that multiplier to 0 over the run (with the task's linear
  warmup first, and ``safeguard_warmup=True`` where there is one), ``betas=(0.9, 0.999)``,
  decoupled weight decay 0.01 on AdamW tasks and 0 on SGD tasks.

NQM has no torch optimizer (its loss is exact for SGD only), so neither applies there:
:data:`NOT_APPLICABLE` says why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tuner.bench.lr_trainable import TorchTask, TorchTrainable
from tuner.errors import ConfigError

METHODS = ("schedulefree", "prodigy")
NOT_APPLICABLE = {
    "schedulefree": "NQM has no torch optimizer: its model is an exact expected-loss "
    "recursion for plain SGD, so a schedule-free optimizer cannot be plugged in",
    "prodigy": "NQM has no torch optimizer: its model is an exact expected-loss recursion "
    "for plain SGD, so Prodigy's adaptive step size cannot be plugged in",
}
PRODIGY_SCHEDULE = "cosine"
"""Prodigy's LR multiplier: cosine decay from 1.0 to 0 after the task's warmup."""


def build_optimizer(
    method: str, base: str, params: Any, lr: float, warmup: int
) -> torch.optim.Optimizer:
    """The optimizer of ``method`` for a task whose own optimizer is ``base``.

    Args:
        method: ``"schedulefree"`` or ``"prodigy"``.
        base: The task's optimizer, ``"adamw"`` or ``"sgd"`` (:data:`tuner.bench.lr.TASKS`).
        params: The model's parameters.
        lr: Schedule-free's LR; ignored for Prodigy (1.0, scaled by the schedule).
        warmup: The task's warmup steps.

    Raises:
        ConfigError: An unknown ``method`` or ``base``.
    """
    if base not in ("adamw", "sgd"):
        raise ConfigError(f"unknown task optimizer {base!r}; expected adamw or sgd")
    wd = 0.01 if base == "adamw" else 0.0
    opt: torch.optim.Optimizer
    if method == "schedulefree":
        import schedulefree  # type: ignore[import-untyped]

        if base == "adamw":
            opt = schedulefree.AdamWScheduleFree(
                params, lr=lr, weight_decay=wd, warmup_steps=warmup
            )
        else:
            opt = schedulefree.SGDScheduleFree(params, lr=lr, momentum=0.9, warmup_steps=warmup)
        return opt
    if method == "prodigy":
        from prodigyopt import Prodigy  # type: ignore[import-untyped]

        opt = Prodigy(params, lr=1.0, weight_decay=wd, safeguard_warmup=warmup > 0)
        return opt
    raise ConfigError(f"unknown optimizer method {method!r}; choose from {METHODS}")


class OptimizerTrainable(TorchTrainable):
    """:class:`~tuner.bench.lr_trainable.TorchTrainable` with another optimizer.

    Model, batches and seeds are the task's, exactly as ``TorchTrainable`` builds them (the
    same ``10_000 + seed`` batch generator), so only the optimizer differs; stepping and
    snapshots are ``TorchTrainable``'s.
    """

    def __init__(
        self, task: TorchTask, method: str, base: str, seed: int, lr: float, warmup: int
    ) -> None:
        super().__init__(task, base, seed)
        self.opt = build_optimizer(method, base, self.model.parameters(), lr, warmup)
        self.schedule_free = method == "schedulefree"
        self._mode(train=True)

    def _mode(self, train: bool) -> None:
        if self.schedule_free:
            switch: Callable[[], None] = getattr(self.opt, "train" if train else "eval")
            switch()

    def evaluate(self) -> float:
        self._mode(train=False)
        try:
            return super().evaluate()
        finally:
            self._mode(train=True)


def execute_optimizer(
    cfg: Any, method: str, label: str, seed: int, lr: float, info: dict[str, Any]
) -> dict[str, Any]:
    """Train one ``schedulefree`` or ``prodigy`` run of ``cfg``'s task (a spawn-safe job).

    Args:
        cfg: The task's :class:`~tuner.bench.lr.BenchConfig` (steps, evals, warmup).
        method: ``"schedulefree"`` or ``"prodigy"``.
        label: The method name the row carries (``schedulefree@grid-peak`` for instance).
        seed: Seed of model and batches.
        lr: Schedule-free's constant LR; Prodigy's is 1.0 whatever is passed.
        info: Extra ``info`` for the row (where ``lr`` came from).

    Returns:
        The row, LR bench shape (:meth:`~tuner.bench.lr_run.RunResult.to_json`).
    """
    from tuner.bench.lr import make_trainable, schedule_fn
    from tuner.bench.lr_run import run_schedule

    torch.set_num_threads(1)
    t, total = cfg.spec, cfg.total_steps
    task = make_trainable(cfg.task, seed)
    if not hasattr(task, "task"):
        raise ConfigError(f"{method} needs a torch task; {cfg.task!r} has no torch optimizer")
    peak = 1.0 if method == "prodigy" else lr
    trainable = OptimizerTrainable(task.task, method, t.optimizer, seed, peak, t.warmup_steps)
    if method == "prodigy":
        schedule = schedule_fn(PRODIGY_SCHEDULE, 1.0, total, t.warmup_steps)
    else:  # the optimizer warms up itself; the LR passed stays constant
        schedule = schedule_fn("constant", lr, total, 0)
    result = run_schedule(
        label,
        trainable,
        schedule,
        total_steps=total,
        eval_every=cfg.eval_every,
        seed=seed,
        info={"optimizer": type(trainable.opt).__name__, "lr": peak, **info},
    )
    if method == "prodigy":
        result.info["final_d"] = float(trainable.opt.param_groups[0]["d"])
    return result.to_json(None)
