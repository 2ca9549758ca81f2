"""Specs from the command line and the Python API: tautune's mixture default in one place,
and settings of the wrong type named as such."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tuner.api import MixtureSpec
from tuner.controllers.mixture import DEFAULT_MIXTURE, build_mixture
from tuner.errors import ConfigError
from tuner.specs import (
    build_controller,
    build_population_controller,
    parse_lr_spec,
    parse_mixture_spec,
)


def test_a_mixture_spec_without_a_method_gets_the_default() -> None:
    spec = parse_mixture_spec("arms=code/prose,tau=50")
    assert spec == {**DEFAULT_MIXTURE, "arms": ["code", "prose"], "tau": 50}
    ctl = build_mixture(spec)
    assert ctl.algorithm == "exp3s" and ctl.config.reward == "absolute_progress"


def test_a_named_method_keeps_its_own_reward() -> None:
    spec = parse_mixture_spec("method=odm,arms=code/prose")
    assert "reward" not in spec and build_mixture(spec).config.reward == "loss"
    assert build_mixture(parse_mixture_spec("method=exp3s,arms=a/b")).config.reward == (
        "learning_progress"
    )


def test_the_python_api_has_the_same_default() -> None:
    spec = MixtureSpec(arms=("code", "prose")).to_spec()
    assert {k: spec[k] for k in DEFAULT_MIXTURE} == DEFAULT_MIXTURE


def test_a_bad_reward_is_refused_with_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown reward 'progress'.*absolute_progress"):
        parse_mixture_spec("arms=a/b,reward=progress")


def test_checking_a_spec_loads_neither_torch_nor_botorch() -> None:
    # A job driver checks the spec after ray.init(); torch loaded then can fail to find
    # room for its thread-local storage ("Intel oneMKL FATAL ERROR"), so checking must not
    # load it. A fresh interpreter, since this one has torch already.
    code = (
        "import sys\n"
        "from tuner.specs import check_spec, parse_lr_spec\n"
        "for m in ('auto', 'explore', 'stagewise'):\n"
        "    check_spec({'method': m, 'init_lr': 0.01, 'total_steps': 1000})\n"
        "parse_lr_spec('init_lr=1e-3,tau=100,total_steps=5000')\n"
        "check_spec({'method': 'composite', 'lr': {'init_lr': 0.1},"
        " 'mixture': {'method': 'exp3s', 'arms': ['a', 'b']}})\n"
        "print(sorted(m for m in ('torch', 'botorch', 'gpytorch') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("init_lr=abc", "LR method 'auto', as explore: init_lr must be a number, got 'abc'"),
        ("method=stagewise,init_lr=1e-3,tau=50.5", "tau must be a whole number, got 50.5"),
        (
            "method=explore,init_lr=1e-3,total_steps=abc",
            "total_steps must be a whole number (or left unset), got 'abc'",
        ),
        ("method=explore,init_lr=1e-3,shape=3", "shape must be a string, got 3"),
        ("method=autolrs,lr_min=1e-4,lr_max=x", "lr_max must be a number, got 'x'"),
        ('{"init_lr": true}', "init_lr must be a number, got True"),
    ],
)
def test_a_setting_of_the_wrong_type_is_named_with_its_value(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_lr_spec(text)
    assert message in str(caught.value)


def test_a_whole_float_counts_as_an_int_and_an_int_as_a_float() -> None:
    # a command line writes total_steps=1e4; JSON may write init_lr as 1
    spec = parse_lr_spec("method=explore,init_lr=1,total_steps=1e4")
    controller = build_controller(spec)
    config = controller.config  # type: ignore[attr-defined]
    assert config.total_steps == 10_000 and type(config.total_steps) is int
    assert type(config.init_lr) is float
    with pytest.raises(ConfigError, match="mixture method 'exp3s': tau must be a whole number"):
        parse_mixture_spec("arms=a/b,tau=x")
    with pytest.raises(ConfigError, match="population: init_lr must be a number, got 'x'"):
        build_population_controller({"init_lr": "x"}, 3)


def test_lr_spec_carries_the_metric_the_budget_and_any_setting_by_name() -> None:
    from tuner.api import LRSpec

    spec = LRSpec(
        init_lr=1e-3,
        total_steps=1000,
        metric="val_loss",
        explore_budget=0.05,
        settings={"tie_t": 1.5, "prune_t": 0.0},
    ).to_spec()
    assert spec["metric"] == "val_loss" and spec["explore_budget"] == 0.05
    assert spec["tie_t"] == 1.5 and spec["prune_t"] == 0.0
    assert "settings" not in spec
    # a setting the method does not know is named, not dropped
    with pytest.raises(ConfigError, match="tie_tt"):
        LRSpec(init_lr=1e-3, settings={"tie_tt": 1.5}).to_spec()
    # the named fields a method does not know are left out of its spec, as tau for explore
    assert (
        "explore_budget"
        not in LRSpec(init_lr=1e-3, method="stagewise", explore_budget=0.05).to_spec()
    )
