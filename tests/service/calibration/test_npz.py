"""NPZ uploads: an x tensor shaped like the model input plus 1-D label arrays."""

from __future__ import annotations

import numpy as np
import pytest

from service.calibration import archive
from service.calibration.loader import load_calibration
from service.errors import InvalidCalibrationSet
from tests.service.calibration.builders import image_model, npz_bytes, tabular_model

ROWS = 6


def _arrays(**overrides: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "x": rng.integers(0, 256, (ROWS, 3, 8, 8)).astype(np.uint8),
        "label": np.array([0, 1, 2, 0, 1, 2]),
        "site": np.array(["a", "b"] * 3),
    }
    return {**arrays, **overrides}


def _load(arrays: dict[str, np.ndarray], model=None, **kwargs: object):
    model = model or image_model()
    return load_calibration(npz_bytes(**arrays), model, "label", ["site"], 100, **kwargs)


def test_x_is_converted_to_float32_without_scaling() -> None:
    arrays = _arrays()
    cal = _load(arrays)
    assert cal.format == "npz"
    assert cal.x.dtype == np.float32
    np.testing.assert_array_equal(cal.x, arrays["x"].astype(np.float32))
    np.testing.assert_array_equal(cal.y, [0, 1, 2, 0, 1, 2])
    assert cal.bias["site"].tolist() == ["a", "b"] * 3


def test_integral_float_labels_become_indices_and_integer_groups() -> None:
    cal = _load(_arrays(label=np.array([0.0, 1.0, 2.0] * 2), site=np.array([1.0, 2.0] * 3)))
    np.testing.assert_array_equal(cal.y, [0, 1, 2, 0, 1, 2])
    assert cal.bias["site"].tolist() == ["1", "2"] * 3


def test_tabular_model_accepts_npz_too() -> None:
    model = tabular_model()
    x = np.arange(ROWS * 7, dtype=np.float64).reshape(ROWS, 7)
    cal = _load(_arrays(x=x, label=np.array(["recid", "no_recid"] * 3)), model=model)
    np.testing.assert_array_equal(cal.x, x.astype(np.float32))


def test_missing_and_extra_arrays_are_named() -> None:
    arrays = _arrays(extra=np.zeros(ROWS))
    del arrays["site"]
    with pytest.raises(InvalidCalibrationSet, match=r"missing \['site'\]; extra \['extra'\]"):
        _load(arrays)


def test_x_of_the_wrong_shape_states_both_shapes() -> None:
    with pytest.raises(
        InvalidCalibrationSet, match=r"'x' has shape \[6, 3, 8, 9\].*\[N, 3, 8, 8\]"
    ):
        _load(_arrays(x=np.zeros((ROWS, 3, 8, 9))))


def test_label_array_of_the_wrong_length_is_named() -> None:
    with pytest.raises(InvalidCalibrationSet, match=r"'site' has shape \[5\].*length 6"):
        _load(_arrays(site=np.array(["a", "b", "a", "b", "a"])))


def test_non_finite_x_names_the_row() -> None:
    x = np.zeros((ROWS, 3, 8, 8), dtype=np.float32)
    x[4, 1, 2, 3] = np.nan
    with pytest.raises(InvalidCalibrationSet, match="'x' row 5 holds a NaN"):
        _load(_arrays(x=x))


def test_pickled_object_arrays_are_refused() -> None:
    with pytest.raises(InvalidCalibrationSet, match="'site' cannot be read"):
        _load(_arrays(site=np.array(["a", None, "b", "a", "b", "a"], dtype=object)))


def test_nan_label_is_a_missing_value() -> None:
    with pytest.raises(InvalidCalibrationSet, match="'site' row 2: missing value"):
        _load(_arrays(site=np.array([1.0, np.nan, 2.0, 1.0, 2.0, 1.0])))


def test_empty_x_has_no_rows() -> None:
    empty = _arrays(x=np.zeros((0, 3, 8, 8)), label=np.array([]), site=np.array([]))
    with pytest.raises(InvalidCalibrationSet, match="no rows"):
        _load(empty)


def test_archive_inflating_past_the_total_bound_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "MAX_TOTAL_BYTES", 1000)
    with pytest.raises(InvalidCalibrationSet, match="archive would inflate to"):
        _load(_arrays())
