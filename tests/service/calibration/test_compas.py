"""The vendored COMPAS slice, written as an operator would export it, loads back exactly."""

from __future__ import annotations

import numpy as np

from blackbox.data import BIAS, FEATURE_NAMES, TARGET, load_compas
from service.calibration.loader import load_calibration
from tests.service.calibration.builders import csv_bytes, tabular_model


def test_compas_csv_loads_to_the_same_features_labels_and_races() -> None:
    data = load_compas()
    columns: dict[str, list[object]] = {BIAS: data.race.tolist(), TARGET: data.y.tolist()}
    for k, name in enumerate(FEATURE_NAMES):
        columns[name] = [format(v, "g") for v in data.X[:, k]]
    cal = load_calibration(csv_bytes(columns), tabular_model(), TARGET, [BIAS], len(data))
    np.testing.assert_array_equal(cal.x, data.X)
    np.testing.assert_array_equal(cal.y, data.y)
    np.testing.assert_array_equal(cal.bias[BIAS], data.race)
