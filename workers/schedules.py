"""Base learning-rate schedules: pure functions of the optimizer step.

Units everywhere in this module: a *step* is one optimizer step (0-based, so the first update
uses ``lr(0)``), and a learning rate is the plain value handed to the optimizer (not its log).
Past ``total_steps`` every schedule stays at its end value; no schedule ever returns a negative
learning rate.

Spec strings (see :func:`parse_schedule`; every ``to_spec()`` parses back to an equal object)::

    [warmup=<steps|fraction>[,init_lr=<lr>]+]<name>[:<key>=<value>[,<key>=<value>...]]

e.g. ``"cosine"``, ``"cosine:final_lr=1e-5"``, ``"wsd:decay_fraction=0.1,decay=sqrt"``,
``"warmup=100+cosine"``, ``"warmup=0.05+wsd"``.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

from tuner.errors import ConfigError

__all__ = ["DECAY_KINDS", "REX", "SCHEDULE_NAMES", "WSD", "BaseSchedule", "Constant", "Cosine"]
__all__ += ["DecayKind", "Linear", "Warmup", "parse_schedule"]

DecayKind = Literal["linear", "cosine", "sqrt"]
DECAY_KINDS: tuple[DecayKind, ...] = ("linear", "cosine", "sqrt")
SCHEDULE_NAMES: tuple[str, ...] = ("constant", "linear", "cosine", "wsd", "rex")


def _check_lr(name: str, value: float, *, positive: bool = False) -> float:
    bound = "> 0" if positive else ">= 0"
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        raise ConfigError(f"{name} must be a finite number {bound}, got {name}={value!r}")
    return float(value)


def _check_steps(name: str, value: int, *, positive: bool = True) -> int:
    bound = "a positive int" if positive else "an int >= 0"
    if not isinstance(value, int) or isinstance(value, bool) or value < (1 if positive else 0):
        raise ConfigError(f"{name} must be {bound}, got {name}={value!r}")
    return value


def _check_final(final_lr: float, peak_lr: float) -> float:
    final = _check_lr("final_lr", final_lr)
    if final > peak_lr:
        raise ConfigError(f"final_lr must be <= peak_lr, got final_lr={final!r} > {peak_lr=}")
    return final


def _lerp(peak: float, final: float, frac: float) -> float:
    """``peak`` at ``frac=0`` and ``final`` at ``frac=1``, both exactly."""
    return peak * (1.0 - frac) + final * frac


def _check_step(step: int) -> int:
    if step < 0:
        raise ConfigError(f"step must be an optimizer step >= 0, got {step=}")
    return step


class BaseSchedule(ABC):
    """A learning rate as a function of the 0-based optimizer step (plain LR, not log)."""

    if TYPE_CHECKING:  # a frozen field or a property in every subclass

        @property
        @abstractmethod
        def peak_lr(self) -> float:
            """The largest learning rate the schedule reaches (plain, not log)."""

    @abstractmethod
    def lr(self, step: int) -> float:
        """Learning rate at optimizer step ``step`` (>= 0); clamped to the end value."""

    @abstractmethod
    def to_spec(self) -> str:
        """A spec string that :func:`parse_schedule` turns back into an equal schedule."""


class _Decay(BaseSchedule):
    """Shared fields and validation of the decays from ``peak_lr`` to ``final_lr``."""

    peak_lr: float
    total_steps: int
    final_lr: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "peak_lr", _check_lr("peak_lr", self.peak_lr, positive=True))
        object.__setattr__(self, "total_steps", _check_steps("total_steps", self.total_steps))
        object.__setattr__(self, "final_lr", _check_final(self.final_lr, self.peak_lr))

    def _progress(self, step: int) -> float:
        """Fraction of ``total_steps`` done at ``step``, in [0, 1]."""
        return min(_check_step(step), self.total_steps) / self.total_steps

    def _spec_fields(self) -> str:
        return f"peak_lr={self.peak_lr!r},total_steps={self.total_steps},final_lr={self.final_lr!r}"


@dataclass(frozen=True, init=False)
class Constant(BaseSchedule):
    """The same learning rate ``lr`` (plain, > 0) at every optimizer step."""

    peak_lr: float

    def __init__(self, lr: float) -> None:
        object.__setattr__(self, "peak_lr", _check_lr("lr", lr, positive=True))

    def lr(self, step: int) -> float:
        _check_step(step)
        return self.peak_lr

    def to_spec(self) -> str:
        return f"constant:lr={self.peak_lr!r}"


@dataclass(frozen=True)
class Linear(_Decay):
    """Linear decay from ``peak_lr`` at step 0 to ``final_lr`` at step ``total_steps``."""

    peak_lr: float
    total_steps: int
    final_lr: float = 0.0

    def lr(self, step: int) -> float:
        return _lerp(self.peak_lr, self.final_lr, self._progress(step))

    def to_spec(self) -> str:
        return f"linear:{self._spec_fields()}"


@dataclass(frozen=True)
class Cosine(_Decay):
    """Half-cosine decay from ``peak_lr`` at step 0 to ``final_lr`` at step ``total_steps``."""

    peak_lr: float
    total_steps: int
    final_lr: float = 0.0

    def lr(self, step: int) -> float:
        frac = 0.5 * (1.0 - math.cos(math.pi * self._progress(step)))
        return _lerp(self.peak_lr, self.final_lr, frac)

    def to_spec(self) -> str:
        return f"cosine:{self._spec_fields()}"


@dataclass(frozen=True)
class REX(_Decay):
    """REX decay (Chen et al. 2022): with ``z = step / total_steps``,
    ``lr = final_lr + (peak_lr - final_lr) * (1 - z) / (0.5 + 0.5 * (1 - z))``."""

    peak_lr: float
    total_steps: int
    final_lr: float = 0.0

    def lr(self, step: int) -> float:
        rest = 1.0 - self._progress(step)
        return _lerp(self.peak_lr, self.final_lr, 1.0 - rest / (0.5 + 0.5 * rest))

    def to_spec(self) -> str:
        return f"rex:{self._spec_fields()}"


@dataclass(frozen=True)
class WSD(_Decay):
    """Warmup-stable-decay without the warmup (wrap it in :class:`Warmup` for one).

    ``peak_lr`` for steps up to ``(1 - decay_fraction) * total_steps``, then a decay to
    ``final_lr`` at ``total_steps``. With ``p`` the fraction of the decay phase done,
    ``decay="linear"`` is ``peak - (peak - final) * p``, ``"cosine"`` a half cosine and
    ``"sqrt"`` is ``peak - (peak - final) * sqrt(p)`` (the 1-sqrt decay of MiniCPM / WSD).
    """

    peak_lr: float
    total_steps: int
    decay_fraction: float = 0.2
    final_lr: float = 0.0
    decay: DecayKind = "linear"

    def __post_init__(self) -> None:
        super().__post_init__()
        frac = self.decay_fraction
        if not (isinstance(frac, int | float) and not isinstance(frac, bool) and 0 < frac <= 1):
            raise ConfigError(f"decay_fraction must be in (0, 1], got decay_fraction={frac!r}")
        object.__setattr__(self, "decay_fraction", float(frac))
        if self.decay not in DECAY_KINDS:
            raise ConfigError(f"decay must be one of {DECAY_KINDS}, got decay={self.decay!r}")

    def lr(self, step: int) -> float:
        decay_steps = self.decay_fraction * self.total_steps
        done = min(_check_step(step), self.total_steps) - (self.total_steps - decay_steps)
        p = min(max(done / decay_steps, 0.0), 1.0)
        if self.decay == "cosine":
            p = 0.5 * (1.0 - math.cos(math.pi * p))
        elif self.decay == "sqrt":
            p = math.sqrt(p)
        return _lerp(self.peak_lr, self.final_lr, p)

    def to_spec(self) -> str:
        return (
            f"wsd:{self._spec_fields()},decay_fraction={self.decay_fraction!r},decay={self.decay}"
        )


@dataclass(frozen=True)
class Warmup(BaseSchedule):
    """Linear warmup from ``init_lr`` to ``inner.peak_lr`` over ``warmup_steps``, then ``inner``.

    Convention: for ``step < warmup_steps`` the LR is
    ``init_lr + (inner.peak_lr - init_lr) * step / warmup_steps``; from then on it is
    ``inner.lr(step - warmup_steps)``. The inner schedule is shifted, so its ``total_steps``
    counts post-warmup optimizer steps and the whole run is ``warmup_steps + inner.total_steps``.
    """

    inner: BaseSchedule
    warmup_steps: int
    init_lr: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.inner, BaseSchedule):
            raise ConfigError(f"inner must be a BaseSchedule, got inner={self.inner!r}")
        _check_steps("warmup_steps", self.warmup_steps, positive=False)
        init = _check_lr("init_lr", self.init_lr)
        if init > self.inner.peak_lr:
            raise ConfigError(
                f"init_lr must be <= inner.peak_lr={self.inner.peak_lr!r}, got init_lr={init!r}"
            )
        object.__setattr__(self, "init_lr", init)

    @property
    def peak_lr(self) -> float:
        return self.inner.peak_lr

    def lr(self, step: int) -> float:
        if _check_step(step) < self.warmup_steps:
            return self.init_lr + (self.peak_lr - self.init_lr) * step / self.warmup_steps
        return self.inner.lr(step - self.warmup_steps)

    def to_spec(self) -> str:
        init = f",init_lr={self.init_lr!r}" if self.init_lr else ""
        return f"warmup={self.warmup_steps}{init}+{self.inner.to_spec()}"


_SPEC_HELP = "write '[warmup=<steps|fraction>+]<name>[:key=value,...]'"
_Conv = Callable[[str], object]  # turns an option's text into the constructor argument
_DECAY_KEYS: dict[str, _Conv] = {"peak_lr": float, "total_steps": int, "final_lr": float}
_REGISTRY: dict[str, tuple[Callable[..., BaseSchedule], dict[str, _Conv]]] = {
    "constant": (Constant, {"lr": float}),
    "linear": (Linear, _DECAY_KEYS),
    "cosine": (Cosine, _DECAY_KEYS),
    "wsd": (WSD, {**_DECAY_KEYS, "decay_fraction": float, "decay": str}),
    "rex": (REX, _DECAY_KEYS),
}
# A '+' joins warmup and schedule; one after an 'e' is an exponent sign, as in 1e+20.
_JOIN = re.compile(r"(?<![eE])\+")


def _parse_pairs(text: str, valid: dict[str, _Conv], where: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, raw = (s.strip() for s in pair.partition("="))
        if not sep or key not in valid:
            raise ConfigError(f"{where}: bad option {pair!r}; valid keys are {sorted(valid)}")
        if key in out:
            raise ConfigError(f"{where}: option {key!r} given twice")
        try:
            out[key] = valid[key](raw)
        except ValueError:
            kind = "an int" if valid[key] is int else "a number"
            raise ConfigError(f"{where}: {key} must be {kind}, got {key}={raw!r}") from None
    return out


def _parse_base(spec: str, peak_lr: float | None, total_steps: int | None) -> BaseSchedule:
    name, _, opts = (s.strip() for s in spec.partition(":"))
    name = name.lower()
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown schedule {name!r} in {spec!r}; valid names are {SCHEDULE_NAMES}; {_SPEC_HELP}"
        )
    cls, keys = _REGISTRY[name]
    kwargs = _parse_pairs(opts, keys, f"schedule {name!r}")
    fill = (
        {"lr": peak_lr} if name == "constant" else {"peak_lr": peak_lr, "total_steps": total_steps}
    )
    for key, value in fill.items():
        if key not in kwargs:
            if value is None:
                raise ConfigError(
                    f"schedule {name!r} needs {key}: pass {key}= to parse_schedule "
                    f"or write '{name}:{key}=...' in the spec"
                )
            kwargs[key] = value
    return cls(**kwargs)


def parse_schedule(
    spec: str, *, peak_lr: float | None = None, total_steps: int | None = None
) -> BaseSchedule:
    """Build a schedule from a spec string (grammar in the module docstring).

    ``peak_lr`` (plain LR) and ``total_steps`` (optimizer steps of the whole run) fill the
    values the spec does not give; values in the spec win. With a warmup prefix of ``W`` steps,
    the inner schedule gets ``total_steps - W`` from the argument (so the run still ends at
    ``total_steps``), but an inner ``total_steps=`` written in the spec is taken as is (post-
    warmup steps, see :class:`Warmup`). ``warmup=0.05`` (a float < 1) means 5% of the
    ``total_steps`` argument, rounded to whole steps.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"schedule spec must be a non-empty string, got {spec=}; {_SPEC_HELP}")
    parts = _JOIN.split(spec.strip(), maxsplit=1)
    if len(parts) == 1:
        return _parse_base(parts[0], peak_lr, total_steps)
    head, rest = (p.strip() for p in parts)
    if not head.lower().startswith("warmup="):
        raise ConfigError(f"only a 'warmup=<steps>' prefix may precede '+', got {head!r}")
    raw, _, opts = head[len("warmup=") :].partition(",")
    init = _parse_pairs(opts, {"init_lr": float}, "warmup").get("init_lr", 0.0)
    warmup_steps = _parse_warmup(raw.strip(), total_steps)
    inner_total = None if total_steps is None else total_steps - warmup_steps
    if inner_total is not None and inner_total <= 0:
        raise ConfigError(
            f"warmup of {warmup_steps} steps leaves no steps of {total_steps=} for the schedule"
        )
    inner = parse_schedule(rest, peak_lr=peak_lr, total_steps=inner_total)
    return Warmup(inner, warmup_steps, cast(float, init))


def _parse_warmup(raw: str, total_steps: int | None) -> int:
    """``raw`` is a step count (int >= 0) or a fraction (float in (0, 1)) of ``total_steps``."""
    if re.fullmatch(r"\d+", raw):
        return int(raw)
    try:
        frac = float(raw)
    except ValueError:
        frac = math.nan
    if not 0 < frac < 1:
        raise ConfigError(
            f"warmup must be a step count >= 0 or a fraction in (0, 1), got warmup={raw!r}"
        )
    if total_steps is None:
        raise ConfigError(
            f"fractional warmup={raw} needs the run length: pass total_steps= to parse_schedule"
        )
    return round(frac * total_steps)
