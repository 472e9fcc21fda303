"""Target and bias rules shared by every format (exercised through CSV uploads)."""

from __future__ import annotations

import numpy as np
import pytest

from service.calibration.loader import load_calibration
from service.errors import InvalidCalibrationSet
from tests.service.calibration.builders import (
    BIAS,
    TARGET,
    compas_columns,
    csv_bytes,
    tabular_model,
)


def _load_columns(columns: dict[str, list[object]], max_rows: int = 100):
    return load_calibration(csv_bytes(columns), tabular_model(), TARGET, [BIAS], max_rows)


def test_integer_target_indices_are_used_as_class_indices() -> None:
    columns = compas_columns()
    columns[TARGET] = ["1", "0", "1.0", "0", "1", "0"]
    np.testing.assert_array_equal(_load_columns(columns).y, [1, 0, 1, 0, 1, 0])


def test_class_names_win_over_indices_when_names_are_digits() -> None:
    model = tabular_model().model_copy(update={"classes": ["1", "0"]})
    cal = load_calibration(csv_bytes(compas_columns()), model, TARGET, [BIAS], 100)
    np.testing.assert_array_equal(cal.y, 1 - np.array(compas_columns()[TARGET]))


def test_unknown_target_values_are_listed_with_the_model_classes() -> None:
    columns = compas_columns()
    columns[TARGET] = ["recid", "no_recid", "maybe", "recid", "unsure", "recid"]
    with pytest.raises(
        InvalidCalibrationSet, match=r"\['no_recid', 'recid'\].*\['maybe', 'unsure'\]"
    ):
        _load_columns(columns)


def test_out_of_range_target_index_is_unknown() -> None:
    columns = compas_columns()
    columns[TARGET][0] = 2
    with pytest.raises(InvalidCalibrationSet, match=r"indices 0\.\.1: \['2'\]"):
        _load_columns(columns)


def test_unknown_values_are_capped_at_five() -> None:
    columns = compas_columns(8)
    columns[TARGET] = [f"v{i}" for i in range(8)]
    with pytest.raises(InvalidCalibrationSet) as info:
        _load_columns(columns)
    assert info.value.details["unknown"] == ["v0", "v1", "v2", "v3", "v4"]


def test_single_target_class_is_refused() -> None:
    columns = compas_columns()
    columns[TARGET] = ["recid"] * 6
    with pytest.raises(InvalidCalibrationSet, match=r"single class 'recid'.*at least two"):
        _load_columns(columns)


def test_single_bias_group_names_column_and_value() -> None:
    columns = compas_columns()
    columns[BIAS] = ["Caucasian"] * 6
    with pytest.raises(InvalidCalibrationSet, match=r"'race'.*single value 'Caucasian'"):
        _load_columns(columns)


@pytest.mark.parametrize("column", [TARGET, BIAS])
@pytest.mark.parametrize("cell", [None, "NA", "  "])
def test_missing_label_names_column_and_row(column: str, cell: object) -> None:
    columns = compas_columns()
    columns[column][2] = cell
    with pytest.raises(InvalidCalibrationSet, match=f"'{column}' row 3: missing value"):
        _load_columns(columns)


def test_more_rows_than_the_limit_states_count_and_limit() -> None:
    with pytest.raises(InvalidCalibrationSet, match="6 rows, more than the limit of 5"):
        _load_columns(compas_columns(6), max_rows=5)


def test_rows_at_the_limit_are_accepted() -> None:
    assert len(_load_columns(compas_columns(6), max_rows=6)) == 6


@pytest.mark.parametrize(
    ("target", "bias", "message"),
    [
        (TARGET, [], "at least one bias column"),
        (TARGET, [BIAS, BIAS], "more than once"),
        (TARGET, [TARGET], "cannot also be a bias column"),
        (TARGET, ["sex"], r"\['sex'\] are features.*never see"),
        ("age", [BIAS], "target 'age' is a feature"),
    ],
)
def test_unusable_target_and_bias_choices_are_refused_before_reading(
    target: str, bias: list[str], message: str
) -> None:
    with pytest.raises(InvalidCalibrationSet, match=message):
        load_calibration(b"\x00 not even a file", tabular_model(), target, bias, 100)


def test_a_single_bias_name_given_as_a_string_is_one_column() -> None:
    cal = load_calibration(csv_bytes(compas_columns()), tabular_model(), TARGET, BIAS, 100)
    assert list(cal.bias) == [BIAS]


def test_two_bias_columns_are_both_kept() -> None:
    columns = compas_columns()
    columns["age_group"] = ["young", "old"] * 3
    cal = load_calibration(csv_bytes(columns), tabular_model(), TARGET, [BIAS, "age_group"], 100)
    assert cal.bias["age_group"].tolist() == columns["age_group"]
