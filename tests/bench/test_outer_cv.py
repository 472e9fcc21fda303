"""The outer cross-validation's pooling and paired comparisons, on synthetic folds."""

from __future__ import annotations

import numpy as np
import pytest

from bench.quality.outer_cv import outer_summary, pooled

N, FOLDS = 2000, 4


def folds_of(seed: int, methods: dict[str, float]) -> list[dict]:
    """Records as ``evaluate_outer`` returns them: each method right with its own probability
    (the same rows for every seed's folds, dealt in a shuffled order)."""
    rng = np.random.default_rng(seed)
    y = np.arange(N) % 2
    b = np.where(np.arange(N) % 4 < 2, "a", "b")
    right = {m: rng.random(N) < p for m, p in methods.items()}
    order = rng.permutation(N)
    records = []
    for k in range(FOLDS):
        rows = np.sort(order[k::FOLDS])
        pred = {m: np.where(right[m][rows], y[rows], 1 - y[rows]) for m in methods}
        records.append({"setting": "compas", "seed": seed, "fold": k, "status": "validated",
                        "pooled_rows": N, "test_rows": rows, "y": y[rows], "b": b[rows],
                        "pred": pred})  # fmt: skip
    return records


def test_pooling_puts_every_row_back_in_place_once_per_seed() -> None:
    records = folds_of(0, {"raw": 0.7, "eraser_tuned": 0.7})
    seed = pooled(records)[0]
    assert np.array_equal(seed["y"], np.arange(N) % 2) and seed["folds"] == FOLDS
    with pytest.raises(ValueError, match="exactly once"):
        pooled([*records, records[0]])


def test_a_clearly_better_method_is_better_and_a_coin_flip_is_not_resolved() -> None:
    methods = {"raw": 0.60, "eraser_tuned": 0.80, "linearpost_blind": 0.80}
    records = [r for seed in (0, 1) for r in folds_of(seed, methods)]
    block = outer_summary(records)["compas"]
    assert block["rows"] == N and block["seeds"] == [0, 1]
    vs_raw = block["paired"]["eraser_tuned"]["raw"]["accuracy"]
    assert vs_raw["verdict"] == "better" and vs_raw["low"] > 10 > 0
    assert block["paired"]["eraser_tuned"]["linearpost_blind"]["accuracy"]["verdict"] == (
        "not resolved"
    )
    worse = outer_summary(folds_of(0, {"raw": 0.9, "eraser_tuned": 0.6}))["compas"]
    assert worse["paired"]["eraser_tuned"]["raw"]["avg"]["verdict"] == "worse"
    assert block["methods"]["eraser_tuned"]["accuracy"] == pytest.approx(80, abs=2.5)
