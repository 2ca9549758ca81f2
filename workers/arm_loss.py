"""Per-arm losses from the forward pass already made, and how reports name them.

A report carries flat metrics: ``arm_loss/<arm>`` (mean per-sample loss of the arm's items
in the batch), ``arm_count/<arm>`` (how many items it had) and ``mixture_version`` (the
version the batch was drawn under, which may be older than the decision at the report's
step when the DataLoader prefetched the batch)::

    arm_loss, arm_count = split_loss_by_arm(per_sample, batch.arms, sampler.arm_names)
    agent.report(step, loss=per_sample.mean().item(),
                 **arm_metrics(arm_loss, arm_count, batch.version))

Other per-arm signals (``arm_adv/<arm>``, ``arm_success/<arm>``) go the same way through
``arm_metrics(..., arm_adv=...)``. The mixture controllers read these names back
(``tuner.controllers.mixture.signals``); an arm the batch did not draw is absent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from tuner.errors import ConfigError

ARM_LOSS = "arm_loss"
ARM_COUNT = "arm_count"
MIXTURE_VERSION = "mixture_version"


def split_loss_by_arm(
    per_sample_loss: torch.Tensor,
    arms: torch.Tensor | Sequence[int],
    arm_names: Sequence[str],
) -> tuple[dict[str, float], dict[str, int]]:
    """Mean loss and item count per arm of one batch, without another forward pass.

    Args:
        per_sample_loss: ``batch`` tensor, e.g. ``F.cross_entropy(..., reduction="none")``
            (reduce token dimensions first, with the padding mask). Detached here.
        arms: ``batch`` arm ids (a :class:`~workers.mixture.MixtureBatch`'s ``.arms``).
        arm_names: Name of each arm id (the sampler's ``arm_names``).

    Returns:
        ``(arm_loss, arm_count)`` for the arms present in the batch (an arm it did not
        draw is absent from both). One device-to-host copy.

    Raises:
        ConfigError: shapes differ, or an arm id is outside ``[0, len(arm_names))``.
    """
    loss = per_sample_loss.detach()
    ids = torch.as_tensor(arms, dtype=torch.long).cpu()
    if loss.dim() != 1 or ids.shape != loss.shape:
        raise ConfigError(
            "per_sample_loss and arms must both have shape `batch`, got "
            f"per_sample_loss {tuple(loss.shape)} and arms {tuple(ids.shape)}"
        )
    n = len(arm_names)
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n):
        raise ConfigError(
            f"arm ids must lie in [0, {n}) for arms {list(arm_names)}, got "
            f"{int(ids.min())}..{int(ids.max())}"
        )
    sums = torch.zeros(n, dtype=torch.float32, device=loss.device)
    sums.index_add_(0, ids.to(loss.device), loss.to(torch.float32))
    sum_list: list[float] = sums.tolist()
    counts: list[int] = torch.bincount(ids, minlength=n).tolist()
    present = [(i, name) for i, name in enumerate(arm_names) if counts[i]]
    arm_loss = {name: sum_list[i] / counts[i] for i, name in present}
    arm_count = {name: counts[i] for i, name in present}
    return arm_loss, arm_count


def arm_metrics(
    arm_loss: Mapping[str, float],
    arm_count: Mapping[str, int],
    version: int,
    **signals: Mapping[str, float],
) -> dict[str, float]:
    """The flat metrics to splat into ``agent.report``: ``arm_loss/<arm>``,
    ``arm_count/<arm>``, ``<signal>/<arm>`` for each other per-arm signal (e.g.
    ``arm_adv={arm: mean |advantage|}``) and ``mixture_version``."""
    out: dict[str, float] = {}
    groups = {ARM_LOSS: arm_loss, ARM_COUNT: arm_count, **signals}
    for signal, values in groups.items():
        for name, value in values.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"arm names must be non-empty strings, got {name!r}")
            out[f"{signal}/{name}"] = float(value)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ConfigError(f"mixture version must be an int >= 0, got {version=}")
    out[MIXTURE_VERSION] = float(version)
    return out
