"""Byte-level language modelling over several domains, built from what Python carries.

Two tasks for the mixture benchmarks (``tautune bench mixture`` / ``bench curriculum``);
nothing is downloaded, and every machine with the same Python builds the same bytes.

``mixture`` — five training domains, one validation target:

- ``code``: the standard library's top-level ``.py`` files (every 10th file held out);
- ``prose``: pydoc's topic documentation (``pydoc_data.topics``), English technical prose
  with some code in it (every 10th topic held out);
- ``arith_easy``: lines ``a+b=c`` with ``a, b < 100``: learned early, then little is left;
- ``arith_hard``: the same with ``a, b < 100000``: slow, partly learnable (carries);
- ``base64``: random bytes in MIME base64 lines, like the encoded blobs a web crawl is full
  of: after the 64-letter alphabet there is nothing to learn.

The target is the mean validation loss of the four clean domains (held-out text of each,
equal parts), the analogue of a clean validation set while the training pool has junk in
it. Why a good mixture is not uniform: uniform spends a fifth of every batch on
``base64``, which stops paying after the alphabet, and keeps spending a fifth on
``arith_easy`` after it is learned; a small model has capacity and steps to spare for
neither. Which mixture is best, and whether it changes during the run, is what the
benchmark measures. (A second target, ``prose`` alone, is reported from the same runs.)

``curriculum`` — four buckets of additions with ``d`` = 1..4 digit operands, zero-padded
to a fixed width (``0012+0034=00046``), so the digits of the easy buckets sit where the
hard bucket's low digits do. Target: the hardest bucket. The known good order is easy to
hard: the ones-digit table and carries are learned from short sums at the same positions
they take in long ones (as in the arithmetic curricula of Zaremba and Sutskever, 2014).

The model is an MLP over a window of ``context`` bytes (Bengio et al., 2003), applied at
``predict`` positions of each sampled chunk: one sample is a chunk, its loss the mean
next-byte cross-entropy (nats per byte) over those positions, so per-sample losses can be
split by arm (:func:`workers.arm_loss.split_loss_by_arm`).
"""

from __future__ import annotations

import base64
import sysconfig
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from workers.tasks.charlm import VOCAB, byte_mlp

TASKS = ("mixture", "curriculum")


@dataclass(frozen=True)
class MixtureLMConfig:
    """Shapes of a task. ``context``/``predict`` are in bytes; sizes are model widths.

    Attributes:
        context: Bytes the model sees for each prediction.
        predict: Positions predicted per sampled chunk (a chunk is ``context + predict``).
        embed, hidden: Byte embedding and hidden widths of the MLP.
        batch_size: Chunks per optimizer step.
        lr: AdamW learning rate (constant).
        domain_bytes: Cap on each domain's training bytes.
        val_chunks: Validation chunks per domain (evenly spaced over its held-out bytes).
        data_seed: Seed of the generated domains (the same for every run seed).
    """

    context: int = 24
    predict: int = 16
    embed: int = 16
    hidden: int = 256
    batch_size: int = 32
    lr: float = 2e-3
    domain_bytes: int = 1_000_000
    val_chunks: int = 128
    data_seed: int = 0

    @property
    def chunk(self) -> int:
        return self.context + self.predict


@dataclass(frozen=True)
class Domain:
    """A domain's bytes: ``train`` and held-out ``val`` never overlap."""

    train: bytes
    val: bytes


# -- domains ---------------------------------------------------------------------------------


def _split_docs(docs: list[bytes], max_bytes: int) -> Domain:
    """Every 10th document to validation; each side capped (train at ``max_bytes``)."""
    train = b"".join(d for i, d in enumerate(docs) if i % 10 != 9)
    val = b"".join(d for i, d in enumerate(docs) if i % 10 == 9)
    return Domain(train[:max_bytes], val[: max(max_bytes // 10, 1)])


def code_domain(max_bytes: int) -> Domain:
    """The standard library's top-level ``.py`` files, in sorted order."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    docs = [p.read_bytes() for p in sorted(lib.glob("*.py"))]
    if len(docs) < 10:
        raise RuntimeError(f"too few .py files under {lib} to build the code domain")
    return _split_docs(docs, max_bytes)


def prose_domain(max_bytes: int) -> Domain:
    """pydoc's topic help texts (``pydoc_data.topics.topics``), sorted by topic."""
    from pydoc_data.topics import topics

    docs = [topics[k].encode("utf-8") + b"\n\n" for k in sorted(topics)]
    return _split_docs(docs, max_bytes)


def sums(rng: np.random.Generator, n_bytes: int, lo: int, hi: int, width: int = 0) -> bytes:
    """Lines ``a+b=c`` with ``a, b`` uniform in ``[lo, hi)``, zero-padded to ``width``
    digits (the sum to ``width + 1``) if ``width``; at least ``n_bytes`` long."""
    out: list[str] = []
    size = 0
    while size < n_bytes:
        a, b = rng.integers(lo, hi, size=(2, 4096))
        if width:
            lines = [
                f"{x:0{width}d}+{y:0{width}d}={x + y:0{width + 1}d}\n"
                for x, y in zip(a, b, strict=True)
            ]
        else:
            lines = [f"{x}+{y}={x + y}\n" for x, y in zip(a, b, strict=True)]
        out.extend(lines)
        size += sum(map(len, lines))
    return "".join(out).encode("ascii")


def base64_blob(rng: np.random.Generator, n_bytes: int) -> bytes:
    """Random bytes as MIME base64 (76-character lines): nothing past the alphabet to learn."""
    return base64.encodebytes(rng.bytes(n_bytes * 3 // 4 + 3))


Maker = Callable[[np.random.Generator, int], bytes]


def _generated(make: Maker, seed: int, index: int, max_bytes: int) -> Domain:
    """A generated domain: train and validation from independent random streams."""
    train = make(np.random.default_rng([seed, index, 0]), max_bytes)
    val = make(np.random.default_rng([seed, index, 1]), max(max_bytes // 10, 1))
    return Domain(bytes(train)[:max_bytes], bytes(val)[: max(max_bytes // 10, 1)])


def mixture_domains(cfg: MixtureLMConfig) -> dict[str, Domain]:
    """The five domains of the ``mixture`` task, in arm order."""
    n, s = cfg.domain_bytes, cfg.data_seed
    return {
        "code": code_domain(n),
        "prose": prose_domain(n),
        "arith_easy": _generated(partial(sums, lo=0, hi=100), s, 1, n),
        "arith_hard": _generated(partial(sums, lo=0, hi=100_000), s, 2, n),
        "base64": _generated(base64_blob, s, 3, n),
    }


def curriculum_domains(cfg: MixtureLMConfig) -> dict[str, Domain]:
    """Buckets ``d1``..``d4``: sums of two ``d``-digit numbers, padded to 4 digits."""
    out = {}
    for d in range(1, 5):
        lo = 0 if d == 1 else 10 ** (d - 1)
        make = partial(sums, lo=lo, hi=10**d, width=4)
        out[f"d{d}"] = _generated(make, cfg.data_seed, 10 + d, cfg.domain_bytes)
    return out


# -- model -----------------------------------------------------------------------------------


class WindowMLP(nn.Module):
    """``batch x (context + predict)`` byte ids -> ``batch x predict x 256`` logits: the
    same MLP over each window of ``context`` bytes, predicting the byte after it."""

    def __init__(self, cfg: MixtureLMConfig) -> None:
        super().__init__()
        self.context = cfg.context
        self.embed = nn.Embedding(VOCAB, cfg.embed)
        self.net = byte_mlp(cfg.context, cfg.embed, cfg.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        windows = x[:, :-1].unfold(1, self.context, 1)  # batch x predict x context
        return self.net(self.embed(windows).flatten(2))  # type: ignore[no-any-return]


# -- task ------------------------------------------------------------------------------------


@dataclass
class MixtureLMTask:
    """Data, model and losses of one task.

    Attributes:
        name: ``"mixture"`` or ``"curriculum"``.
        cfg: Shapes.
        arms: Training domains, in arm order.
        targets: Target name to ``{domain: weight}``; the target loss is the weighted mean
            of those domains' validation losses. The first target is the benchmark's.
        arm_starts: Arm to the chunk start offsets into :attr:`train` (stride ``predict``).
        train: All domains' training bytes, concatenated (``uint8``).
        val: Domain to its fixed validation chunks, ``val_chunks x chunk`` (``int64``).
        good_order: Arms from easiest to hardest, where the task has a known good order.
    """

    name: str
    cfg: MixtureLMConfig
    arms: tuple[str, ...]
    targets: dict[str, dict[str, float]]
    arm_starts: dict[str, range]
    train: torch.Tensor
    val: dict[str, torch.Tensor]
    good_order: tuple[str, ...] = field(default=())

    @property
    def target(self) -> str:
        """Name of the benchmark's target (the first of :attr:`targets`)."""
        return next(iter(self.targets))

    def model(self, seed: int) -> WindowMLP:
        torch.manual_seed(seed)
        return WindowMLP(self.cfg)

    def gather(self, starts: torch.Tensor | list[int]) -> torch.Tensor:
        """``batch x chunk`` byte ids of the training chunks starting at ``starts``."""
        idx = torch.as_tensor(starts, dtype=torch.long)[:, None] + torch.arange(self.cfg.chunk)
        return self.train[idx].long()

    def per_sample_loss(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``batch`` mean next-byte cross-entropies (nats per byte) of chunks ``x``."""
        logits = model(x)
        y = x[:, self.cfg.context :]
        ce = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1), reduction="none")
        return ce.view(y.shape).mean(dim=1)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation loss (nats per byte) of every domain with a validation set."""
        was_training = model.training
        model.eval()
        out = {d: float(self.per_sample_loss(model, x).mean()) for d, x in self.val.items()}
        model.train(was_training)
        return out

    def target_loss(self, losses: Mapping[str, float], target: str | None = None) -> float:
        """The weighted mean of ``losses`` that target ``target`` (default: the first) is."""
        weights = self.targets[target or self.target]
        return sum(w * losses[d] for d, w in weights.items()) / sum(weights.values())


def _windows(data: bytes, n: int, chunk: int) -> torch.Tensor:
    """``n`` evenly spaced chunks of ``data`` (fewer if it is short)."""
    if len(data) < chunk:
        raise RuntimeError(f"a validation set of {len(data)} bytes is shorter than {chunk=}")
    starts = np.unique(np.linspace(0, len(data) - chunk, n).astype(np.int64))
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    return buf[torch.as_tensor(starts)[:, None] + torch.arange(chunk)]


def build_task(name: str, cfg: MixtureLMConfig | None = None) -> MixtureLMTask:
    """The task called ``name`` (one of :data:`TASKS`)."""
    cfg = cfg or MixtureLMConfig()
    if name == "mixture":
        domains = mixture_domains(cfg)
        clean = ("code", "prose", "arith_easy", "arith_hard")
        targets = {"clean": {d: 1.0 for d in clean}, "prose": {"prose": 1.0}}
        order: tuple[str, ...] = ()
    elif name == "curriculum":
        domains = curriculum_domains(cfg)
        targets = {"d4": {"d4": 1.0}}
        order = tuple(domains)
    else:
        raise ValueError(f"unknown task {name!r}; choose one of {TASKS}")
    chunk, parts, starts, offset = cfg.chunk, [], {}, 0
    for arm, dom in domains.items():
        if len(dom.train) < chunk * 2:
            raise RuntimeError(f"domain {arm!r} has only {len(dom.train)} training bytes")
        parts.append(dom.train)
        starts[arm] = range(offset, offset + len(dom.train) - chunk + 1, cfg.predict)
        offset += len(dom.train)
    train = torch.frombuffer(bytearray(b"".join(parts)), dtype=torch.uint8)
    val = {arm: _windows(dom.val, cfg.val_chunks, chunk) for arm, dom in domains.items()}
    return MixtureLMTask(name, cfg, tuple(domains), targets, starts, train, val, order)
