"""An FMD job in process, against the stand-in that takes race as an input (HTTP) and a real
Redis; and the calibration checks for an attribute that is an input column."""

from __future__ import annotations

import csv
import io

import numpy as np
import orjson
import pytest

from blackbox.data import RACE_FEATURE, TARGET, compas_split, load_compas, with_race_feature
from blackbox.model import CLASSES
from patch_training.jobs.context import open_context
from patch_training.jobs.pipeline import run_training
from patch_training.jobs.progress import JobProgress
from service.calibration.loader import load_calibration
from service.errors import InvalidCalibrationSet
from service.jobs.spec import TrainingJobSpec
from tests.patch_training.jobs.test_audit_job import settings_for

DATA = with_race_feature(load_compas())
ROWS = compas_split(DATA).calib


def csv_with_the_attribute_as_input(rows: np.ndarray = ROWS) -> bytes:
    """The model's features (race among them) and the target: no separate bias column."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*DATA.feature_names, TARGET])
    for i in rows:
        writer.writerow([*(f"{v:g}" for v in DATA.X[i]), CLASSES[int(DATA.y[i])]])
    return out.getvalue().encode()


def fmd_spec(**fields: object) -> TrainingJobSpec:
    base = {"method": "fmd", "model": "compas", "target": TARGET, "bias": [RACE_FEATURE],
            "fmd": {"hidden": [16], "epochs": 40}, "gate": {"bootstrap_draws": 300}}  # fmt: skip
    return TrainingJobSpec.model_validate(base | fields)


def test_the_fmd_spec_has_its_group_and_reads_the_attribute_from_the_inputs(
    key_prefix: str, race_input_blackbox_url: str
) -> None:
    spec = fmd_spec()
    assert (
        spec.bias_is_input
        and not TrainingJobSpec.model_validate(
            {"model": "m", "target": "t", "bias": ["b"]}
        ).bias_is_input
    )
    assert spec.fmd.k_grid == sorted(spec.fmd.k_grid) and spec.fmd.targets == "labels"
    with pytest.raises(ValueError, match="fraction"):
        fmd_spec(fmd={"k_grid": [2.0]})
    model = settings_for(key_prefix, race_input_blackbox_url).models[0]
    data = csv_with_the_attribute_as_input()
    calib = load_calibration(data, model, TARGET, [RACE_FEATURE], 10_000, bias_is_input=True)
    column = DATA.feature_names.index(RACE_FEATURE)
    assert set(calib.bias[RACE_FEATURE]) == {"0", "1"}
    assert np.array_equal(calib.bias[RACE_FEATURE] == "1", calib.x[:, column] == 1)
    # an Eraser may not take an input column as its bias column; FMD must
    with pytest.raises(InvalidCalibrationSet, match="features of model"):
        load_calibration(data, model, TARGET, [RACE_FEATURE], 10_000)
    with pytest.raises(InvalidCalibrationSet, match="not input columns"):
        load_calibration(data, model, TARGET, ["race"], 10_000, bias_is_input=True)
    # a continuous column is not an attribute
    with pytest.raises(InvalidCalibrationSet, match="distinct values"):
        load_calibration(data, model, TARGET, ["age"], 10_000, bias_is_input=True)


@pytest.mark.slow  # about 6 s on one core
async def test_an_fmd_job_end_to_end_never_trains_on_verdict_rows(
    key_prefix: str,
    race_input_blackbox_url: str,
    redis_client: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from patch_training.methods import fmd as fmd_module

    torch.set_num_threads(1)
    settings = settings_for(key_prefix, race_input_blackbox_url)
    data = csv_with_the_attribute_as_input(ROWS[:600])
    seen: list[np.ndarray] = []
    fit = fmd_module.Fmd.fit

    def spy(self, method_input, on_epoch=None):  # type: ignore[no-untyped-def]
        seen.append(method_input.x)
        return fit(self, method_input, on_epoch)

    monkeypatch.setattr(fmd_module.Fmd, "fit", spy)
    spec = fmd_spec(folds=2)
    async with open_context(settings, JobProgress(show_bars=False)) as ctx:
        model = ctx.model("compas")
        calib = load_calibration(data, model, TARGET, [RACE_FEATURE], 10_000, bias_is_input=True)
        result = await run_training(spec, calib, ctx)
        [outcome] = result.patches
        assert outcome.kind == "fmd" and outcome.bias == RACE_FEATURE
        assert result.tuning_rows + result.verdict_rows == 600
        # the method saw exactly the tuning rows: no verdict row
        [x_seen] = seen
        assert len(x_seen) == result.tuning_rows
        cf = outcome.counterfactual_bias
        assert cf is not None and cf["rows"] == result.verdict_rows
        assert cf["raw"]["low"] <= cf["raw"]["estimate"] <= cf["raw"]["high"]
        report = orjson.loads(
            (await ctx.registry.get_report(outcome.name, outcome.version)).json_bytes
        )
    section = report["fmd"]
    assert section["attribute"] == RACE_FEATURE and section["values"] == ["0", "1"]
    assert section["k"]["curve"][0]["k_fraction"] == 0
    assert sum(c["chosen"] for c in section["k"]["curve"]) == 1
    assert section["top_harmful_rows"] and all(
        r["influence"] > 0 for r in section["top_harmful_rows"]
    )
    assert set(report["verdict"]["group_rows"]) <= {f"y={c},b={g}" for c in "01" for g in "01"}
