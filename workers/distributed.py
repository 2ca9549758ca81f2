"""Data-parallel setup inside a worker that ``tuner.tune`` launched.

``tune`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` and
initialises the default process group (gloo on CPU, nccl on GPU) before calling the user's
``train_fn``; these helpers read that setup so the same code runs under ``torchrun``.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return (
        dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))
    )


def device() -> torch.device:
    """This worker's device: its GPU when it has one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def prepare_model(model: torch.nn.Module) -> torch.nn.Module:
    """Move ``model`` to this worker's device and wrap it in DDP when there are several."""
    model = model.to(device())
    if dist.is_initialized() and dist.get_world_size() > 1:
        ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model
