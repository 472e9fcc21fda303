"""What is summarised about a set, and row subsets that keep its provenance."""

from __future__ import annotations

from service.calibration.loader import load_calibration
from service.calibration.meta import CalibrationMeta, describe
from tests.service.calibration.builders import (
    BIAS,
    TARGET,
    compas_columns,
    csv_bytes,
    tabular_model,
)


def test_describe_counts_every_class_and_group() -> None:
    columns = compas_columns()
    columns[TARGET] = [1, 1, 1, 1, 1, 0]
    data = csv_bytes(columns)
    model = tabular_model()
    cal = load_calibration(data, model, TARGET, [BIAS], 100)
    meta = describe(cal, model, TARGET, "compas.csv", len(data))
    assert meta.class_counts == {"no_recid": 1, "recid": 5}
    assert meta.group_counts == {BIAS: {"African-American": 3, "Caucasian": 3}}
    assert (meta.rows, meta.size_bytes, meta.format) == (6, len(data), "csv")
    assert (meta.model, meta.target, meta.bias) == ("compas", TARGET, [BIAS])
    assert meta.sha256 == cal.sha256
    assert CalibrationMeta.model_validate_json(meta.model_dump_json()) == meta
