"""Stage mechanics, report attribution, config validation and state loading of the bandits."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tuner.controllers.base import Plan
from tuner.controllers.mixture import (
    ALGORITHMS,
    SEC,
    BanditMixture,
    DiscountedTS,
    DiscountedTSConfig,
    SECConfig,
    build_mixture,
)
from tuner.errors import ConfigError
from tuner.records import Decision, DecisionKind, Report

ARMS = ("a", "b", "c")


def _accept(ctl: BanditMixture, plan: Plan, version: int) -> Decision:
    decision = ctl.propose(plan)
    assert decision is not None
    decision = decision.with_version(version)
    ctl.accept(decision)
    return decision


def _report(step: int, version: int | None = None, rank: int = 0, **arms: float) -> Report:
    metrics = {f"arm_adv/{arm}": value for arm, value in arms.items()}
    if version is not None:
        metrics["mixture_version"] = version
    return Report(rank=rank, step=step, metrics=metrics, ts=0.0)


def test_stages_follow_one_another_and_stop_at_total_steps() -> None:
    ctl = SEC(SECConfig(arms=ARMS, tau=20, warmup_steps=7, total_steps=50))
    first = _accept(ctl, Plan(horizon=-1, last_step=3), 1)
    assert (first.stage, first.from_step, first.until_step) == (0, 7, 27)
    assert first.kind is DecisionKind.COMMIT and first.lr is None and first.controller == "sec"
    assert first.mixture == pytest.approx({a: 1 / 3 for a in ARMS})
    assert ctl.propose(Plan(horizon=26, last_step=21)) is None  # before until - lead = 22
    second = _accept(ctl, Plan(horizon=26, last_step=22), 2)
    assert (second.stage, second.from_step, second.until_step) == (1, 27, 47)
    assert not ctl.done
    third = _accept(ctl, Plan(horizon=46, last_step=42), 3)
    assert (third.stage, third.from_step, third.until_step) == (2, 47, 50)
    assert ctl.done and ctl.propose(Plan(horizon=49, last_step=49)) is None
    # the last stage is final: its workers do not wait at its end for a decision after it
    assert third.info.get("final") and not first.info.get("final")
    assert not second.info.get("final")


@pytest.mark.parametrize("method", sorted(ALGORITHMS))
def test_every_arm_pinned_plays_the_pins_every_stage(method: str) -> None:
    ctl = build_mixture(
        {"method": method, "arms": ["a", "b"], "pinned": {"a": 0.7, "b": 0.3}, "tau": 10}
        | {"total_steps": 40}
    )
    decisions = []
    for step in range(40):
        version = len(decisions)
        ctl.observe([_report(step, version or None, a=0.5 + step % 3, b=0.1)])
        while (d := ctl.propose(Plan(horizon=step, last_step=step))) is not None:
            decisions.append(d.with_version(len(decisions) + 1))
            ctl.accept(decisions[-1])
    assert len(decisions) == 4 and ctl.done
    assert all(d.mixture == {"a": 0.7, "b": 0.3} for d in decisions)


def test_first_stage_starts_after_the_horizon_and_a_late_head_does_not_decide_the_past() -> None:
    ctl = SEC(SECConfig(arms=ARMS, tau=20, lead=3))
    first = _accept(ctl, Plan(horizon=30, last_step=12), 1)
    assert (first.from_step, first.until_step) == (31, 51)
    ctl.observe([_report(90, a=0.5)])  # the head was away; workers went on
    second = _accept(ctl, Plan(horizon=50, last_step=90), 2)
    assert (second.from_step, second.until_step) == (91, 111)


def test_signals_count_for_the_stage_of_their_mixture_version() -> None:
    ctl = SEC(SECConfig(arms=ARMS, tau=20, alpha=1.0))  # alpha 1: Q is the last reward
    _accept(ctl, Plan(horizon=-1, last_step=-1), 1)  # [0, 20), scored on [0, 15)
    ctl.observe(
        [
            _report(0, 1, a=0.9, b=0.1),
            _report(3, None, a=0.6),  # no version: by step
            _report(4, 7, a=0.0, b=0.0, c=0.0),  # a version of no stage of ours
            _report(5, 1, rank=1),  # no arm signals: ignored
        ]
    )
    assert ctl.summary()["unattributed"] == 1 and ctl.updates == 0
    ctl.observe([_report(15, 1, a=0.3)])  # past the window: late, and scores the stage
    assert ctl.updates == 1 and ctl.summary()["late_reports"] == 1
    assert ctl.last_rewards == pytest.approx({"a": 0.75, "b": 0.1})
    assert ctl.vectors["q"].tolist() == pytest.approx([0.75, 0.1, 0.0])  # c: no data, no update
    _accept(ctl, Plan(horizon=19, last_step=15), 2)  # [20, 40)
    ctl.observe(
        [
            _report(21, 1, c=0.9),  # still drawn from stage 0's mixture: late, not stage 1's
            _report(22, None, c=0.2),  # by step: stage 1
            _report(23, 2, b=0.4),
            _report(35, 2),
        ]
    )
    assert ctl.summary()["late_reports"] == 2
    assert ctl.last_rewards == pytest.approx({"b": 0.4, "c": 0.2})


def test_learning_progress_uses_the_two_halves_of_the_window() -> None:
    ctl = SEC(SECConfig(arms=ARMS, tau=20, alpha=1.0, reward="learning_progress"))
    _accept(ctl, Plan(horizon=-1, last_step=-1), 1)  # window [0, 15), halves split at 7
    reports = []
    for step in range(15):
        late = step >= 7
        loss = {"a": 2.0 - 0.2 * late, "b": 1.0 - 0.05 * late, "c": 1.0}
        reports.append(
            Report(rank=0, step=step, metrics={f"arm_loss/{k}": v for k, v in loss.items()})
        )
    reports.append(Report(rank=0, step=15, metrics={}, ts=0.0))
    ctl.observe(reports)
    assert ctl.last_rewards == pytest.approx({"a": 1.0, "b": 0.75, "c": 0.5})


def test_a_stage_without_signals_changes_nothing() -> None:
    ctl = SEC(SECConfig(arms=ARMS, tau=20))
    _accept(ctl, Plan(horizon=-1, last_step=-1), 1)
    ctl.observe([Report(rank=0, step=s, metrics={"loss": 1.0}, ts=0.0) for s in range(20)])
    assert ctl.updates == 0 and ctl.vectors["q"].tolist() == [0.0, 0.0, 0.0]


def test_a_newer_version_of_a_stage_supersedes_the_older() -> None:
    ctl = SEC(SECConfig(arms=ARMS, tau=20))
    decision = _accept(ctl, Plan(horizon=-1, last_step=-1), 1)
    ctl.accept(decision.with_version(4))
    assert [(s["stage"], s["version"]) for s in ctl.state_dict()["stages"]] == [(0, 4)]
    with pytest.raises(ConfigError, match="without a mixture"):
        ctl.accept(Decision(stage=1, kind=DecisionKind.HOLD, from_step=20, version=5))


def test_thompson_draws_are_reproducible_from_the_seed() -> None:
    plan = Plan(horizon=-1, last_step=-1)

    def first(seed: int) -> dict[str, float]:
        decision = DiscountedTS(DiscountedTSConfig(arms=ARMS, seed=seed, draws=50)).propose(plan)
        assert decision is not None and decision.mixture is not None
        return dict(decision.mixture)

    assert first(3) == first(3)
    assert first(3) != first(4)


def test_summary_and_state_are_json() -> None:
    for name, cls in ALGORITHMS.items():
        ctl = cls(cls.config_type(arms=ARMS))
        _accept(ctl, Plan(horizon=-1, last_step=-1), 1)
        json.dumps(ctl.summary(), allow_nan=False)
        assert json.loads(json.dumps(ctl.state_dict(), allow_nan=False))["algorithm"] == name


# -- config ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "settings", "message"),
    [
        ("sec", {"arms": ["a"]}, "arms=['a']"),
        ("sec", {"arms": "ab"}, "arms='ab'"),
        ("sec", {"arms": ["a", "a", "b"]}, "duplicates ['a']"),
        ("sec", {"arms": ["a", ""]}, "''"),
        ("sec", {"tau": 3}, "tau=3"),
        ("sec", {"tau": 20, "lead": 10}, "lead=10"),
        ("sec", {"warmup_steps": -1}, "warmup_steps=-1"),
        ("sec", {"warmup_steps": 10, "total_steps": 10}, "total_steps=10"),
        ("sec", {"floor": 0.5}, "floor=0.5"),
        ("sec", {"floor": -0.1}, "floor=-0.1"),
        ("sec", {"pinned": {"x": 0.1}}, "'x'"),
        ("sec", {"pinned": {"a": 1.5}}, "pinned['a']=1.5"),
        ("sec", {"pinned": {"a": 0.6, "b": 0.4}}, "sum to 1.0"),
        ("sec", {"reward": "progress"}, "'progress'"),
        ("sec", {"reward_scale": 0.0}, "reward_scale=0.0"),
        ("sec", {"seed": -1}, "seed=-1"),
        ("sec", {"alpha": 0.0}, "alpha=0.0"),
        ("sec", {"temperature": float("nan")}, "temperature=nan"),
        ("exp3", {"eta": -1.0}, "eta=-1.0"),
        ("exp3", {"gamma": 1.5}, "gamma=1.5"),
        ("exp3s", {"share": 1.0}, "share=1.0"),
        ("odm", {"smoothing": 1.0}, "smoothing=1.0"),
        ("ducb", {"discount": 0.0}, "discount=0.0"),
        ("ducb", {"bonus": -0.5}, "bonus=-0.5"),
        ("dts", {"prior_std": 0.0}, "prior_std=0.0"),
        ("dts", {"noise_std": True}, "noise_std must be a number, got True"),
        ("dts", {"draws": 0}, "draws=0"),
    ],
)
def test_config_errors_name_the_bad_value(
    method: str, settings: dict[str, Any], message: str
) -> None:
    spec = {"method": method, "arms": ["a", "b", "c"], **settings}
    with pytest.raises(ConfigError) as info:
        build_mixture(spec)
    assert message in str(info.value)


def test_build_mixture() -> None:
    ctl = build_mixture({"method": "exp3s", "arms": ["a", "b"], "tau": 50, "share": 0.2})
    assert ctl.algorithm == "exp3s" and ctl.config.tau == 50 and ctl.config.arms == ("a", "b")
    with pytest.raises(ConfigError, match="unknown mixture method 'ucb'"):
        build_mixture({"method": "ucb", "arms": ["a", "b"]})
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['temperature'\]"):
        build_mixture({"method": "exp3", "arms": ["a", "b"], "temperature": 1.0})
    with pytest.raises(ConfigError, match="needs arms"):
        build_mixture({"method": "odm"})
    with pytest.raises(ConfigError, match="needs a SECConfig"):
        SEC(DiscountedTSConfig(arms=ARMS))  # type: ignore[arg-type]


# -- loading state ----------------------------------------------------------------------


def _trained(method: str) -> BanditMixture:
    ctl = build_mixture({"method": method, "arms": list(ARMS), "tau": 20})
    _accept(ctl, Plan(horizon=-1, last_step=-1), 1)
    reports = []
    for step in range(25):
        metrics = {f"arm_{sig}/{a}": 1.0 + i for i, a in enumerate(ARMS) for sig in ("adv", "loss")}
        reports.append(Report(rank=0, step=step, metrics=metrics, ts=0.0))
    ctl.observe(reports[:17])
    _accept(ctl, Plan(horizon=19, last_step=16), 2)
    ctl.observe(reports[17:])
    assert ctl.updates == 1
    return ctl


Corrupt = Callable[[dict[str, Any]], Any]
CORRUPTIONS: dict[str, Corrupt] = {
    "not a dict": lambda s: [s],
    "missing key": lambda s: {k: v for k, v in s.items() if k != "updates"},
    "other algorithm": lambda s: {**s, "algorithm": "nope"},
    "bad config": lambda s: {**s, "config": {**s["config"], "tau": 0}},
    "unknown config key": lambda s: {**s, "config": {**s["config"], "x": 1}},
    "short vector": lambda s: {**s, "vectors": {k: v[:-1] for k, v in s["vectors"].items()}},
    "nan in vector": lambda s: {**s, "vectors": {k: [float("nan")] * 3 for k in s["vectors"]}},
    "vector names": lambda s: {**s, "vectors": {"zzz": [0.0] * 3}},
    "stage key": lambda s: {**s, "stages": [{**s["stages"][0], "sums": None}]},
    "stage order": lambda s: {**s, "stages": s["stages"][::-1]},
    "stage until": lambda s: {**s, "stages": [{**s["stages"][0], "until": 0}]},
    "sums row": lambda s: {**s, "stages": [{**s["stages"][-1], "sums": {"a": [1.0]}}]},
    "unknown arm": lambda s: {**s, "last_rewards": {"zz": 1.0}},
    "last_step": lambda s: {**s, "last_step": "12"},
    "finished": lambda s: {**s, "finished": 1},
    "played arm": lambda s: {**s, "played": {"zz": 1.0}},
    "played negative": lambda s: {**s, "played": {"a": -1.0}},
}


@pytest.mark.parametrize("method", ALGORITHMS)
@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_load_rejects_garbage_without_half_loading(method: str, corruption: str) -> None:
    ctl = _trained(method)
    good = ctl.state_dict()
    before = json.dumps(good, sort_keys=True)
    with pytest.raises(ConfigError, match="state"):
        ctl.load_state_dict(CORRUPTIONS[corruption](json.loads(before)))
    assert json.dumps(ctl.state_dict(), sort_keys=True) == before


@pytest.mark.parametrize("method", ["ducb", "dts"])
def test_load_rejects_negative_counts(method: str) -> None:
    ctl = _trained(method)
    state = ctl.state_dict()
    state["vectors"]["n"][0] = -1.0
    with pytest.raises(ConfigError, match="counts"):
        ctl.load_state_dict(state)


def test_a_reward_whose_metric_is_never_reported_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctl = build_mixture({"method": "exp3s", "arms": list(ARMS), "tau": 20})  # reads arm_loss
    assert ctl.config.reward == "learning_progress"
    _accept(ctl, Plan(horizon=-1, last_step=-1), 1)
    with caplog.at_level("WARNING", logger="tuner.controllers.mixture.base"):
        ctl.observe([_report(s, 1, a=0.5, b=0.2) for s in range(16)])  # arm_adv only
        _accept(ctl, Plan(horizon=19, last_step=15), 2)
        ctl.observe([_report(s, 2, a=0.5, b=0.2) for s in range(20, 36)])
    assert ctl.updates == 0
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1, warned
    assert "no arm_loss/<arm> metric" in warned[0] and "arm_adv: advantage" in warned[0]


def test_final_average_plays_the_step_weighted_mean_of_the_mixtures_played() -> None:
    spec = {"method": "exp3", "arms": list(ARMS), "tau": 20, "total_steps": 100}
    spec["reward"] = "advantage"
    ctl = build_mixture({**spec, "final_average": 0.3, "eta": 5.0, "gamma": 0.0})
    plain = build_mixture({**spec, "eta": 5.0, "gamma": 0.0})
    played: list[Decision] = []
    for version, start in enumerate(range(0, 100, 20), start=1):
        plan = Plan(horizon=start - 1, last_step=max(start - 5, -1))
        d = _accept(ctl, plan, version)
        _accept(plain, plan, version)
        played.append(d)
        # arm a keeps doing best: the bandit's preference keeps moving towards it
        reports = [
            Report(rank=0, step=s, metrics={"arm_adv/a": 1.0, "arm_adv/b": 0.0}, ts=0.0)
            for s in range(start, start + 15)
        ]
        ctl.observe(reports)
        plain.observe(reports)
    assert [("averaged" in d.info) for d in played] == [False, False, False, False, True]
    mixes = [dict(d.mixture or {}) for d in played]
    steps = [(d.until_step or 0) - d.from_step for d in played]
    mean = {a: sum(w * m[a] for w, m in zip(steps[:4], mixes, strict=False)) / 80 for a in ARMS}
    assert mixes[-1] == pytest.approx(mean) and sum(mixes[-1].values()) == pytest.approx(1.0)
    # without it the same run ends on its latest, most extreme preference
    assert plain.summary()["weights"]["a"] > mixes[-1]["a"] + 0.05
    restored = build_mixture({**spec, "final_average": 0.3, "eta": 5.0, "gamma": 0.0})
    assert restored.played == {}
    restored.load_state_dict(json.loads(json.dumps(ctl.state_dict())))
    assert restored.played == pytest.approx(ctl.played)


def test_a_superseded_stage_is_taken_back_from_the_average() -> None:
    ctl = build_mixture({"method": "sec", "arms": list(ARMS), "tau": 20, "final_average": 0.5})
    first = _accept(ctl, Plan(horizon=-1, last_step=-1), 1)
    again = first.with_version(2)  # the same stage decided again before it started
    ctl.accept(again)
    assert sum(ctl.played.values()) == pytest.approx(20.0)


def test_final_average_must_be_a_fraction() -> None:
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ConfigError, match="final_average"):
            build_mixture({"method": "exp3s", "arms": list(ARMS), "final_average": bad})
