"""A tiny causal transformer language model on the standard library's bytes.

The same corpus as :mod:`workers.tasks.charlm` (nothing is downloaded), modelled by a
pre-norm decoder-only transformer that predicts every next byte of its window: a model
whose LR sensitivity (attention, layer norms, AdamW, warmup) differs from the byte MLP's,
yet small enough to train 1500 steps on one CPU core in well under a minute.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tuner.errors import ConfigError
from workers.tasks.charlm import VOCAB, corpus_split, random_windows, validation_loss


@dataclass(frozen=True)
class ByteGPTConfig:
    """Shapes of the task: ``context`` bytes per window, model width ``dim``."""

    context: int = 32
    dim: int = 64
    heads: int = 4
    layers: int = 2
    batch_size: int = 32
    max_bytes: int = 1_000_000
    val_fraction: float = 0.05

    def __post_init__(self) -> None:
        if min(self.context, self.dim, self.heads, self.layers, self.batch_size) < 1:
            raise ConfigError(f"ByteGPTConfig: sizes must be >= 1, got {self}")
        if self.dim % self.heads:
            raise ConfigError(
                f"ByteGPTConfig: dim ({self.dim}) must be a multiple of heads ({self.heads})"
            )
        if not 0 < self.val_fraction < 1:
            raise ConfigError(
                f"ByteGPTConfig: val_fraction must be in (0, 1), got {self.val_fraction}"
            )


class ByteGPT(nn.Module):
    """``batch x context`` byte ids -> ``batch x context x 256`` next-byte logits."""

    def __init__(self, cfg: ByteGPTConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, cfg.dim)
        self.pos = nn.Parameter(torch.zeros(cfg.context, cfg.dim))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(
            cfg.dim,
            cfg.heads,
            dim_feedforward=4 * cfg.dim,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, VOCAB)
        self.mask: torch.Tensor
        mask = nn.Transformer.generate_square_subsequent_mask(cfg.context)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        h = self.embed(x) + self.pos[:n]
        h = self.blocks(h, mask=self.mask[:n, :n], is_causal=True)
        return self.head(self.norm(h))  # type: ignore[no-any-return]


class ByteGPTTask:
    """Data, model and loss of the byte transformer; batches come from a seeded generator."""

    def __init__(self, cfg: ByteGPTConfig | None = None) -> None:
        self.cfg = cfg or ByteGPTConfig()
        self.train_data, self.val_data = corpus_split(self.cfg.max_bytes, self.cfg.val_fraction)

    def model(self, seed: int) -> ByteGPT:
        torch.manual_seed(seed)
        return ByteGPT(self.cfg)

    def batch(self, gen: torch.Generator, val: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)``: ``batch x context`` byte ids and the same windows shifted by one."""
        data = self.val_data if val else self.train_data
        c = self.cfg.context
        window = random_windows(data, gen, self.cfg.batch_size, c + 1)
        return window[:, :c], window[:, 1:]

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())

    def evaluate(self, model: nn.Module, batches: int = 50, seed: int = 1234) -> float:
        """Mean validation loss (nats per byte, every position) over fixed ``batches``."""
        return validation_loss(self, model, batches, seed)
