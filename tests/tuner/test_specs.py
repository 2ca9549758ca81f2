"""Specs from the command line and the Python API: tautune's mixture default in one place."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tuner.api import MixtureSpec
from tuner.controllers.mixture import DEFAULT_MIXTURE, build_mixture
from tuner.errors import ConfigError
from tuner.specs import parse_mixture_spec


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
