"""Benchmark tasks as :class:`~tuner.bench.lr_run.Trainable` runs: torch models, and NQM."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from workers.snapshot import Snapshot


class TorchTask(Protocol):
    """What :class:`TorchTrainable` needs of a task (``CharLMTask``, ``DigitsTask``)."""

    def model(self, seed: int) -> nn.Module: ...

    def batch(
        self, gen: torch.Generator, val: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def evaluate(self, model: nn.Module) -> float: ...


def make_optimizer(name: str, params: Any, lr: float) -> torch.optim.Optimizer:
    """``"adamw"`` (weight decay 0.01) or ``"sgd"`` (momentum 0.9, Nesterov)."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True)
    raise ValueError(f"unknown optimizer {name!r}; use adamw or sgd")


class TorchTrainable:
    """A model, its optimizer and a seeded batch generator; snapshots via
    :class:`~workers.snapshot.Snapshot` (the generator's state rides in ``extra``)."""

    def __init__(self, task: TorchTask, optimizer: str, seed: int) -> None:
        self.task = task
        self.model = task.model(seed)
        self.opt = make_optimizer(optimizer, self.model.parameters(), 1e-3)
        self.gen = torch.Generator().manual_seed(10_000 + seed)

    def step(self, lr: float) -> float:
        for group in self.opt.param_groups:
            group["lr"] = lr
        x, y = self.task.batch(self.gen)
        loss = self.task.loss(self.model, x, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.opt.step()
        return float(loss.item())

    def evaluate(self) -> float:
        return float(self.task.evaluate(self.model))

    def save(self) -> Snapshot:
        return Snapshot.take(self.model, self.opt, extra={"gen": self.gen.get_state()})

    def load(self, state: Any) -> None:
        assert isinstance(state, Snapshot)
        state.restore(self.model, self.opt)
        extra = state.extra
        assert extra is not None
        self.gen.set_state(extra["gen"])
