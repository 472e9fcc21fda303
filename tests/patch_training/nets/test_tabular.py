"""TabularPreprocess: column roles, in-graph standardisation and one-hot encoding."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from patch_training.nets import TabularPreprocess  # noqa: E402

# Columns: continuous floats, 3-level integer (categorical), binary flag (continuous),
# 6-level integer (continuous when max_categories=5), constant.
X_FIT = np.array(
    [
        [0.5, 0, 0, 10, 7],
        [1.5, 1, 1, 11, 7],
        [2.5, 2, 0, 12, 7],
        [3.5, 1, 1, 13, 7],
        [4.5, 0, 0, 14, 7],
        [5.5, 2, 1, 15, 7],
    ],
    dtype=np.float32,
)


def _encode(pre: TabularPreprocess, rows: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return pre(torch.from_numpy(rows.astype(np.float32))).numpy()


def test_roles_follow_integer_levels_and_max_categories() -> None:
    pre = TabularPreprocess(X_FIT, max_categories=5)
    roles = [c["role"] for c in pre.describe()["columns"]]
    assert roles == ["continuous", "categorical", "continuous", "continuous", "continuous"]
    assert pre.describe()["columns"][1]["vocab_size"] == 3
    assert pre.out_features == 4 + 3


def test_raising_max_categories_turns_wide_integer_column_categorical() -> None:
    pre = TabularPreprocess(X_FIT, max_categories=6)
    assert pre.roles[3] == "categorical"
    assert pre.vocab_sizes == {1: 3, 3: 6}


def test_continuous_columns_are_standardised_and_constant_column_is_finite() -> None:
    out = _encode(TabularPreprocess(X_FIT, max_categories=5), X_FIT)
    cont = out[:, :4]  # continuous features first, in input order
    np.testing.assert_allclose(cont[:, :3].mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(cont[:, :3].std(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(cont[:, 3], 0.0)  # (7 - 7) / 1


def test_categorical_column_is_one_hot_over_calibration_levels() -> None:
    out = _encode(TabularPreprocess(X_FIT, max_categories=5), X_FIT)
    np.testing.assert_array_equal(out[:, 4:], np.eye(3, dtype=np.float32)[[0, 1, 2, 1, 0, 2]])


def test_unseen_category_level_encodes_as_all_zeros() -> None:
    row = np.array([[1.0, 9, 0, 10, 7]], dtype=np.float32)  # level 9 never seen
    out = _encode(TabularPreprocess(X_FIT, max_categories=5), row)
    np.testing.assert_array_equal(out[0, 4:], 0.0)


def test_buffers_not_parameters_hold_the_fitted_constants() -> None:
    pre = TabularPreprocess(X_FIT)
    assert list(pre.parameters()) == []
    assert {"mean", "std", "cat_vocab"} <= {name for name, _ in pre.named_buffers()}


def test_non_finite_calibration_values_are_rejected() -> None:
    bad = X_FIT.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        TabularPreprocess(bad)
