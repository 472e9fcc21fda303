"""The held-out split keeps every (target, bias) cell on both sides."""

from __future__ import annotations

import numpy as np
import pytest

from patch_training.folds import cross_fit_folds, make_folds, plan_rows, split_holdout


def test_every_cell_is_split_in_proportion_and_deterministically() -> None:
    y = np.repeat([0, 1, 0, 1], [40, 40, 20, 8])
    b = np.repeat(["a", "a", "b", "b"], [40, 40, 20, 8])
    h = split_holdout(y, b, 0.25, seed=3)
    assert len(np.intersect1d(h.fit, h.val)) == 0 and len(h.fit) + len(h.val) == len(y)
    for yy, bb, n in ((0, "a", 40), (1, "a", 40), (0, "b", 20), (1, "b", 8)):
        cell = np.flatnonzero((y == yy) & (b == bb))
        assert len(np.intersect1d(h.val, cell)) == round(n * 0.25)
    again = split_holdout(y, b, 0.25, seed=3)
    assert np.array_equal(h.val, again.val)


def test_a_single_row_cell_stays_on_the_training_side() -> None:
    y, b = np.array([0, 0, 1, 1, 1]), np.array(["a", "a", "a", "a", "b"])
    h = split_holdout(y, b, 0.5, seed=0)
    assert 4 in h.fit


def test_fraction_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match="fraction"):
        split_holdout(np.array([0, 1]), np.array(["a", "b"]), 1.0, seed=0)


def test_cross_fit_folds_judge_every_row_once_and_spread_every_cell() -> None:
    y = np.repeat([0, 1, 0, 1], [40, 40, 20, 3])
    b = np.repeat(["a", "a", "b", "b"], [40, 40, 20, 3])
    folds = cross_fit_folds(y, b, 4, seed=1)
    judged = np.concatenate([f.val for f in folds])
    assert sorted(judged) == list(range(len(y)))
    for fold in folds:
        assert len(np.intersect1d(fold.fit, fold.val)) == 0
        assert len(fold.fit) + len(fold.val) == len(y)
        for cell in (np.flatnonzero((y == 0) & (b == "a")), np.flatnonzero((y == 0) & (b == "b"))):
            assert len(np.intersect1d(fold.val, cell)) == len(cell) // 4
    assert [list(f.val) for f in cross_fit_folds(y, b, 4, seed=1)] == [list(f.val) for f in folds]


def test_make_folds_is_one_held_out_part_for_one_fold_and_refuses_too_few_rows() -> None:
    y, b = np.repeat([0, 1], 20), np.tile(["a", "b"], 20)
    (single,) = make_folds(y, b, 1, 0.25, seed=0)
    assert len(single.val) == 8
    with pytest.raises(ValueError, match="folds"):
        make_folds(y[:3], b[:3], 4, 0.25, seed=0)


def test_verdict_rows_are_set_aside_from_every_cell_and_the_folds_never_touch_them() -> None:
    rng = np.random.default_rng(5)
    y, b = rng.integers(0, 2, 400), rng.choice(["a", "b", "c"], 400)
    plan = plan_rows(y, b, verdict_fraction=0.3, folds=4, holdout_fraction=0.25, seed=1)
    assert np.intersect1d(plan.tuning, plan.verdict).size == 0
    assert np.array_equal(np.sort(np.concatenate([plan.tuning, plan.verdict])), np.arange(400))
    for cls in (0, 1):
        for group in ("a", "b", "c"):
            cell = np.flatnonzero((y == cls) & (b == group))
            share = np.isin(cell, plan.verdict).mean()
            assert abs(share - 0.3) < 0.05, (cls, group)
    judged = np.concatenate([fold.val for fold in plan.folds])
    assert np.array_equal(np.sort(judged), np.arange(len(plan.tuning)))  # indices into tuning
