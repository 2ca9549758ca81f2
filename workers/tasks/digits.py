"""An MLP classifier on scikit-learn's bundled handwritten digits.

The data is :func:`sklearn.datasets.load_digits` (1797 8x8 images, 10 classes), which ships
inside the scikit-learn wheel, so nothing is downloaded. The split is stratified and drawn
from a fixed seed with NumPy's legacy ``RandomState`` (whose stream never changes), so every
machine trains and validates on the same images. Features are standardised with the
training split's per-pixel mean and standard deviation.

Training images are shifted by up to ``max_shift`` pixels (zero fill) each time they are
drawn. Without it the MLP memorises the 1347 training images within a few hundred steps and
the validation loss turns back up; with it the validation loss is still falling after 1500
steps, which is what a benchmark comparing learning-rate schedules by their final loss needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tuner.errors import ConfigError

SIDE = 8
PIXELS = SIDE * SIDE
CLASSES = 10
MIN_STD = 1.0
"""Floor of the per-pixel standard deviation, in intensity levels (pixels run 0..16).

Border pixels that are almost always blank have a training std of a few hundredths; a
stroke shifted onto one would otherwise become an input hundreds of deviations large."""


@dataclass(frozen=True)
class DigitsConfig:
    """Shapes of the task: the model (``arch``: ``"mlp"``, or ``"cnn"`` for
    :class:`DigitsCNN`), MLP width and depth, batch, split and augmentation."""

    arch: str = "mlp"
    hidden: int = 128
    depth: int = 2
    batch_size: int = 32
    val_fraction: float = 0.25
    split_seed: int = 0
    max_shift: int = 1

    def __post_init__(self) -> None:
        if self.arch not in ("mlp", "cnn"):
            raise ConfigError(f"DigitsConfig: arch must be 'mlp' or 'cnn', got {self.arch!r}")
        if self.hidden < 1 or self.depth < 1 or self.batch_size < 1:
            raise ConfigError(
                f"DigitsConfig: hidden, depth and batch_size must be >= 1, got hidden="
                f"{self.hidden}, depth={self.depth}, batch_size={self.batch_size}"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(
                f"DigitsConfig: val_fraction must be in (0, 1), got {self.val_fraction}"
            )
        if not 0 <= self.max_shift < SIDE:
            raise ConfigError(
                f"DigitsConfig: max_shift must be in [0, {SIDE - 1}], got {self.max_shift}"
            )


class DigitsMLP(nn.Module):
    """``batch x 64`` standardised pixels -> ``batch x 10`` class logits."""

    def __init__(self, cfg: DigitsConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = PIXELS
        for _ in range(cfg.depth):
            layers += [nn.Linear(width, cfg.hidden), nn.GELU()]
            width = cfg.hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]


class DigitsCNN(nn.Module):
    """``batch x 64`` standardised pixels, seen as ``1 x 8 x 8`` images -> ``batch x 10``
    logits: two 3x3 convolutions (16, 32 channels), a 2x2 max pool and a ``hidden``-wide
    ReLU layer."""

    def __init__(self, cfg: DigitsConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * (SIDE // 2) ** 2, cfg.hidden),
            nn.ReLU(),
            nn.Linear(cfg.hidden, CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.view(-1, 1, SIDE, SIDE))  # type: ignore[no-any-return]


def stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train, val)`` positions: ``val_fraction`` of each class, drawn with ``seed``."""
    rng = np.random.RandomState(seed)
    val = [
        rng.permutation(np.flatnonzero(labels == c))[: round(val_fraction * (labels == c).sum())]
        for c in np.unique(labels)
    ]
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


def shift_images(images: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Each ``n x 8 x 8`` image moved by its own random offset in ``[-max_shift, max_shift]``
    along each axis; pixels moved in from outside are 0 (blank)."""
    n = images.shape[0]
    padded = nn.functional.pad(images, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(SIDE))[:, :, None]
    cols = (dx[:, None] + torch.arange(SIDE))[:, None, :]
    return padded[torch.arange(n)[:, None, None], rows, cols]


class DigitsTask:
    """Data, model and loss of the digits classifier; batches come from a seeded generator.

    Attributes:
        train_index: Positions in ``load_digits()`` order of the training images.
        val_index: Positions of the validation images (disjoint from ``train_index``).
        train_images: Raw training images, ``n_train x 8 x 8`` intensities in 0..16.
        mean: Per-pixel mean of the training images (64 values).
        std: Per-pixel standard deviation of the training images, floored at ``MIN_STD``.
        train_x: Standardised, unshifted training features, ``n_train x 64``.
        val_x: Standardised validation features, ``n_val x 64``.
        train_y: Training labels.
        val_y: Validation labels.
    """

    def __init__(self, cfg: DigitsConfig | None = None) -> None:
        try:
            from sklearn.datasets import load_digits  # type: ignore[import-untyped]
        except ImportError as exc:
            raise ImportError(
                "DigitsTask needs scikit-learn, whose wheel bundles the digits: "
                "pip install scikit-learn"
            ) from exc

        self.cfg = cfg or DigitsConfig()
        digits = load_digits()
        pixels = np.asarray(digits.data, dtype=np.float32)
        labels = np.asarray(digits.target, dtype=np.int64)
        train_idx, val_idx = stratified_split(labels, self.cfg.val_fraction, self.cfg.split_seed)
        self.train_index = torch.from_numpy(train_idx)
        self.val_index = torch.from_numpy(val_idx)
        train = torch.from_numpy(pixels[train_idx])
        self.mean = train.mean(0)
        self.std = train.std(0).clamp_min(MIN_STD)
        self.train_images = train.view(-1, SIDE, SIDE)
        self.train_x = self.standardise(train)
        self.val_x = self.standardise(torch.from_numpy(pixels[val_idx]))
        self.train_y = torch.from_numpy(labels[train_idx])
        self.val_y = torch.from_numpy(labels[val_idx])

    def standardise(self, pixels: torch.Tensor) -> torch.Tensor:
        """``n x 64`` (or ``n x 8 x 8``) raw intensities -> ``n x 64`` standardised features."""
        return (pixels.reshape(-1, PIXELS) - self.mean) / self.std

    def model(self, seed: int) -> nn.Module:
        """A fresh model (``cfg.arch``) whose initial weights depend only on ``seed``."""
        torch.manual_seed(seed)
        return DigitsCNN(self.cfg) if self.cfg.arch == "cnn" else DigitsMLP(self.cfg)

    def batch(self, gen: torch.Generator, val: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)``: ``batch_size`` examples drawn with replacement using ``gen``;
        training images are randomly shifted (see :class:`DigitsConfig`), validation ones
        never are."""
        n = len(self.val_y if val else self.train_y)
        idx = torch.randint(0, n, (self.cfg.batch_size,), generator=gen)
        if val:
            return self.val_x[idx], self.val_y[idx]
        if self.cfg.max_shift == 0:
            return self.train_x[idx], self.train_y[idx]
        images = shift_images(self.train_images[idx], self.cfg.max_shift, gen)
        return self.standardise(images), self.train_y[idx]

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross entropy (nats) of ``model``'s logits on ``x`` against labels ``y``."""
        return nn.functional.cross_entropy(model(x), y)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: int | None = None, seed: int = 1234) -> float:
        """Mean validation cross entropy (nats).

        Args:
            model: The model to score; it is put back in training mode afterwards.
            batches: ``None`` (default) scores the whole validation set in one pass, which
                is deterministic; a number scores that many random validation batches.
            seed: Seed of the generator drawing those batches (unused for ``None``).

        Returns:
            The mean loss.
        """
        model.eval()
        try:
            if batches is None:
                return self.loss(model, self.val_x, self.val_y).item()
            if batches < 1:
                raise ConfigError(f"evaluate: batches must be >= 1 or None, got {batches}")
            gen = torch.Generator().manual_seed(seed)
            total = sum(self.loss(model, *self.batch(gen, val=True)).item() for _ in range(batches))
            return total / batches
        finally:
            model.train()
