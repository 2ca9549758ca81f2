"""LR and mixture controllers on one stage grid (pure, no Redis or Ray)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tuner.controllers.base import Plan
from tuner.controllers.composite import Composite
from tuner.errors import ConfigError
from tuner.records import Decision, Report
from tuner.specs import build_controller

ARMS = ["a", "b", "c"]


def _spec(total: int = 600) -> dict[str, object]:
    return {
        "method": "composite",
        "lr": {"method": "stagewise", "init_lr": 0.01, "tau": 40, "total_steps": total},
        "mixture": {"method": "ducb", "arms": ARMS, "tau": 40, "total_steps": total},
    }


def _drive(
    ctl: Composite, steps: int, split_at: int | None = None, proposed_at: list[int] | None = None
) -> tuple[Composite, list[Decision]]:
    rng = np.random.default_rng(0)
    decisions: list[Decision] = []
    buffer: list[Report] = []
    for step in range(steps):
        if step == split_at:
            state = json.loads(json.dumps(ctl.state_dict()))
            ctl = build_controller(_spec(steps))  # type: ignore[assignment]
            ctl.load_state_dict(state)
        d = next((d for d in reversed(decisions) if d.covers(step)), None)
        version = d.version if d is not None else 0
        # Arm "b" is the one whose loss falls fastest; the LR barely matters here.
        metrics = {
            "loss": 2.0 - step / steps + 0.01 * rng.standard_normal(),
            "mixture_version": float(version),
        }
        for i, arm in enumerate(ARMS):
            metrics[f"arm_loss/{arm}"] = 2.0 - (1 + (arm == "b")) * step / steps + 0.05 * i
            metrics[f"arm_count/{arm}"] = 10.0
        buffer.append(Report(rank=0, step=step, metrics=metrics))
        if len(buffer) == 4:
            ctl.observe(buffer)
            buffer = []
        proposal = ctl.propose(Plan(horizon=step, last_step=step, next_stage=len(decisions)))
        if proposal is not None:
            if proposed_at is not None:
                proposed_at.append(step)
            stored = proposal.with_version(len(decisions) + 1)
            ctl.accept(stored)
            decisions.append(stored)
    return ctl, decisions


def test_every_stage_carries_both_an_lr_and_a_mixture() -> None:
    ctl, decisions = _drive(build_controller(_spec()), 600)  # type: ignore[arg-type]
    assert len(decisions) >= 10
    assert [d.from_step for d in decisions[1:]] == [d.until_step for d in decisions[:-1]]
    for d in decisions:
        assert d.lr is not None and d.mixture is not None
        assert math.isclose(sum(d.mixture.values()), 1.0)
    assert [d.stage for d in decisions] == list(range(len(decisions)))
    assert decisions[-1].until_step == 600 and ctl.done
    # The mixture learned that arm b pays: by the end it has the largest weight.
    last = decisions[-1].mixture
    assert last is not None and max(last, key=lambda a: last[a]) == "b"


def test_by_decide_at_every_part_due_before_the_boundary_has_proposed() -> None:
    spec = _spec()
    spec["mixture"] = {**spec["mixture"], "tau": 60}  # type: ignore[dict-item]
    proposed_at: list[int] = []
    _, decisions = _drive(build_controller(spec), 600, proposed_at=proposed_at)  # type: ignore[arg-type]
    assert len({d.until_step for d in decisions}) > 10  # the two grids cut each other
    checked = 0
    for d in decisions:
        assert d.until_step is not None
        during = [s for s in proposed_at if d.from_step <= s < d.until_step - 1]
        if d.decide_at is None:  # nothing is proposed before the boundary
            assert not during, d
        else:  # the workers send reports through decide_at: that is enough for all of them
            assert during and max(during) == d.decide_at, d
            checked += 1
    assert checked >= 10
    assert decisions[-1].decide_at is None  # nothing after the last stage


def test_the_anneal_stays_linear_across_mixture_stages() -> None:
    _, decisions = _drive(build_controller(_spec()), 600)  # type: ignore[arg-type]
    anneal = [
        d
        for d in decisions
        if "lr" in d.info["parts"] and d.info["parts"]["lr"]["info"].get("phase") == "anneal"
    ]
    assert len(anneal) == 1
    lr_part = anneal[0].info["parts"]["lr"]
    line = Decision(
        stage=0,
        kind="commit",
        from_step=lr_part["from_step"],
        until_step=lr_part["until_step"],
        lr=lr_part["lr"],
        lr_end=lr_part["lr_end"],
    )
    inside = [d for d in decisions if d.from_step >= line.from_step]
    assert len(inside) > 1  # the mixture kept deciding during the anneal
    for d in inside:
        for step in (d.from_step, (d.until_step or 600) - 1):
            assert math.isclose(d.lr_at(step) or 0.0, line.lr_at(step) or 0.0, abs_tol=1e-12)


def test_resume_from_json_state_gives_the_same_decisions() -> None:
    _, whole = _drive(build_controller(_spec()), 600)  # type: ignore[arg-type]
    _, split = _drive(build_controller(_spec()), 600, split_at=333)  # type: ignore[arg-type]
    key = [(d.from_step, d.until_step, d.lr, d.lr_end, dict(d.mixture or {})) for d in whole]
    assert key == [
        (d.from_step, d.until_step, d.lr, d.lr_end, dict(d.mixture or {})) for d in split
    ]


def test_bad_composite_specs_say_what_is_wrong() -> None:
    with pytest.raises(ConfigError, match="exactly 'lr' and 'mixture'"):
        build_controller({"method": "composite", "lr": _spec()["lr"]})
    with pytest.raises(ConfigError, match="LR method under 'lr'"):
        build_controller(
            {"method": "composite", "lr": _spec()["mixture"], "mixture": _spec()["lr"]}
        )
    ctl = build_controller(_spec())
    with pytest.raises(ConfigError, match="not a Composite state"):
        ctl.load_state_dict({"parts": {}})
