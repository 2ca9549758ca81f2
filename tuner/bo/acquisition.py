"""Acquisition functions on the negated loss, and their optimization over normalized log-LR."""

from __future__ import annotations

import warnings
from typing import Literal, TypeAlias, get_args

import torch
from botorch.acquisition.acquisition import AcquisitionFunction
from botorch.acquisition.analytic import LogExpectedImprovement, UpperConfidenceBound
from botorch.acquisition.logei import qLogExpectedImprovement
from botorch.acquisition.monte_carlo import qUpperConfidenceBound
from botorch.exceptions.warnings import OptimizationWarning
from botorch.models import SingleTaskGP
from botorch.optim.optimize import optimize_acqf
from botorch.sampling.normal import SobolQMCNormalSampler

from tuner.bo.space import DTYPE

Acquisition: TypeAlias = Literal["logei", "ucb"]
ACQUISITIONS: tuple[str, ...] = get_args(Acquisition)
MC_SAMPLES = 128  # QMC samples of the q-batch acquisitions (k > 1)


def make_acquisition(
    model: SingleTaskGP,
    k: int,
    acquisition: str,
    *,
    kappa: float,
    best_f: torch.Tensor,
    seed: int,
) -> AcquisitionFunction:
    """Analytic for ``k == 1``, quasi-Monte Carlo (q-batch) for ``k > 1``.

    ``"logei"``: (q)LogExpectedImprovement over ``best_f`` (negated loss); ``"ucb"``: (q)UCB
    with ``beta = kappa**2``, i.e. the lower confidence bound ``mean - kappa * std`` of the loss.
    """
    sampler = SobolQMCNormalSampler(torch.Size([MC_SAMPLES]), seed=seed) if k > 1 else None
    if acquisition == "ucb":
        if sampler is None:
            return UpperConfidenceBound(model, beta=kappa**2)
        return qUpperConfidenceBound(model, beta=kappa**2, sampler=sampler)
    if sampler is None:
        return LogExpectedImprovement(model, best_f=best_f)
    return qLogExpectedImprovement(model, best_f=best_f, sampler=sampler)


def maximize(
    acqf: AcquisitionFunction,
    k: int,
    *,
    lo: float,
    hi: float,
    progress: float | None,
    num_restarts: int,
    raw_samples: int,
    seed: int,
) -> torch.Tensor:
    """``k`` normalized log-LRs in ``[lo, hi]`` maximizing ``acqf`` jointly, shape ``k``.

    With ``progress``, the inputs are ``(x, progress)`` and progress is held fixed.
    """
    box = torch.tensor([[lo], [hi]], dtype=DTYPE)  # `2 x d`
    fixed: dict[int, float] | None = None
    if progress is not None:
        box = torch.cat([box, torch.tensor([[progress], [progress]], dtype=DTYPE)], dim=-1)
        fixed = {1: progress}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizationWarning)
        candidates, _ = optimize_acqf(
            acqf,
            bounds=box,
            q=k,
            num_restarts=num_restarts,
            raw_samples=raw_samples,
            fixed_features=fixed,
            options={"maxiter": 100, "seed": seed},
            retry_on_optimization_warning=False,
        )
    return candidates[..., 0].detach()  # `k`
