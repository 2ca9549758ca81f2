"""The byte transformer task: next-byte targets, causality, seeds and a short run."""

from __future__ import annotations

import pytest
import torch

from tuner.errors import ConfigError
from workers.tasks.bytegpt import ByteGPTConfig, ByteGPTTask


@pytest.fixture(scope="module")
def task() -> ByteGPTTask:
    return ByteGPTTask(ByteGPTConfig(max_bytes=200_000))


def test_targets_are_the_windows_shifted_by_one_byte(task: ByteGPTTask) -> None:
    x, y = task.batch(torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (32, 32)
    assert torch.equal(x[:, 1:], y[:, :-1])
    again = task.batch(torch.Generator().manual_seed(0))
    assert torch.equal(x, again[0]) and torch.equal(y, again[1])
    vx, _ = task.batch(torch.Generator().manual_seed(0), val=True)
    assert not torch.equal(x, vx)  # validation windows come from the held-back tail


def test_the_model_is_causal(task: ByteGPTTask) -> None:
    model = task.model(0).eval()
    x, _ = task.batch(torch.Generator().manual_seed(1))
    later = x.clone()
    later[:, 20:] = (later[:, 20:] + 1) % 256
    with torch.no_grad():
        a, b = model(x), model(later)
    assert a.shape == (32, 32, 256)
    torch.testing.assert_close(a[:, :20], b[:, :20])  # earlier positions never see later bytes
    assert not torch.allclose(a[:, 20:], b[:, 20:])


def test_same_seed_same_model(task: ByteGPTTask) -> None:
    a, b, c = task.model(3), task.model(3), task.model(4)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_a_short_run_lowers_validation_loss(task: ByteGPTTask) -> None:
    torch.manual_seed(0)
    model = task.model(0)
    before = task.evaluate(model, batches=10)
    assert before == task.evaluate(model, batches=10)  # fixed validation batches
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        loss = task.loss(model, *task.batch(gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    after = task.evaluate(model, batches=10)
    assert before > 5.0 and after < 0.6 * before
    assert model.training


@pytest.mark.parametrize(
    "kwargs", [{"dim": 0}, {"dim": 30, "heads": 4}, {"layers": 0}, {"val_fraction": 0.0}]
)
def test_bad_config_is_a_config_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="ByteGPTConfig"):
        ByteGPTConfig(**kwargs)  # type: ignore[arg-type]


def test_evaluate_rejects_zero_batches(task: ByteGPTTask) -> None:
    with pytest.raises(ConfigError, match="batches"):
        task.evaluate(task.model(0), batches=0)
