"""The vendored COMPAS slice is present, clean and shaped as the rest of the project expects."""

from __future__ import annotations

import numpy as np

from blackbox.data import (
    FEATURE_NAMES,
    RACE_FEATURE,
    RACES,
    compas_split,
    load_compas,
    split,
    with_race_feature,
)


def test_vendored_file_loads_with_expected_columns() -> None:
    data = load_compas()
    assert data.feature_names == list(FEATURE_NAMES)
    assert data.X.dtype == np.float32
    assert data.X.shape == (len(data), 7)
    assert len(data) >= 5000
    assert not np.isnan(data.X).any()
    assert set(np.unique(data.y)) == {0, 1}
    assert set(np.unique(data.race)) == set(RACES)


def test_encodings_are_binary_and_race_is_not_a_feature() -> None:
    data = load_compas()
    for col in ("c_charge_degree", "sex"):
        assert set(np.unique(data.X[:, FEATURE_NAMES.index(col)])) == {0.0, 1.0}
    assert "race" not in data.feature_names
    assert data.X[:, FEATURE_NAMES.index("age")].min() >= 18


def test_split_is_deterministic_disjoint_and_complete() -> None:
    a, b = split(100, seed=3), split(100, seed=3)
    for x, y in zip((a.train, a.calib, a.test), (b.train, b.calib, b.test), strict=True):
        np.testing.assert_array_equal(x, y)
    everything = np.concatenate([a.train, a.calib, a.test])
    assert sorted(everything.tolist()) == list(range(100))
    assert (len(a.train), len(a.calib), len(a.test)) == (60, 20, 20)
    assert not np.array_equal(split(100, seed=4).calib, a.calib)


def test_compas_split_has_every_target_race_cell_in_calibration() -> None:
    data = load_compas()
    calib = data.subset(compas_split(data).calib)
    for y in (0, 1):
        for race in RACES:
            assert ((calib.y == y) & (calib.race == race)).sum() > 50


def test_race_feature_is_an_extra_input_column_and_the_split_is_unchanged() -> None:
    data = load_compas()
    raced = with_race_feature(data)
    assert raced.feature_names == [*data.feature_names, RACE_FEATURE]
    assert np.array_equal(raced.X[:, :-1], data.X)
    assert np.array_equal(raced.X[:, -1] == 1.0, data.race == RACES[0])
    assert np.array_equal(compas_split(raced).calib, compas_split(data).calib)
