"""The quality benchmark's parts: splits, colouring, peers, metrics, aggregation, uploads."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from bench.quality.client import calibration_file
from bench.quality.datasets import (
    PALETTE,
    SMALL_CALIBRATION,
    Table,
    biased_colours,
    cmnist_task,
    colourise,
    compas_task,
)
from bench.quality.metrics import eo_noise_floor, row_metrics
from bench.quality.peers import threshold_optimizer
from bench.quality.results import aggregate, row_key, targets
from blackbox.data import load_compas, with_race_feature
from service.calibration.intake import check_upload
from service.jobs.spec import TrainingJobSpec
from service.settings import ModelConfig, TrainingSettings


def _rows(table) -> Counter:
    """Rows as a multiset (COMPAS has people with identical features)."""
    return Counter(
        x.tobytes() + str((y, b)).encode()
        for x, y, b in zip(table.X, table.y, table.b, strict=True)
    )


def test_compas_task_partitions_the_data_five_sixths_to_the_model() -> None:
    task = compas_task(seed=1)
    full = load_compas()
    everything = _rows(task.train) + _rows(task.calib) + _rows(task.test)
    assert sum(everything.values()) == len(full) == 5278
    assert everything == _rows(Table(with_race_feature(full).X, full.y, full.race.astype(str)))
    share = len(task.train) / (len(task.train) + len(task.calib))
    assert share == pytest.approx(5 / 6, abs=0.01)
    assert len(task.test) == pytest.approx(0.2 * 5278, abs=5)
    # The test split is fixed; the seed only moves rows between the model and calibration.
    assert _rows(compas_task(seed=2).test) == _rows(task.test)


def test_small_calibration_keeps_every_target_and_bias_cell() -> None:
    task = compas_task(seed=0)
    small = task.small_calib
    assert abs(len(small) - SMALL_CALIBRATION) <= 4
    cells = {(y, b) for y, b in zip(task.calib.y, task.calib.b, strict=True)}
    assert {(y, b) for y, b in zip(small.y, small.b, strict=True)} == cells
    assert not _rows(small) - _rows(task.calib)


def _fake_mnist(path, per_class: int = 20) -> None:
    """Tiny synthetic digits in the vendored mnist_5k.npz layout: uint8 images and labels."""
    rng = np.random.default_rng(0)
    n = 10 * per_class
    images = (rng.random((n, 28, 28)) < 0.2) * rng.integers(1, 256, (n, 28, 28))
    labels = np.repeat(np.arange(10), per_class)
    np.savez_compressed(path, images=images.astype(np.uint8), labels=labels.astype(np.uint8))


def test_cmnist_test_split_shows_every_digit_in_every_colour(tmp_path) -> None:
    _fake_mnist(tmp_path / "mnist_5k.npz")
    task = cmnist_task(seed=0, data_dir=tmp_path)
    n_digits = 10 * 20 // 5  # the fixed 20% test part
    assert len(task.test) == 10 * n_digits and task.test.X.shape[1:] == (3, 28, 28)
    first, second = task.test.X[:n_digits], task.test.X[n_digits : 2 * n_digits]
    assert not np.array_equal(first, second)  # another colour ...
    strokes = first.min(axis=1) == 255  # ... but the same white strokes
    assert np.array_equal(strokes, second.min(axis=1) == 255)
    counts = {(y, b): 0 for y in range(10) for b in task.bias_values}
    for y, b in zip(task.test.y, task.test.b, strict=True):
        counts[(int(y), str(b))] += 1
    assert set(counts.values()) == {n_digits // 10}


def test_colourise_paints_the_background_and_keeps_white_strokes() -> None:
    gray = np.zeros((2, 28, 28), dtype=np.uint8)
    gray[:, 10, 10] = 255
    img = colourise(gray, np.array([0, 3]))
    assert img.min() >= 0 and img.max() <= 255
    assert np.array_equal(img[1, :, 0, 0], PALETTE[3])
    assert np.array_equal(img[0, :, 10, 10], [255, 255, 255])


def test_biased_colours_match_the_class_with_probability_rho() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 2000)
    for rho in (0.99, 0.5):
        colours = biased_colours(y, rho, rng)
        assert np.mean(colours == y) == pytest.approx(rho, abs=0.02)
    uniform = biased_colours(y, 0.1, rng)
    assert np.bincount(uniform[y == 3], minlength=10) / 2000 == pytest.approx(
        np.full(10, 0.1), abs=0.025
    )


def test_row_metrics_agree_with_hand_counts_and_skip_fairlearn_for_multiclass() -> None:
    y = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    b = np.array(["a", "a", "a", "a", "b", "b", "b", "b"])
    pred = np.array([0, 0, 1, 0, 0, 1, 1, 1])
    m = row_metrics(y, pred, b)
    # groups: (0,a)=100, (1,a)=50, (0,b)=50, (1,b)=100
    assert (m["avg"], m["worst"], m["eo"]) == (75.0, 50.0, 50.0)
    assert m["eod_fairlearn"] == pytest.approx(50.0)  # TPR 0.5 vs 1, FPR 0 vs 0.5
    assert m["dpd_fairlearn"] == pytest.approx(50.0)  # positive rate 0.25 vs 0.75
    multi = row_metrics(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 1]), np.array(["a", "b"] * 2))
    assert multi["eod_fairlearn"] is None and multi["dpd_fairlearn"] is None


def test_eo_noise_floor_shrinks_with_the_test_split() -> None:
    rng = np.random.default_rng(0)

    def floor(n: int) -> float:
        y = np.tile([0, 1], n)
        b = np.repeat(["a", "b"], n)
        pred = np.where(rng.random(2 * n) < 0.7, y, 1 - y)  # the same accuracy in both groups
        return eo_noise_floor(y, pred, b)

    small, large = floor(200), floor(20_000)
    assert 4.0 < small < 10.0  # ≈ sqrt(2/π)·sqrt(0.21·(2/100)) ≈ 5.2 points
    assert large < small / 5


def test_threshold_optimizer_equalises_odds_of_a_biased_scorer() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    b = np.where(rng.random(n) < 0.5, "u", "p")
    y = (rng.random(n) < 0.5).astype(int)
    score = 0.35 * y + 0.3 * (b == "p") + rng.random(n) * 0.5  # group p is favoured
    probs = np.stack([1 - score / score.max(), score / score.max()], axis=1)
    raw = row_metrics(y[n // 2 :], probs[n // 2 :].argmax(axis=1), b[n // 2 :])
    pred = threshold_optimizer(
        probs[: n // 2], y[: n // 2], b[: n // 2], probs[n // 2 :], b[n // 2 :], seed=0
    )
    fair = row_metrics(y[n // 2 :], pred, b[n // 2 :])
    assert raw["eod_fairlearn"] > 40 and fair["eod_fairlearn"] < 10


def _run(seed: int, calibration: str, status: str = "validated", eo: float = 10.0) -> dict:
    def row(eo_value: float) -> dict:
        fairlearn = {"eod_fairlearn": 5.0, "dpd_fairlearn": 4.0}
        return {"avg": 60.0 + seed, "worst": 50.0, "eo": eo_value, "accuracy": 61.0,
                **fairlearn, "groups": {"y=0,b=a": 50.0}}  # fmt: skip

    return {
        "setting": "compas", "variant": "vanilla", "calibration": calibration, "seed": seed,
        "alpha": 1.0 + seed / 8, "status": status, "calibration_rows": 700,
        "rows": {"raw": row(20.0), "eraser": row(eo), "eraser_tuned": row(eo)},
    }  # fmt: skip


def test_aggregate_gives_mean_and_sample_std_over_seeds_and_counts_rejections() -> None:
    runs = [_run(0, "full", eo=2.0), _run(1, "full", eo=4.0), _run(2, "full", "rejected", 3.0)]
    runs += [_run(0, "small")]
    summary = aggregate(runs)["compas"]
    tuned = summary["vanilla.eraser_tuned"]
    assert (tuned["n"], tuned["eo"], tuned["eo_std"]) == (3, 3.0, 1.0)
    assert tuned["avg"] == 61.0 and tuned["alpha"] == [1.0, 1.125, 1.25]
    assert tuned["rejected_by_gate"] == 1
    assert "vanilla.small.raw" not in summary  # the same deployed model as the full run's
    assert summary["vanilla.small.eraser"]["n"] == 1
    assert row_key("unfair", "small", "fairlearn_to") == "unfair.small.fairlearn_to"
    checks = targets(aggregate(runs))["compas"]
    assert checks["eo <= 3.0"] == {"value": 3.0, "met": True}
    assert checks["worst >= 55"]["met"] is False


def test_calibration_files_pass_the_gateways_upload_validation(tmp_path) -> None:
    task = compas_task(seed=0)
    model = ModelConfig(
        name="compas",
        classes=task.classes,
        input={"shape": list(task.input_shape), "features": task.feature_names},
        upstream={"url": "http://127.0.0.1:1/v2/models/compas/infer", "input_name": "x"},
    )
    spec = TrainingJobSpec(model="compas", target=task.target_name, bias=[task.bias_name])
    name, data = calibration_file(task, task.small_calib)
    _, meta = check_upload(data, name, model, spec, TrainingSettings())
    assert meta.rows == len(task.small_calib)

    _fake_mnist(tmp_path / "mnist_5k.npz")
    images = cmnist_task(seed=0, data_dir=tmp_path)
    model = ModelConfig(
        name="cmnist",
        classes=images.classes,
        input={"shape": list(images.input_shape)},
        upstream={"url": "http://127.0.0.1:1/v2/models/cmnist/infer", "input_name": "x"},
    )
    spec = TrainingJobSpec(model="cmnist", target=images.target_name, bias=[images.bias_name])
    name, data = calibration_file(images, images.calib)
    _, meta = check_upload(data, name, model, spec, TrainingSettings())
    assert name.endswith(".npz") and meta.rows == len(images.calib)
