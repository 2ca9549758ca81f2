"""A :class:`~workers.snapshot.Snapshot` as bytes, to hand it to another process.

The trials of a population job exchange training states through Redis
(:mod:`trials.peer_states`). The bytes are ``torch.save`` output of plain containers,
tensors and numbers only, read back with ``torch.load(weights_only=True)``: loading a
state another process wrote cannot run code. The RNG states are converted to such values
(numpy's key array to a tensor, Python's tuple to a list) and back. Tensors are written
from wherever they live and read onto the CPU; :meth:`Snapshot.restore` copies them to the
model's and optimizer's devices.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np
import torch

from tuner.errors import ConfigError
from workers.snapshot.state import RNGState, Snapshot

FORMAT = 1


def _rng_payload(rng: RNGState) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = rng.numpy
    version, internal, gauss_next = rng.python
    return {
        "torch": rng.torch,
        "cuda": rng.cuda,
        "numpy": [
            str(name),
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "python": [int(version), list(internal), gauss_next],
    }


def _rng_from(payload: dict[str, Any]) -> RNGState:
    rng = RNGState.__new__(RNGState)
    rng.torch = payload["torch"]
    rng.cuda = payload["cuda"]
    name, keys, pos, has_gauss, cached = payload["numpy"]
    rng.numpy = (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached)
    version, internal, gauss_next = payload["python"]
    rng.python = (version, tuple(internal), gauss_next)
    return rng


def to_bytes(snapshot: Snapshot) -> bytes:
    """``snapshot`` as bytes that :func:`from_bytes` reads back, in any process."""
    payload = {
        "format": FORMAT,
        "step": snapshot.step,
        "model": snapshot.model,
        "optimizer": snapshot.optimizer,
        "optimizer_type": snapshot.optimizer_type,
        "scheduler": snapshot.scheduler,
        "sampler": snapshot.sampler,
        "extra": snapshot.extra,
        "rng": _rng_payload(snapshot.rng),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def from_bytes(blob: bytes, where: str) -> Snapshot:
    """The snapshot :func:`to_bytes` wrote, its tensors on the CPU.

    Raises:
        ConfigError: ``blob`` is not such a snapshot, or holds objects other than tensors,
            numbers, strings and containers of them (``where`` names its source).
    """
    try:
        payload = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise ConfigError(
            f"{where}: not a training state tautune can load ({str(e).splitlines()[0]}); "
            "sampler and extra state must be tensors, numbers, strings, lists and dicts"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ConfigError(f"{where}: expected a training state of format {FORMAT}, found {found!r}")
    return Snapshot(
        model=payload["model"],
        optimizer=payload["optimizer"],
        optimizer_type=payload["optimizer_type"],
        scheduler=payload["scheduler"],
        sampler=payload["sampler"],
        rng=_rng_from(payload["rng"]),
        extra=payload["extra"],
        step=payload["step"],
        device=None,
    )
