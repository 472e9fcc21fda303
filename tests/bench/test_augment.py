"""The augmented Colored MNIST setting: the digit augmentation, its task and its deployed model."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from bench.quality.augment import AugmentConfig, augment_digits
from bench.quality.datasets import COLOUR_NAMES, cmnist_task, colourise
from bench.quality.deployed import AugmentedTrainConfig, model_key, train_augmented
from bench.quality.protocol import SETTINGS
from tests.bench.test_quality_parts import _fake_mnist


def _digits(n: int = 6) -> np.ndarray:
    """Bars and blocks (bright strokes on black), uint8 [n, 28, 28]."""
    out = np.zeros((n, 28, 28), dtype=np.uint8)
    for i in range(n):
        out[i, 6 + i : 22, 12 - i % 3 : 16] = 255
        out[i, 8:10, 6:22] = 200
    return out


def test_augmentation_keeps_shape_dtype_and_range_and_moves_pixels() -> None:
    gray = _digits()
    moved = augment_digits(gray, AugmentConfig(), torch.Generator().manual_seed(0))
    assert moved.shape == gray.shape and moved.dtype == np.uint8
    assert moved.min() >= 0 and moved.max() <= 255
    for before, after in zip(gray, moved, strict=True):
        assert not np.array_equal(before, after)  # every digit moved ...
        assert after.sum() > 0.5 * before.sum()  # ... and mostly stayed in the frame


def test_augmentation_is_deterministic_under_a_seed() -> None:
    gray = _digits()
    cfg = AugmentConfig()
    first = augment_digits(gray, cfg, torch.Generator().manual_seed(3))
    again = augment_digits(gray, cfg, torch.Generator().manual_seed(3))
    other = augment_digits(gray, cfg, torch.Generator().manual_seed(4))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_no_movement_is_the_identity() -> None:
    gray = _digits()
    still = AugmentConfig(shift_px=0, rotate_deg=0, scale=0, elastic_alpha=0)
    assert np.array_equal(augment_digits(gray, still, torch.Generator().manual_seed(0)), gray)


def test_each_kind_of_movement_moves_pixels_on_its_own() -> None:
    gray = _digits()
    off = {"shift_px": 0.0, "rotate_deg": 0.0, "scale": 0.0, "elastic_alpha": 0.0}
    for kind, amount in (("shift_px", 3.0), ("rotate_deg", 15.0), ("elastic_alpha", 34.0)):
        cfg = AugmentConfig(**(off | {kind: amount}))
        moved = augment_digits(gray, cfg, torch.Generator().manual_seed(1))
        assert not np.array_equal(moved, gray), kind


def test_augmented_task_keeps_the_plain_splits_and_calibrates_on_uniform_colours(
    tmp_path,
) -> None:
    _fake_mnist(tmp_path / "mnist_5k.npz", per_class=60)
    task = SETTINGS["cmnist_aug"].make_task(1, tmp_path)
    plain = cmnist_task(seed=1, data_dir=tmp_path, rho_calib=0.1)
    assert task.dataset == "cmnist_aug" and plain.dataset == "cmnist"
    for part in ("train", "calib", "small_calib", "test"):
        mine, theirs = getattr(task, part), getattr(plain, part)
        assert np.array_equal(mine.X, theirs.X) and np.array_equal(mine.b, theirs.b), part
    n_train = len(task.train)
    assert n_train + len(task.calib) == 10 * 60 * 4 // 5
    assert abs(n_train / (n_train + len(task.calib)) - 5 / 6) < 0.01
    assert len(task.test) == 10 * 10 * 60 // 5
    # The grey digits behind the training images, to be augmented and coloured afresh.
    gray = task.notes["train_gray"]
    colours = np.array([COLOUR_NAMES.index(b) for b in task.train.b])
    assert np.array_equal(colourise(gray, colours), task.train.X)
    assert np.mean(colours == task.train.y) > 0.9  # training colours follow ρ = 0.99
    calib_colours = np.array([COLOUR_NAMES.index(b) for b in task.calib.b])
    assert np.mean(calib_colours == task.calib.y) < 0.4  # calibration: uniform (ρ = 0.1)
    assert task.notes["rho_train"] == 0.99 and task.notes["rho_calib"] == 0.1


def test_augmented_training_is_seeded_and_has_its_own_cache_key(tmp_path) -> None:
    _fake_mnist(tmp_path / "mnist_5k.npz", per_class=6)
    task = SETTINGS["cmnist_aug"].make_task(0, tmp_path)
    plain = cmnist_task(seed=0, data_dir=tmp_path, rho_calib=0.1)
    assert model_key(task, "vanilla", 0) != model_key(plain, "vanilla", 0)
    cfg = dataclasses.replace(AugmentedTrainConfig(), epochs=2)
    x = torch.as_tensor(task.test.X[:20])
    nets = [train_augmented(task, v, 0, cfg) for v in ("vanilla", "vanilla", "unfair")]
    with torch.no_grad():
        first, again, unfair = (net(x) for net in nets)
    assert first.shape == (20, 10) and unfair.shape == (20, 10)
    assert torch.equal(first, again)
