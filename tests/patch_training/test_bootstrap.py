"""Bootstrap intervals: estimates equal the group metrics, and intervals cover the true value at
about their nominal rate over repeated draws from a known classifier."""

from __future__ import annotations

import numpy as np

from patch_training.evidence import paired_evidence
from patch_training.metrics import group_report

TRUE_ACC = {(0, "a"): 0.80, (0, "b"): 0.60, (1, "a"): 0.70, (1, "b"): 0.75}
SIZES = {(0, "a"): 60, (0, "b"): 40, (1, "a"): 50, (1, "b"): 30}


def draw(rng: np.random.Generator, acc: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of every cell with the cell's size; each prediction right with the cell's accuracy."""
    y, b, right = [], [], []
    for (cls, group), n in SIZES.items():
        y += [cls] * n
        b += [group] * n
        right.append(rng.random(n) < acc[cls, group])
    y_arr = np.array(y)
    pred = np.where(np.concatenate(right), y_arr, 1 - y_arr)
    return y_arr, np.array(b), pred


def true_metric(acc: dict, metric: str) -> float:
    values = np.array(list(acc.values()))
    if metric == "avg_group_acc":
        return 100 * float(values.mean())
    sizes = np.array([SIZES[k] for k in acc])
    return 100 * float((values * sizes).sum() / sizes.sum())


def test_estimates_are_the_group_metrics_of_the_observed_rows() -> None:
    y, b, raw = draw(np.random.default_rng(0), TRUE_ACC)
    _, _, fair = draw(np.random.default_rng(1), TRUE_ACC)
    ev = paired_evidence(y, b, raw, fair, draws=200, confidence=0.95, seed=0)
    for stage, pred in (("raw", raw), ("fair", fair)):
        report = group_report(y, pred, b).as_percent()
        for metric, value in report.items():
            assert getattr(ev, stage)[metric].estimate == round(value, 4), (stage, metric)
    change = ev.change["eo_bias"].estimate
    assert abs(change - (ev.fair["eo_bias"].estimate - ev.raw["eo_bias"].estimate)) < 1e-3
    assert ev.group_rows == {f"y={c},b={g}": n for (c, g), n in SIZES.items()}


def test_intervals_cover_the_true_value_at_about_their_nominal_rate() -> None:
    """A classifier of known per-cell accuracy, drawn 300 times: the 90% intervals of accuracy
    and average-group accuracy, and of the paired change against a second known classifier,
    must each cover the truth in roughly 90% of the draws (binomial spread over 300: ±5%)."""
    better = {k: min(v + 0.1, 0.95) for k, v in TRUE_ACC.items()}
    rng = np.random.default_rng(42)
    hits = {"accuracy": 0, "avg_group_acc": 0, "change": 0}
    trials = 300
    for trial in range(trials):
        y, b, raw = draw(rng, TRUE_ACC)
        _, _, fair = draw(rng, better)
        ev = paired_evidence(y, b, raw, fair, draws=400, confidence=0.90, seed=trial)
        for metric in ("accuracy", "avg_group_acc"):
            iv, truth = ev.raw[metric], true_metric(TRUE_ACC, metric)
            hits[metric] += iv.low <= truth <= iv.high
        truth = true_metric(better, "accuracy") - true_metric(TRUE_ACC, "accuracy")
        iv = ev.change["accuracy"]
        hits["change"] += iv.low <= truth <= iv.high
    for name, hit in hits.items():
        assert 0.84 <= hit / trials <= 0.96, (name, hit / trials)


def test_a_larger_sample_gives_a_narrower_interval() -> None:
    rng = np.random.default_rng(3)
    y, b, pred = draw(rng, TRUE_ACC)
    small = paired_evidence(y, b, pred, pred, draws=500, confidence=0.95, seed=0)
    y4, b4, pred4 = (np.tile(a, 4) for a in (y, b, pred))
    large = paired_evidence(y4, b4, pred4, pred4, draws=500, confidence=0.95, seed=0)
    width = {k: ev.raw["accuracy"].high - ev.raw["accuracy"].low for k, ev in
             (("small", small), ("large", large))}  # fmt: skip
    assert 0.35 < width["large"] / width["small"] < 0.65  # ≈ 1/√4
    assert small.change["accuracy"].low == small.change["accuracy"].high == 0  # paired, equal


def test_evidence_counts_only_classes_that_span_two_groups() -> None:
    y = np.array([0] * 20 + [1] * 20)
    b = np.array(["a"] * 10 + ["b"] * 10 + ["a"] * 20)  # class 1: group a only
    raw = np.where(np.arange(40) % 3 == 0, 1 - y, y)
    ev = paired_evidence(y, b, raw, y, draws=100, confidence=0.9, seed=0)
    assert ev.comparable_classes == 1
    assert ev.raw["eo_bias"].estimate == round(100 * group_report(y, raw, b).eo_bias, 4)
