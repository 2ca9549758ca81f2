"""A byte-level language model trained on the Python standard library's own source.

The corpus is the ``.py`` files at the top of the running interpreter's ``Lib`` directory,
read in sorted order, so every machine with the same Python builds the same data and
nothing is downloaded. The model is a small MLP over a window of ``context`` bytes
(Bengio et al., 2003): cheap enough to train thousands of steps on two CPU cores.
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from tuner.errors import ConfigError

VOCAB = 256


def stdlib_corpus(max_bytes: int = 2_000_000) -> bytes:
    """Up to ``max_bytes`` of the standard library's top-level ``.py`` files, concatenated."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    chunks: list[bytes] = []
    total = 0
    for path in sorted(lib.glob("*.py")):
        data = path.read_bytes()
        chunks.append(data)
        total += len(data)
        if total >= max_bytes:
            break
    if not chunks:
        raise RuntimeError(f"no .py files found under {lib}; cannot build the demo corpus")
    return b"".join(chunks)[:max_bytes]


def corpus_split(max_bytes: int, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`stdlib_corpus` as int64 byte ids: the training head and the validation tail
    (the last ``val_fraction``)."""
    data = torch.frombuffer(bytearray(stdlib_corpus(max_bytes)), dtype=torch.uint8)
    split = int(len(data) * (1 - val_fraction))
    return data[:split].long(), data[split:].long()


def random_windows(
    data: torch.Tensor, gen: torch.Generator, batch_size: int, length: int
) -> torch.Tensor:
    """``batch_size x length`` windows of ``data`` at offsets drawn from ``gen``."""
    idx = torch.randint(0, len(data) - length, (batch_size,), generator=gen)
    return data[idx[:, None] + torch.arange(length)]


class _ValBatches(Protocol):
    def batch(
        self, gen: torch.Generator, val: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


@torch.no_grad()
def validation_loss(task: _ValBatches, model: nn.Module, batches: int, seed: int) -> float:
    """Mean of ``task.loss`` over ``batches`` validation batches drawn from ``seed`` (the
    same batches every call), with ``model`` in eval mode and put back in train mode."""
    if batches < 1:
        raise ConfigError(f"evaluate: batches must be >= 1, got {batches}")
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    total = sum(task.loss(model, *task.batch(gen, val=True)).item() for _ in range(batches))
    model.train()
    return total / batches


@dataclass(frozen=True)
class CharLMConfig:
    """Shapes of the task. ``context`` is in bytes; sizes are model widths."""

    context: int = 32
    embed: int = 24
    hidden: int = 512
    batch_size: int = 64
    max_bytes: int = 2_000_000
    val_fraction: float = 0.05


def byte_mlp(context: int, embed: int, hidden: int) -> nn.Sequential:
    """The MLP both byte LMs put after their byte embedding: ``... x (context * embed)``
    embedded bytes -> ``... x 256`` next-byte logits, two hidden layers of ``hidden``."""
    return nn.Sequential(
        nn.Linear(context * embed, hidden),
        nn.GELU(),
        nn.Linear(hidden, hidden),
        nn.GELU(),
        nn.Linear(hidden, VOCAB),
    )


class CharMLP(nn.Module):
    """``batch x context`` byte ids -> ``batch x 256`` next-byte logits."""

    def __init__(self, cfg: CharLMConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, cfg.embed)
        self.net = byte_mlp(cfg.context, cfg.embed, cfg.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.embed(x).flatten(1))  # type: ignore[no-any-return]


class CharLMTask:
    """Data, model and loss of the byte-level LM; batches are drawn from a seeded generator."""

    def __init__(self, cfg: CharLMConfig | None = None) -> None:
        self.cfg = cfg or CharLMConfig()
        self.train_data, self.val_data = corpus_split(self.cfg.max_bytes, self.cfg.val_fraction)

    def model(self, seed: int) -> CharMLP:
        torch.manual_seed(seed)
        return CharMLP(self.cfg)

    def batch(self, gen: torch.Generator, val: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)``: ``batch x context`` byte ids and the ``batch`` next bytes."""
        data = self.val_data if val else self.train_data
        c = self.cfg.context
        window = random_windows(data, gen, self.cfg.batch_size, c + 1)
        return window[:, :c], window[:, c]

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(model(x), y)

    def evaluate(self, model: nn.Module, batches: int = 100, seed: int = 1234) -> float:
        """Mean validation loss (nats per byte) over a fixed set of ``batches``."""
        return validation_loss(self, model, batches, seed)
