"""Mixture weights, deterministic arm draws, and the tags every mixture batch carries.

Shared by :class:`~workers.sampler.MixtureBatchSampler` (map-style data) and
:class:`~workers.mixture_stream.MixtureStream` (streams); users import both from
:mod:`workers.sampler`.

Determinism. The arms of batch ``b`` drawn under mixture ``version`` are a function of
``(seed, version, b)`` and the weights only, never of the rank, the worker or the time, so
every data-parallel rank draws the same arm sequence. Weights come from a
``weights_for(step)`` callable (:data:`WeightsFn`) that every rank answers alike for the
same step, as ``Agent.decision(step)`` does.

Weights are plain (not log) and normalized here to sum to 1; arms a weight mapping leaves
out get weight 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import default_collate

from tuner.errors import ConfigError

if TYPE_CHECKING:
    from tuner.records import Decision

WeightsFn: TypeAlias = Callable[[int], "tuple[int, Mapping[str, float]] | None"]
"""``weights_for(step) -> (version, {arm: weight})``, or ``None`` to keep the weights in force.

Called once per batch with the optimizer step the batch is for. Must answer every rank
alike for the same step. ``version`` is an int ``>= 0`` that changes whenever the weights
do (a decision's version); it keys the draws and tags the batch.
"""

INITIAL_VERSION = 0
"""The version batches carry while no ``weights_for`` answer has replaced the initial weights."""

# Domain separation of the random streams keyed by the seed.
_DRAW = 0
_SHUFFLE = 1


class MixtureIndex(NamedTuple):
    """One slot of a batch, as :class:`~workers.sampler.MixtureBatchSampler` yields it.

    Attributes:
        idx: Index into the underlying data (see :class:`~workers.sampler.MixtureDataset`).
        arm: Arm id, the arm's position in the sampler's ``arm_names``.
        version: Mixture version the batch was drawn under.
        step: Optimizer step the batch is for.
        batch: The sampler's batch counter (``state_dict(after_batch=...)`` takes it).
    """

    idx: int
    arm: int
    version: int
    step: int
    batch: int


class MixtureSample(NamedTuple):
    """One item with its tag; what a mixture dataset or stream yields."""

    item: Any
    arm: int
    version: int
    step: int
    batch: int


class MixtureBatch(NamedTuple):
    """A collated batch with its tag (:class:`MixtureCollate` builds it).

    Attributes:
        data: The items, collated by the inner collate function.
        arms: ``batch`` int64 tensor, the arm id of each item.
        version: Mixture version the whole batch was drawn under.
        step: Optimizer step the batch was drawn for.
        batch: The sampler's batch counter.
    """

    data: Any
    arms: torch.Tensor
    version: int
    step: int
    batch: int


class MixtureCollate:
    """Collates :class:`MixtureSample` lists into a :class:`MixtureBatch`.

    The items go through ``collate_fn`` (default torch's ``default_collate``); the tags
    become ``arms``, ``version``, ``step`` and ``batch``. A class rather than a closure so
    that DataLoader workers started with ``spawn`` can pickle it.

    Raises:
        ConfigError: the samples come from different sampler batches, i.e. the DataLoader's
            batches are not the mixture's (give a stream's DataLoader its ``batch_size``).
    """

    def __init__(self, collate_fn: Callable[[list[Any]], Any] = default_collate) -> None:
        self.collate_fn = collate_fn

    def __call__(self, samples: Sequence[MixtureSample]) -> MixtureBatch:
        if not samples:
            raise ConfigError("cannot collate an empty mixture batch")
        first = samples[0]
        for s in samples:
            if not isinstance(s, MixtureSample):
                raise ConfigError(
                    f"mixture collate expects MixtureSample items, got {type(s).__name__}; "
                    "index a MixtureDataset with a MixtureBatchSampler, or iterate a MixtureStream"
                )
            if s.batch != first.batch:
                raise ConfigError(
                    f"one DataLoader batch holds samples of mixture batches {first.batch} and "
                    f"{s.batch}; give the DataLoader the mixture's batch_size"
                )
        return MixtureBatch(
            data=self.collate_fn([s.item for s in samples]),
            arms=torch.tensor([s.arm for s in samples], dtype=torch.long),
            version=first.version,
            step=first.step,
            batch=first.batch,
        )


mixture_collate = MixtureCollate()
"""The default :class:`MixtureCollate` (items through ``default_collate``)."""


def decision_weights(decision_for: Callable[[int], Decision | None]) -> WeightsFn:
    """A :data:`WeightsFn` over decisions: ``(d.version, d.mixture)`` of the decision
    covering a step, or ``None`` (keep the weights in force) where there is none or it
    leaves the mixture alone (``mixture=None``). Pass ``agent.decision``."""

    def weights_for(step: int) -> tuple[int, Mapping[str, float]] | None:
        d = decision_for(step)
        if d is None or d.mixture is None:
            return None
        return d.version, d.mixture

    return weights_for


# -- validation -------------------------------------------------------------------------


def check_int(name: str, value: object, *, minimum: int) -> int:
    """``value`` as an int ``>= minimum``, else :class:`ConfigError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {name}={value!r}")
    return int(value)


def check_arm_names(names: Iterable[object]) -> tuple[str, ...]:
    """The arm names in order; they must be distinct non-empty strings, at least one."""
    out: list[str] = []
    for name in names:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"arm names must be non-empty strings, got {name!r}")
        out.append(name)
    if not out:
        raise ConfigError("a mixture needs at least one arm, got none")
    return tuple(out)


def normalize_weights(
    weights: Mapping[str, Any], arms: Sequence[str], *, what: str = "weights"
) -> tuple[float, ...]:
    """``weights`` in ``arms`` order, scaled to sum to 1; arms left out get 0.

    Raises:
        ConfigError: not a mapping, an unknown arm, a weight that is not a finite number
            ``>= 0``, or all weights 0. The message names the arm and value and ``what``.
    """
    if not isinstance(weights, Mapping):
        raise ConfigError(f"{what} must be a mapping {{arm: weight}}, got {weights!r}")
    known = set(arms)
    unknown = [name for name in weights if name not in known]
    if unknown:
        raise ConfigError(f"{what} name unknown arms {unknown}; the arms are {list(arms)}")
    out: list[float] = []
    for name in arms:
        raw = weights.get(name, 0.0)
        try:
            if isinstance(raw, bool | str):
                raise TypeError
            w = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{what}: weight of arm {name!r} is not a number: {raw!r}") from None
        if not math.isfinite(w) or w < 0:
            raise ConfigError(f"{what}: weight of arm {name!r} must be finite and >= 0, got {w}")
        out.append(w)
    total = math.fsum(out)
    if not total > 0:
        raise ConfigError(f"{what}: weights must have a positive sum, got {dict(weights)}")
    return tuple(w / total for w in out)


def resolve_initial_weights(
    spec: Mapping[str, float] | str, arms: Sequence[str], sizes: Sequence[int] | None
) -> tuple[float, ...]:
    """The weights in force before any decision: a mapping, ``"uniform"``, or ``"size"``
    (proportional to the arms' item counts; needs ``sizes``)."""
    if isinstance(spec, str):
        if spec == "uniform":
            return tuple(1.0 / len(arms) for _ in arms)
        if spec == "size":
            if sizes is None:
                raise ConfigError(
                    "initial_weights='size' needs arms of known size; streams take a mapping "
                    "or 'uniform'"
                )
            return normalize_weights(dict(zip(arms, sizes, strict=True)), arms, what="arm sizes")
        raise ConfigError(f"initial_weights must be a mapping, 'uniform' or 'size', got {spec!r}")
    return normalize_weights(spec, arms, what="initial_weights")


# -- draws ------------------------------------------------------------------------------


def cumulative(weights: Sequence[float]) -> npt.NDArray[np.float64]:
    """The CDF the draws invert (``searchsorted(cdf, u, side="right")`` for ``u`` in [0, 1)).

    An arm of weight 0 owns an empty interval, so it is never drawn: its cumulative sum
    equals its predecessor's, and trailing ones equal the total exactly (adding 0.0 is
    exact), so the CDF is exactly 1 from the last positive arm on.
    """
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    cdf /= cdf[-1]
    return cdf


def draw_arms(
    cdf: npt.NDArray[np.float64], n: int, *, seed: int, version: int, batch: int
) -> list[int]:
    """``n`` i.i.d. arm ids for batch ``batch`` under mixture ``version``; a pure function
    of its arguments (numpy's PCG64 keyed by ``(seed, version, batch)``)."""
    rng = np.random.Generator(
        np.random.PCG64(np.random.SeedSequence((seed, _DRAW, version, batch)))
    )
    ids: list[int] = np.searchsorted(cdf, rng.random(n), side="right").tolist()
    return ids


def permutation(n: int, *, seed: int, arm: int, epoch: int, rank: int) -> npt.NDArray[np.int64]:
    """The order rank ``rank`` reads its ``n``-item shard of ``arm`` in, in ``epoch``."""
    key = np.random.SeedSequence((seed, _SHUFFLE, arm, epoch, rank))
    return np.random.Generator(np.random.PCG64(key)).permutation(n)


class WeightTracker:
    """The weights in force, updated from ``weights_for`` once per batch.

    ``weights_for(step - lag)`` answers for the batch of ``step``; ``None`` (or no
    ``weights_for``) keeps what is in force.
    """

    def __init__(
        self,
        arms: Sequence[str],
        weights_for: WeightsFn | None,
        initial: tuple[float, ...],
        *,
        lag: int = 0,
    ) -> None:
        self.arms = tuple(arms)
        self.weights_for = weights_for
        self.lag = lag
        self._raw: object = None
        self.set(INITIAL_VERSION, initial)

    def set(self, version: int, weights: tuple[float, ...]) -> None:
        self.version = version
        self.weights = weights
        self.cdf = cumulative(weights)

    def update(self, step: int) -> None:
        if self.weights_for is None:
            return
        asked = max(step - self.lag, 0)
        got = self.weights_for(asked)
        if got is None:
            return
        try:
            version, weights = got
        except (TypeError, ValueError):
            raise ConfigError(
                f"weights_for({asked}) must return (version, {{arm: weight}}) or None, got {got!r}"
            ) from None
        version = check_int(
            f"the mixture version weights_for({asked}) returned", version, minimum=0
        )
        if version == self.version and weights is self._raw:
            return  # the same decision object as last batch: already validated
        normalized = normalize_weights(
            weights, self.arms, what=f"mixture version {version} (weights_for({asked}))"
        )
        self._raw = weights
        if version != self.version or normalized != self.weights:
            self.set(version, normalized)


class BatchLayout:
    """How a mixture lays its batches over ranks and optimizer steps, and draws their arms.

    A mixin for :class:`~workers.sampler.MixtureBatchSampler` and
    :class:`~workers.mixture_stream.MixtureStream`, which take these as arguments and keep
    them as attributes; :meth:`set_layout` checks them.
    """

    batch_size: int
    seed: int
    rank: int
    world_size: int
    batches_per_step: int
    start_step: int
    num_batches: int | None

    def set_layout(
        self,
        batch_size: int,
        seed: int,
        rank: int,
        world_size: int,
        batches_per_step: int,
        start_step: int,
        num_batches: int | None,
    ) -> None:
        """Check and keep the layout (see the mixture classes for each argument).

        Raises:
            ConfigError: a value that is not an int of its minimum, or ``rank >= world_size``.
        """
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        self.world_size = check_int("world_size", world_size, minimum=1)
        self.rank = check_int("rank", rank, minimum=0)
        if self.rank >= self.world_size:
            raise ConfigError(f"rank must be in [0, world_size), got {rank=}, {world_size=}")
        self.batches_per_step = check_int("batches_per_step", batches_per_step, minimum=1)
        self.start_step = check_int("start_step", start_step, minimum=0)
        self.num_batches = (
            None if num_batches is None else check_int("num_batches", num_batches, minimum=1)
        )

    def draw_batch(self, mixture: WeightTracker, batch: int) -> tuple[int, list[int]]:
        """The optimizer step of batch ``batch`` and its ``batch_size`` arm ids, drawn from
        the weights ``mixture`` holds for that step (``mixture.version`` after the call)."""
        step = self.start_step + batch // self.batches_per_step
        mixture.update(step)
        arm_ids = draw_arms(
            mixture.cdf, self.batch_size, seed=self.seed, version=mixture.version, batch=batch
        )
        return step, arm_ids
