"""The digits task: its fixed split, train-only standardisation, batches and a short run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from tuner.errors import ConfigError
from workers.tasks.digits import MIN_STD, DigitsConfig, DigitsTask, shift_images


@pytest.fixture(scope="module")
def task() -> DigitsTask:
    return DigitsTask()


def test_split_is_deterministic_disjoint_and_stratified(task: DigitsTask) -> None:
    again = DigitsTask()
    assert torch.equal(task.train_index, again.train_index)
    assert torch.equal(task.val_index, again.val_index)
    train, val = set(task.train_index.tolist()), set(task.val_index.tolist())
    assert not train & val
    assert train | val == set(range(1797))
    labels = load_digits().target
    for c in range(10):
        in_class = int((labels == c).sum())
        assert abs(int((labels[task.val_index.numpy()] == c).sum()) - 0.25 * in_class) <= 0.5
    other = DigitsTask(DigitsConfig(split_seed=1))
    assert not torch.equal(task.val_index, other.val_index)


def test_features_are_standardised_with_training_statistics(task: DigitsTask) -> None:
    pixels = load_digits().data.astype(np.float32)
    train = pixels[task.train_index.numpy()]
    mean, std = train.mean(0), np.maximum(train.std(0, ddof=1), MIN_STD)
    np.testing.assert_allclose(task.mean.numpy(), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(task.std.numpy(), std, rtol=1e-5)
    assert not np.allclose(mean, pixels.mean(0), atol=1e-3)  # not the whole data set's
    expected_val = (pixels[task.val_index.numpy()] - mean) / std
    np.testing.assert_allclose(task.val_x.numpy(), expected_val, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(task.train_x.mean(0).numpy(), 0.0, atol=1e-5)
    assert torch.equal(task.val_y, torch.from_numpy(load_digits().target[task.val_index.numpy()]))


def test_batches_are_reproducible_from_the_generator_seed(task: DigitsTask) -> None:
    for val in (False, True):
        a = task.batch(torch.Generator().manual_seed(7), val=val)
        b = task.batch(torch.Generator().manual_seed(7), val=val)
        c = task.batch(torch.Generator().manual_seed(8), val=val)
        assert a[0].shape == (32, 64) and a[1].shape == (32,)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert not torch.equal(a[0], c[0])


def test_training_batches_are_shifted_and_validation_ones_are_not(task: DigitsTask) -> None:
    gen = torch.Generator().manual_seed(0)
    x, _ = task.batch(gen)
    rows = [bool((task.train_x == row).all(1).any()) for row in x]
    assert not all(rows)  # some images moved
    x, _ = task.batch(gen, val=True)
    assert all(bool((task.val_x == row).all(1).any()) for row in x)
    plain = DigitsTask(DigitsConfig(max_shift=0))
    x, _ = plain.batch(torch.Generator().manual_seed(0))
    assert all(bool((plain.train_x == row).all(1).any()) for row in x)


def test_shift_images_moves_content_and_fills_with_zeros() -> None:
    img = torch.zeros(1, 8, 8)
    img[0, 3, 4] = 5.0
    seen = set()
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        out = shift_images(img, 1, gen)
        assert out.sum() == 5.0 and out.shape == (1, 8, 8)
        r, c = (int(v) for v in (out[0] == 5.0).nonzero()[0])
        seen.add((r - 3, c - 4))
    assert seen == {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    corner = torch.zeros(1, 8, 8)
    corner[0, 0, 0] = 1.0
    total = sum(float(shift_images(corner, 1, gen).sum()) for _ in range(60))
    assert total < 60  # moved off the image sometimes: nothing wraps around


def _train(
    task: DigitsTask, model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int
) -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss = task.loss(model, *task.batch(gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()


def test_a_short_run_lowers_validation_loss(task: DigitsTask) -> None:
    model = task.model(0)
    before = task.evaluate(model)
    assert before == task.evaluate(model)  # whole validation set: deterministic
    _train(task, model, torch.optim.AdamW(model.parameters(), lr=3e-3), 200)
    after = task.evaluate(model)
    assert before > 2.0 and after < 0.5 * before
    assert model.training
    sampled = task.evaluate(model, batches=5, seed=3)
    assert sampled == task.evaluate(model, batches=5, seed=3)
    assert sampled != after


def test_same_seed_same_model(task: DigitsTask) -> None:
    a, b, c = task.model(3), task.model(3), task.model(4)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert len(list(a.parameters())) == 2 * (DigitsConfig().depth + 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"arch": "rnn"},
        {"hidden": 0},
        {"depth": 0},
        {"batch_size": 0},
        {"val_fraction": 1.0},
        {"max_shift": 8},
    ],
)
def test_bad_config_is_a_config_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="DigitsConfig"):
        DigitsConfig(**kwargs)  # type: ignore[arg-type]


def test_the_cnn_maps_flat_pixels_to_logits_and_learns(task: DigitsTask) -> None:
    cnn_task = DigitsTask(DigitsConfig(arch="cnn", hidden=32))
    model = cnn_task.model(0)
    x, _ = cnn_task.batch(torch.Generator().manual_seed(0))
    assert model(x).shape == (x.shape[0], 10)
    before = cnn_task.evaluate(model)
    _train(cnn_task, model, torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9), 100)
    assert cnn_task.evaluate(model) < 0.5 * before


def test_evaluate_rejects_zero_batches(task: DigitsTask) -> None:
    with pytest.raises(ConfigError, match="batches"):
        task.evaluate(task.model(0), batches=0)
