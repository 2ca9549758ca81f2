"""What a snapshot holds, and taking and restoring it (see :mod:`workers.snapshot`)."""

from __future__ import annotations

import copy
import random
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from tuner.errors import ConfigError


@runtime_checkable
class Stateful(Protocol):
    """Anything with torch's ``state_dict()`` / ``load_state_dict()`` pair."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state_dict: Any, /) -> Any: ...


def _clone(obj: Any, device: torch.device | None) -> Any:
    """A deep copy of ``obj``, tensors cloned (to ``device`` when given) and detached."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        return t.to(device, copy=True) if device is not None else t.clone()
    if isinstance(obj, dict):
        out: dict[Any, Any] = OrderedDict() if isinstance(obj, OrderedDict) else {}
        out.update((k, _clone(v, device)) for k, v in obj.items())
        metadata = getattr(obj, "_metadata", None)  # module versions, for load_state_dict
        if metadata is not None:
            out._metadata = copy.deepcopy(metadata)  # type: ignore[attr-defined]
        return out
    if isinstance(obj, list):
        return [_clone(v, device) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_clone(v, device) for v in obj)
    return copy.deepcopy(obj)


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, Mapping):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _describe(t: torch.Tensor) -> str:
    return f"{'x'.join(map(str, t.shape)) or 'scalar'} {t.dtype}"


def _load_optimizer_in_place(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> bool:
    """Copy ``saved`` (an optimizer state dict) into ``optimizer``'s own state tensors, when
    every parameter's state has the same names, shapes and dtypes; whether it did.

    ``load_state_dict`` builds the whole state anew beside the old one before dropping it:
    on a GPU, a restore then needs as much free memory again as the optimizer's state
    (AdamW's: twice the weights). Copying into the tensors already there needs none.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = saved["state"]
    if sorted(state) != [i for i, p in enumerate(params) if p in optimizer.state]:
        return False
    for i, values in state.items():
        live = optimizer.state[params[i]]
        if live.keys() != values.keys():
            return False
        for name, value in values.items():
            have = live[name]
            if isinstance(value, torch.Tensor) != isinstance(have, torch.Tensor):
                return False
            if isinstance(value, torch.Tensor) and not _same_kind(value, have):
                return False
    with torch.no_grad():
        for i, values in state.items():
            live = optimizer.state[params[i]]
            for name, value in values.items():
                if isinstance(value, torch.Tensor):
                    live[name].copy_(value)
                else:
                    live[name] = _clone(value, None)
    for group, saved_group in zip(optimizer.param_groups, saved["param_groups"], strict=True):
        for name, value in saved_group.items():
            if name == "params":
                continue
            have = group.get(name)
            if isinstance(have, torch.Tensor) and _same_kind(value, have):
                # a tensor LR (a compiled optimizer's) stays that tensor
                with torch.no_grad():
                    have.copy_(value)
            else:
                group[name] = _clone(value, None)
    return True


def _same_kind(value: Any, have: Any) -> bool:
    """Both tensors of one shape and dtype, so ``value`` can be copied into ``have``."""
    return (
        isinstance(value, torch.Tensor)
        and isinstance(have, torch.Tensor)
        and value.shape == have.shape
        and value.dtype == have.dtype
    )


class RNGState:
    """The global random number generators' states: torch CPU and CUDA, numpy, ``random``."""

    __slots__ = ("cuda", "numpy", "python", "torch")

    def __init__(self) -> None:
        self.torch: torch.Tensor = torch.get_rng_state()
        self.cuda: list[torch.Tensor] | None = (
            torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        )
        self.numpy: Any = np.random.get_state()
        self.python: Any = random.getstate()

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor and array payloads (Python's state, ~2.5 KB, not counted)."""
        return _tensor_bytes([self.torch, self.cuda or [], list(self.numpy)])

    def restore(self) -> None:
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            if not torch.cuda.is_available() or torch.cuda.device_count() != len(self.cuda):
                have = torch.cuda.device_count() if torch.cuda.is_available() else 0
                raise ConfigError(
                    f"the snapshot holds CUDA RNG states of {len(self.cuda)} devices, this "
                    f"process sees {have}; restore in a process with the same devices"
                )
            torch.cuda.set_rng_state_all(self.cuda)
        np.random.set_state(self.numpy)
        random.setstate(self.python)


class Snapshot:
    """Deep copies of a training process's state; :mod:`workers.snapshot` says what.

    Build with :meth:`take`; it is never changed afterwards, so one snapshot can be restored
    any number of times.

    Attributes:
        step: The optimizer step it was taken at, when given (a label: nothing checks it
            except :func:`restore_all_ranks`, which checks that all ranks agree).
        model, optimizer, scheduler, sampler: The copied state dicts (``None`` when not
            captured). Treat them as read-only.
        rng: The RNG states.
    """

    def __init__(
        self,
        *,
        model: dict[str, torch.Tensor],
        optimizer: dict[str, Any],
        optimizer_type: str,
        scheduler: dict[str, Any] | None,
        sampler: Any | None,
        rng: RNGState,
        extra: dict[str, Any] | None,
        step: int | None,
        device: torch.device | None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.optimizer_type = optimizer_type
        self.scheduler = scheduler
        self.sampler = sampler
        self.rng = rng
        self._extra = extra
        self.step = step
        self.device = device

    @classmethod
    def take(
        cls,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Stateful | None = None,
        sampler: object | None = None,
        *,
        extra: Mapping[str, Any] | None = None,
        step: int | None = None,
        sampler_state: Mapping[str, Any] | None = None,
        device: torch.device | str | None = None,
    ) -> Snapshot:
        """Copy the state of ``model``, ``optimizer``, ``scheduler``, ``sampler`` and the RNGs.

        Args:
            model: The module being trained (a DDP wrapper is fine: restore into the same).
            optimizer: Its optimizer.
            scheduler: A torch ``LRScheduler`` or anything with ``state_dict()``.
            sampler: A sampler with ``state_dict()``; one without is skipped with a warning
                (its position is then not restored).
            extra: Further state (JSON data or tensors) to keep alongside, deep-copied;
                read it back with :attr:`extra`.
            step: The optimizer step, as a label.
            sampler_state: The sampler state to keep instead of ``sampler.state_dict()``
                (with a prefetching DataLoader: ``sampler.state_dict(after_batch=b)``).
            device: Where the copied tensors live; ``None`` keeps each on its own device.
        """
        dev = torch.device(device) if device is not None else None
        if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
            raise ConfigError(f"step must be an int optimizer step, got {step=!r}")
        sampler_copy: Any | None = None
        if sampler_state is not None:
            sampler_copy = _clone(dict(sampler_state), dev)
        elif sampler is not None:
            if isinstance(sampler, Stateful):
                sampler_copy = _clone(sampler.state_dict(), dev)
            else:
                warnings.warn(
                    f"{type(sampler).__name__} has no state_dict(): the snapshot cannot put "
                    "it back where it was, so batches after a restore may differ",
                    stacklevel=2,
                )
        return cls(
            model=_clone(model.state_dict(), dev),
            optimizer=_clone(optimizer.state_dict(), dev),
            optimizer_type=type(optimizer).__name__,
            scheduler=_clone(scheduler.state_dict(), dev) if scheduler is not None else None,
            sampler=sampler_copy,
            rng=RNGState(),
            extra=_clone(dict(extra), dev) if extra is not None else None,
            step=step,
            device=dev,
        )

    @property
    def extra(self) -> dict[str, Any] | None:
        """A copy of the ``extra`` state given to :meth:`take`."""
        return _clone(self._extra, None) if self._extra is not None else None

    @property
    def nbytes(self) -> int:
        """Bytes held by the snapshot's tensors and arrays (model, optimizer, scheduler,
        sampler, extra, RNG states); Python scalars and strings are not counted."""
        return (
            _tensor_bytes(self.model)
            + _tensor_bytes(self.optimizer)
            + _tensor_bytes(self.scheduler)
            + _tensor_bytes(self.sampler)
            + _tensor_bytes(self._extra)
            + self.rng.nbytes
        )

    def restore(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Stateful | None = None,
        sampler: object | None = None,
    ) -> None:
        """Put the captured state back, in place, and the RNG states with it.

        Pass the objects the training loop holds (the same ones, or ones of the same shape):
        parameters are overwritten in place and the optimizer keeps its parameter objects.
        Nothing is changed unless the model and optimizer match the snapshot.

        Raises:
            ConfigError: the model's state dict has other keys, shapes or dtypes; the
                optimizer is of another type or has other param groups; a scheduler or a
                sampler with ``state_dict()`` is passed that the snapshot did not capture,
                or the other way round.
        """
        self._check(model, optimizer, scheduler, sampler)
        model.load_state_dict(self.model)  # copies into the existing tensors
        if not _load_optimizer_in_place(optimizer, self.optimizer):
            # load_state_dict may keep the tensors it is given (same device and dtype), and
            # the optimizer then updates them in place: a copy keeps the snapshot intact.
            optimizer.load_state_dict(_clone(self.optimizer, None))
        if scheduler is not None and self.scheduler is not None:
            scheduler.load_state_dict(_clone(self.scheduler, None))
        if isinstance(sampler, Stateful) and self.sampler is not None:
            sampler.load_state_dict(_clone(self.sampler, None))
        self.rng.restore()

    def _check(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Stateful | None,
        sampler: object | None,
    ) -> None:
        live = model.state_dict()
        missing = sorted(set(self.model) - set(live))
        unexpected = sorted(set(live) - set(self.model))
        if missing or unexpected:
            raise ConfigError(
                f"the model does not match the snapshot: keys missing from the model "
                f"{missing[:5]}, keys the snapshot lacks {unexpected[:5]}"
            )
        bad = [
            f"{k}: snapshot {_describe(v)}, model {_describe(live[k])}"
            for k, v in self.model.items()
            if isinstance(v, torch.Tensor)
            and (v.shape != live[k].shape or v.dtype != live[k].dtype)
        ]
        if bad:
            raise ConfigError(
                f"the model does not match the snapshot ({len(bad)} tensors differ): "
                + "; ".join(bad[:5])
            )
        if type(optimizer).__name__ != self.optimizer_type:
            raise ConfigError(
                f"the snapshot holds {self.optimizer_type} state, got a "
                f"{type(optimizer).__name__} optimizer"
            )
        saved = [len(g["params"]) for g in self.optimizer["param_groups"]]
        have = [len(g["params"]) for g in optimizer.param_groups]
        if saved != have:
            raise ConfigError(
                f"the optimizer's param groups hold {have} parameters, the snapshot's {saved}"
            )
        if (scheduler is None) != (self.scheduler is None):
            raise ConfigError(
                "pass a scheduler exactly when the snapshot captured one: "
                f"snapshot has {'one' if self.scheduler is not None else 'none'}, got "
                f"{type(scheduler).__name__ if scheduler is not None else 'None'}"
            )
        restorable = isinstance(sampler, Stateful)
        if restorable != (self.sampler is not None):
            raise ConfigError(
                "pass a sampler with state_dict() exactly when the snapshot captured one: "
                f"snapshot has {'one' if self.sampler is not None else 'none'}, got "
                f"{type(sampler).__name__ if sampler is not None else 'None'}"
            )

    def __repr__(self) -> str:
        return (
            f"Snapshot(step={self.step}, tensors={len(self.model)}, nbytes={self.nbytes}, "
            f"device={self.device})"
        )
