"""Tests of the pure base learning-rate schedules and their spec strings."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from itertools import pairwise

import pytest

from tuner.errors import ConfigError
from workers.schedules import (
    REX,
    SCHEDULE_NAMES,
    WSD,
    BaseSchedule,
    Constant,
    Cosine,
    Linear,
    Warmup,
    parse_schedule,
)

PEAK, FINAL, TOTAL = 2.0, 0.5, 100

DECAYS: list[BaseSchedule] = [
    Linear(PEAK, TOTAL, final_lr=FINAL),
    Cosine(PEAK, TOTAL, final_lr=FINAL),
    REX(PEAK, TOTAL, final_lr=FINAL),
    WSD(PEAK, TOTAL, final_lr=FINAL, decay="linear"),
    WSD(PEAK, TOTAL, final_lr=FINAL, decay="cosine"),
    WSD(PEAK, TOTAL, final_lr=FINAL, decay="sqrt", decay_fraction=1.0),
    Linear(PEAK, TOTAL),
    Cosine(PEAK, TOTAL),
    REX(PEAK, TOTAL),
]


# --- endpoints, monotonicity, clamping -------------------------------------------------------


@pytest.mark.parametrize("sched", DECAYS, ids=repr)
def test_decay_endpoints(sched: Linear) -> None:
    assert sched.peak_lr == PEAK
    assert sched.lr(0) == pytest.approx(PEAK, rel=1e-12)
    assert sched.lr(TOTAL) == pytest.approx(sched.final_lr, abs=1e-12)
    assert sched.lr(TOTAL - 1) > sched.final_lr


@pytest.mark.parametrize("sched", DECAYS, ids=repr)
def test_decay_is_monotone_non_increasing(sched: BaseSchedule) -> None:
    lrs = [sched.lr(step) for step in range(TOTAL + 10)]
    assert all(a >= b for a, b in pairwise(lrs))
    assert lrs[0] > lrs[TOTAL - 1] > lrs[TOTAL]
    if not isinstance(sched, WSD):  # WSD is flat in its stable phase, the others never are
        assert all(a > b for a, b in pairwise(lrs[: TOTAL + 1]))


@pytest.mark.parametrize("sched", [*DECAYS, Warmup(Cosine(PEAK, TOTAL, FINAL), 10)], ids=repr)
def test_clamped_beyond_total_steps(sched: BaseSchedule) -> None:
    end = sched.lr(TOTAL + 10 if isinstance(sched, Warmup) else TOTAL)
    for step in (TOTAL + 11, 2 * TOTAL, 10**9):
        assert sched.lr(step) == end
        assert sched.lr(step) >= 0.0


@pytest.mark.parametrize("cls", [Linear, Cosine])
def test_linear_and_cosine_meet_halfway(cls: type[Linear]) -> None:
    assert cls(PEAK, TOTAL, FINAL).lr(TOTAL // 2) == pytest.approx((PEAK + FINAL) / 2)


def test_linear_and_cosine_quarter_points() -> None:
    assert Linear(PEAK, TOTAL, FINAL).lr(25) == pytest.approx(FINAL + 0.75 * (PEAK - FINAL))
    cos_quarter = FINAL + (PEAK - FINAL) * 0.5 * (1 + math.cos(math.pi / 4))
    assert Cosine(PEAK, TOTAL, FINAL).lr(25) == pytest.approx(cos_quarter)


def test_constant_everywhere() -> None:
    sched = Constant(0.01)
    assert sched.peak_lr == 0.01
    assert {sched.lr(step) for step in (0, 1, 1000, 10**9)} == {0.01}
    assert Constant(lr=0.01) == sched


@pytest.mark.parametrize(
    ("step", "factor"), [(0, 1.0), (25, 6 / 7), (50, 2 / 3), (75, 2 / 5), (100, 0.0)]
)
def test_rex_formula(step: int, factor: float) -> None:
    # z = step / total; factor = (1 - z) / (0.5 + 0.5 * (1 - z)), worked out by hand
    assert REX(PEAK, TOTAL, FINAL).lr(step) == pytest.approx(FINAL + (PEAK - FINAL) * factor)


# --- warmup ----------------------------------------------------------------------------------


def test_warmup_shape() -> None:
    sched = Warmup(Constant(1.0), 10, init_lr=0.1)
    assert sched.peak_lr == 1.0
    assert sched.lr(0) == pytest.approx(0.1)
    assert sched.lr(5) == pytest.approx(0.55)
    assert sched.lr(9) == pytest.approx(0.91)
    assert sched.lr(10) == 1.0
    rising = [sched.lr(step) for step in range(11)]
    assert all(a < b for a, b in pairwise(rising))


def test_warmup_shifts_inner_schedule() -> None:
    inner = Cosine(PEAK, TOTAL, FINAL)
    sched = Warmup(inner, 10)
    assert sched.lr(0) == 0.0
    for k in (0, 1, 37, TOTAL, TOTAL + 5):
        assert sched.lr(10 + k) == inner.lr(k)


def test_zero_warmup_is_inner() -> None:
    inner = Linear(PEAK, TOTAL)
    sched = Warmup(inner, 0)
    assert [sched.lr(s) for s in range(0, TOTAL + 2, 7)] == [
        inner.lr(s) for s in range(0, TOTAL + 2, 7)
    ]


# --- WSD phases ------------------------------------------------------------------------------


@pytest.mark.parametrize("decay", ["linear", "cosine", "sqrt"])
def test_wsd_stable_then_decay(decay: str) -> None:
    sched = WSD(1.0, 100, decay_fraction=0.2, final_lr=0.1, decay=decay)  # type: ignore[arg-type]
    assert all(sched.lr(step) == 1.0 for step in range(81))
    assert sched.lr(81) < 1.0
    assert sched.lr(100) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("decay", "step", "expected"),
    [
        ("linear", 90, 0.55),
        ("linear", 85, 1.0 - 0.9 * 0.25),
        ("cosine", 90, 0.55),
        ("cosine", 85, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))),
        ("sqrt", 85, 1.0 - 0.9 * 0.5),
        ("sqrt", 90, 1.0 - 0.9 * math.sqrt(0.5)),
    ],
)
def test_wsd_decay_values(decay: str, step: int, expected: float) -> None:
    sched = WSD(1.0, 100, decay_fraction=0.2, final_lr=0.1, decay=decay)  # type: ignore[arg-type]
    assert sched.lr(step) == pytest.approx(expected)


def test_wsd_full_decay_fraction_starts_at_step_zero() -> None:
    sched = WSD(1.0, 100, decay_fraction=1.0)
    assert sched.lr(0) == 1.0
    assert sched.lr(50) == pytest.approx(0.5)


# --- spec strings ----------------------------------------------------------------------------

ROUND_TRIP: list[BaseSchedule] = [
    Constant(0.01),
    Constant(3e-4),
    Linear(1e-3, 1000),
    Linear(0.1, 7, final_lr=0.03),
    Cosine(1e-3, 1000, final_lr=1e-5),
    REX(0.3, 12345, final_lr=0.1),
    WSD(1e-3, 1000),
    WSD(1e-3, 1000, decay_fraction=0.1, final_lr=1e-6, decay="sqrt"),
    WSD(2.5, 10, decay_fraction=1.0, decay="cosine"),
    Warmup(Cosine(1e-3, 900), 100),
    Warmup(WSD(1e-3, 950, decay="sqrt"), 50, init_lr=1e-7),
    Warmup(Constant(0.5), 0),
    Warmup(Warmup(REX(1.0, 10), 3, init_lr=0.5), 2),
    Warmup(Cosine(1e21, 10, final_lr=1e20), 5, init_lr=1e20),  # exponents written 'e+'
]


@pytest.mark.parametrize("sched", ROUND_TRIP, ids=repr)
def test_to_spec_round_trips(sched: BaseSchedule) -> None:
    spec = sched.to_spec()
    assert parse_schedule(spec) == sched
    # values written in the spec win over the arguments
    assert parse_schedule(spec, peak_lr=9.0, total_steps=100_000) == sched
    assert parse_schedule(spec).to_spec() == spec


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_every_name_parses_from_arguments(name: str) -> None:
    sched = parse_schedule(name, peak_lr=0.02, total_steps=50)
    assert sched.peak_lr == 0.02
    assert sched.lr(0) == pytest.approx(0.02)
    assert sched.to_spec().startswith(f"{name}:")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("constant", Constant(1e-3)),
        ("constant:lr=0.01", Constant(0.01)),
        ("cosine", Cosine(1e-3, 1000)),
        ("cosine:final_lr=1e-5", Cosine(1e-3, 1000, final_lr=1e-5)),
        ("  Cosine : final_lr = 1e-5 ", Cosine(1e-3, 1000, final_lr=1e-5)),
        ("linear", Linear(1e-3, 1000)),
        ("linear:total_steps=10,peak_lr=0.5", Linear(0.5, 10)),
        ("rex", REX(1e-3, 1000)),
        ("wsd:decay_fraction=0.1,decay=sqrt", WSD(1e-3, 1000, decay_fraction=0.1, decay="sqrt")),
        ("warmup=100+cosine", Warmup(Cosine(1e-3, 900), 100)),
        ("warmup=0.05+wsd", Warmup(WSD(1e-3, 950), 50)),
        ("warmup=10,init_lr=1e-6+rex", Warmup(REX(1e-3, 990), 10, init_lr=1e-6)),
        ("warmup=10+cosine:total_steps=20", Warmup(Cosine(1e-3, 20), 10)),
    ],
)
def test_parse_schedule(spec: str, expected: BaseSchedule) -> None:
    assert parse_schedule(spec, peak_lr=1e-3, total_steps=1000) == expected


# --- validation ------------------------------------------------------------------------------

BAD: list[tuple[Callable[[], object], str]] = [
    (lambda: Constant(0.0), "lr=0.0"),
    (lambda: Constant(-0.1), "lr=-0.1"),
    (lambda: Constant(math.nan), "lr=nan"),
    (lambda: Linear(0.0, 10), "peak_lr=0.0"),
    (lambda: Cosine(math.inf, 10), "peak_lr=inf"),
    (lambda: REX(-1.0, 10), "peak_lr=-1.0"),
    (lambda: Linear(1.0, 0), "total_steps=0"),
    (lambda: Cosine(1.0, -5), "total_steps=-5"),
    (lambda: REX(1.0, 10.5), "total_steps=10.5"),  # type: ignore[arg-type]
    (lambda: Cosine(1.0, 10, final_lr=-0.1), "final_lr=-0.1"),
    (lambda: Linear(1.0, 10, final_lr=math.nan), "final_lr=nan"),
    (lambda: REX(1.0, 10, final_lr=2.0), "final_lr=2.0"),
    (lambda: WSD(1.0, 10, decay_fraction=0.0), "decay_fraction=0.0"),
    (lambda: WSD(1.0, 10, decay_fraction=1.5), "decay_fraction=1.5"),
    (lambda: WSD(1.0, 10, decay="exp"), "decay='exp'"),  # type: ignore[arg-type]
    (lambda: WSD(1.0, 10, final_lr=3.0), "final_lr=3.0"),
    (lambda: Warmup(Constant(1.0), -1), "warmup_steps=-1"),
    (lambda: Warmup(Constant(1.0), 5, init_lr=-0.5), "init_lr=-0.5"),
    (lambda: Warmup(Constant(1.0), 5, init_lr=2.0), "init_lr=2.0"),
    (lambda: Warmup("cosine", 5), "inner='cosine'"),  # type: ignore[arg-type]
    (lambda: Cosine(1.0, 10).lr(-1), "step=-1"),
    (lambda: Warmup(Constant(1.0), 5).lr(-3), "step=-3"),
]


@pytest.mark.parametrize(("make", "names"), BAD, ids=[names for _, names in BAD])
def test_validation_errors_name_the_bad_value(make: Callable[[], object], names: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(names)):
        make()


def test_schedules_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Cosine(1.0, 10).peak_lr = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("spec", "kwargs", "names"),
    [
        ("", {}, "non-empty"),
        ("exponential", {}, "'exponential'"),
        ("cosine", {"total_steps": 10}, "needs peak_lr: pass peak_lr="),
        ("cosine", {"peak_lr": 1.0}, "needs total_steps: pass total_steps="),
        ("constant", {}, "needs lr: pass lr="),
        ("cosine:bogus=1", {"peak_lr": 1.0, "total_steps": 10}, "'bogus=1'"),
        ("cosine:final_lr", {"peak_lr": 1.0, "total_steps": 10}, "'final_lr'"),
        ("cosine:final_lr=1,final_lr=2", {"peak_lr": 3.0, "total_steps": 10}, "given twice"),
        ("cosine:final_lr=abc", {"peak_lr": 1.0, "total_steps": 10}, "final_lr='abc'"),
        ("linear:total_steps=1e3", {"peak_lr": 1.0}, "total_steps='1e3'"),
        ("cosine:peak_lr=-1", {"total_steps": 10}, "peak_lr=-1.0"),
        ("wsd:decay=exp", {"peak_lr": 1.0, "total_steps": 10}, "decay='exp'"),
        ("wsd:decay_fraction=2", {"peak_lr": 1.0, "total_steps": 10}, "decay_fraction=2.0"),
        ("warmup=0.05+cosine:peak_lr=1,total_steps=10", {}, "pass total_steps="),
        ("warmup=abc+cosine", {"peak_lr": 1.0, "total_steps": 10}, "warmup='abc'"),
        ("warmup=1.5+cosine", {"peak_lr": 1.0, "total_steps": 10}, "warmup='1.5'"),
        ("warmup=-3+cosine", {"peak_lr": 1.0, "total_steps": 10}, "warmup='-3'"),
        ("warmup=10+cosine", {"peak_lr": 1.0, "total_steps": 10}, "total_steps=10"),
        ("warmup=5,bad=1+cosine", {"peak_lr": 1.0, "total_steps": 10}, "'bad=1'"),
        ("warmup=5,init_lr=2+cosine", {"peak_lr": 1.0, "total_steps": 10}, "init_lr=2.0"),
        ("cosine+linear", {"peak_lr": 1.0, "total_steps": 10}, "'cosine'"),
        ("warmup=5", {"peak_lr": 1.0, "total_steps": 10}, "'warmup=5'"),
    ],
)
def test_parse_errors(spec: str, kwargs: dict[str, float], names: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(names)):
        parse_schedule(spec, **kwargs)  # type: ignore[arg-type]


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        parse_schedule("exponential", peak_lr=1.0, total_steps=10)
    assert all(name in str(info.value) for name in SCHEDULE_NAMES)
