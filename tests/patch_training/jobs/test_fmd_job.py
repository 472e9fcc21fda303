"""An FMD job in process, against the stand-in that takes race as an input (HTTP) and a real
Redis; and the calibration checks for an attribute that is an input column."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import orjson
import pytest

from blackbox.data import (
    RACE_FEATURE,
    TARGET,
    compas_calibration_csv,
    compas_split,
    load_compas,
    with_race_feature,
)
from blackbox.model import CLASSES
from patch_training.jobs.context import open_context
from patch_training.jobs.fmd import counterfactuals_of
from patch_training.jobs.pipeline import run_training
from patch_training.jobs.progress import JobProgress
from service.calibration.loader import load_calibration
from service.errors import InvalidCalibrationSet
from service.jobs.spec import TrainingJobSpec
from service.settings import ModelConfig
from tests.fixtures_upstream import V2_PATH, fake_upstream, make_model
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


# ------------------------------------------------------------------ uploaded counterfactual pairs


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def race_input_model(key_prefix: str) -> ModelConfig:
    return settings_for(key_prefix, "http://127.0.0.1:9").models[0]


def test_pairs_give_an_attribute_that_is_not_an_input_its_counterfactuals(
    key_prefix: str,
) -> None:
    model = race_input_model(key_prefix)
    data = compas_calibration_csv(DATA, ROWS[:200])  # features (race among them), target, race
    as_input = csv_with_the_attribute_as_input(ROWS[:200])  # the same rows, no race column
    flipped = load_calibration(as_input, model, TARGET, [RACE_FEATURE], 10_000, bias_is_input=True)
    x_cf = flipped.x.copy()
    column = DATA.feature_names.index(RACE_FEATURE)
    x_cf[:, column] = 1 - x_cf[:, column]
    pairs = npz_bytes(x_cf=x_cf)
    calib = load_calibration(data, model, TARGET, ["race"], 10_000, bias_is_input=True, pairs=pairs)
    assert calib.pairs["race"].shape == (200, 1, len(DATA.feature_names))
    assert set(calib.bias["race"]) == {"African-American", "Caucasian"}  # the file's column
    from_pairs = counterfactuals_of(calib, model, "race")
    assert from_pairs.source == "pairs" and from_pairs.values is None
    assert np.array_equal(from_pairs.groups, calib.bias["race"])
    # the uploaded x̄ is what the job uses: here the same rows as flipping the race input
    by_flipping = counterfactuals_of(flipped, model, RACE_FEATURE)
    assert by_flipping.source == "input_column" and by_flipping.values == ["0", "1"]
    assert np.array_equal(from_pairs.x_cf, by_flipping.x_cf)
    # M counterfactuals per row: [N, M, F]
    two = load_calibration(
        data, model, TARGET, ["race"], 10_000, bias_is_input=True,
        pairs=npz_bytes(x_cf=np.stack([x_cf, flipped.x], axis=1)),
    )  # fmt: skip
    assert counterfactuals_of(two, model, "race").per_row == 2
    # an input attribute beside a paired one keeps its flipped counterfactuals
    both = load_calibration(
        data, model, TARGET, [RACE_FEATURE, "race"], 10_000, bias_is_input=True,
        pairs=npz_bytes(x_cf_race=x_cf),
    )  # fmt: skip
    assert list(both.pairs) == ["race"]
    assert counterfactuals_of(both, model, RACE_FEATURE).source == "input_column"


def test_pairs_past_the_limits_are_refused_before_anything_is_stored(
    key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.calibration import pairs as pairs_module
    from service.calibration.intake import check_upload

    settings = settings_for(key_prefix, "http://127.0.0.1:9")
    model = settings.models[0]
    data = compas_calibration_csv(DATA, ROWS[:200])
    x_cf = np.zeros((200, 3, len(DATA.feature_names)), dtype=np.float32)
    spec = fmd_spec(bias=["race"])
    training = settings.training.model_copy(update={"max_calibration_mb": 0.05})
    with pytest.raises(InvalidCalibrationSet, match=r"pairs file is \d+ bytes; the limit"):
        check_upload(data, "c.csv", model, spec, training, npz_bytes(x_cf=x_cf[:, [0] * 10]))
    monkeypatch.setattr(pairs_module, "MAX_QUERIED_ROWS", 799)  # 200 rows + 200 × 3 = 800
    with pytest.raises(InvalidCalibrationSet, match="800 rows to the black box"):
        check_upload(data, "c.csv", model, spec, settings.training, npz_bytes(x_cf=x_cf))
    # without pairs the flipped path is unchanged and needs none
    as_input = csv_with_the_attribute_as_input(ROWS[:200])
    calib, meta = check_upload(as_input, "c.csv", model, fmd_spec(), settings.training)
    assert calib.pairs == {} and meta.bias == [RACE_FEATURE]


@pytest.mark.slow  # about 10 s on one core
async def test_an_image_fmd_job_trains_on_uploaded_pairs_and_renders_its_panels(
    key_prefix: str, redis_client: object, tmp_path: Path
) -> None:
    """Colored-MNIST-like: each class a pixel pattern drawn in red or green, the black box
    (row sum × class index) relying on brightness, which the colour sets; x̄ is the same
    pattern in the other colour. Only the pairs can say so: colour is no input column."""
    import torch
    from PIL import Image

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n = 240
    y = rng.integers(0, 3, n)
    mask = (rng.random((n, 8, 8)) < (0.25 + 0.15 * y)[:, None, None]).astype(np.float32)
    red = rng.random(n) < np.where(y == 2, 0.8, 0.3)  # colour correlates with the class

    def draw(as_red: np.ndarray) -> np.ndarray:
        x = np.zeros((n, 3, 8, 8), dtype=np.float32)
        x[as_red, 0] = 0.08 * mask[as_red]
        x[~as_red, 1] = 0.03 * mask[~as_red]
        return x

    x, x_cf = draw(red), draw(~red)
    colour = np.where(red, "red", "green")
    data, pairs = npz_bytes(x=x, digit=y, colour=colour), npz_bytes(x_cf=x_cf, x=x)
    async with fake_upstream(classes=3) as server:
        model = make_model(
            f"http://127.0.0.1:{server.port}{V2_PATH}", classes=3, input_shape=(3, 8, 8)
        )
        settings = settings_for(key_prefix, "http://127.0.0.1:9")
        settings = settings.model_copy(update={"models": [model]})
        spec = TrainingJobSpec.model_validate(
            {"method": "fmd", "model": "m", "target": "digit", "bias": ["colour"], "folds": 2,
             "epochs": 3, "fmd": {"epochs": 20}, "gate": {"bootstrap_draws": 300}}
        )  # fmt: skip
        async with open_context(settings, JobProgress(show_bars=False)) as ctx:
            calib = load_calibration(
                data, model, "digit", ["colour"], 1000, bias_is_input=True, pairs=pairs
            )
            result = await run_training(spec, calib, ctx)
            [outcome] = result.patches
            stored = await ctx.registry.get_report(outcome.name, outcome.version)
    report = orjson.loads(stored.json_bytes)
    section = report["fmd"]
    assert outcome.kind == "fmd" and section["counterfactuals"] == "pairs"
    assert section["attribute"] == "colour" and section["counterfactuals_per_row"] == 1
    cf = outcome.counterfactual_bias
    assert cf is not None and cf["raw"]["estimate"] > 1.0  # recolouring moves the black box
    assert set(section["counterfactual_bias"]["groups"]) == {"red", "green"}
    assert stored.png is not None
    (tmp_path / "fmd.png").write_bytes(stored.png)
    image = Image.open(tmp_path / "fmd.png")
    image.verify()
    assert image.format == "PNG" and image.size == (990, 756)  # the FMD row under the shared two
