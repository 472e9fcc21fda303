"""The counterfactual bias audit as a job, in process: real Redis, the stand-in black box on a
loopback port, the model's active stack loaded from the registry as a replica loads it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bench.onnx_patches import mlp_to_onnx
from blackbox.data import (
    RACE_FEATURE,
    compas_calibration_csv,
    compas_split,
    load_compas,
    with_race_feature,
)
from blackbox.model import CLASSES, MlpWeights
from deploy.local.processes import standin_model_config
from patch_training.jobs.audit_entry import run_audit_stored
from patch_training.jobs.context import JobContext, open_context
from patch_training.jobs.progress import JobProgress
from service.calibration.audit_input import load_audit_set
from service.jobs.audits import AuditResult, AuditSpec, new_audit_id
from service.registry.models import PatchSpec, StackEntry, VersionStatus
from service.settings import GatewaySettings, ModelConfig
from tests.service.api.conftest import make_settings

DATA = with_race_feature(load_compas())
ROWS = compas_split(DATA).test[:400]
CSV = compas_calibration_csv(DATA, ROWS)  # features (race among them), target, race


@pytest.fixture(scope="module")
def race_model(tmp_path_factory: pytest.TempPathFactory) -> MlpWeights:
    """The stand-in that takes race as an input (trained once for this module)."""
    from blackbox.server import ensure_model

    path = Path(tmp_path_factory.mktemp("audit")) / "compas_mlp_race_input.npz"
    return ensure_model(path, race_input=True)


@pytest.fixture(scope="module")
def race_url(race_model: MlpWeights) -> Iterator[str]:
    from blackbox.server import create_app
    from tests.servers import running_server

    with running_server(create_app(race_model, name="compas")) as url:
        yield url


@pytest.fixture(scope="module")
def race_blind_url(race_model: MlpWeights) -> Iterator[str]:
    """The same stand-in with race's input weights zeroed: it takes race and ignores it."""
    from blackbox.server import create_app
    from tests.servers import running_server

    first = race_model.weights[0].copy()
    first[DATA.feature_names.index(RACE_FEATURE)] = 0.0
    blind = replace(race_model, weights=[first, *race_model.weights[1:]])
    with running_server(create_app(blind, name="compas")) as url:
        yield url


def settings_for(key_prefix: str, url: str) -> GatewaySettings:
    settings = make_settings(key_prefix, url)
    settings.models[0] = ModelConfig.model_validate(
        standin_model_config(url, "compas", DATA.feature_names)
    )
    return settings


async def audit(settings: GatewaySettings, **fields: object) -> AuditResult:
    """Store the CSV and a record as POST /audits does, then run the job here."""
    spec = AuditSpec.model_validate(
        {"model": "compas", "attributes": [RACE_FEATURE], "draws": 400} | fields
    )
    async with open_context(settings, JobProgress(show_bars=False)) as ctx:
        found = load_audit_set(CSV, ctx.model("compas"), spec, 10_000).describe()
        spec = spec.model_copy(update={"data_id": await ctx.audits.put_input(CSV)})
        audit_id = new_audit_id()
        await ctx.audits.create(audit_id, spec, found)
    result = await run_audit_stored(audit_id, spec, settings, JobProgress(show_bars=False))
    async with open_context(settings, JobProgress(show_bars=False)) as ctx:
        view = await ctx.audits.view(audit_id)
        assert view.state == "finished" and view.result == result
        assert (await ctx.audits.png(audit_id)).startswith(b"\x89PNG")
    return result


async def test_a_model_that_uses_the_column_is_counterfactually_biased_on_it(
    key_prefix: str, race_url: str, redis_client: object
) -> None:
    result = await audit(settings_for(key_prefix, race_url))
    [attribute] = result.attributes
    assert attribute.source == "input_column" and attribute.values == ["0", "1"]
    raw = attribute.raw
    assert raw.bias.low > 1.0  # percent: reliably above zero
    assert set(raw.groups) == {"0", "1"} and sum(g.rows for g in raw.groups.values()) == 400
    assert sum(raw.histogram.counts) == 400 and raw.top_rows
    assert raw.top_rows[0].change >= raw.top_rows[-1].change
    assert attribute.served is None and result.stack is None
    assert result.queried_rows == 800 and result.ranking[0].attribute == RACE_FEATURE


async def test_a_model_that_ignores_the_column_has_no_counterfactual_bias(
    key_prefix: str, race_blind_url: str, redis_client: object
) -> None:
    result = await audit(settings_for(key_prefix, race_blind_url), attributes=[RACE_FEATURE, "sex"])
    by_name = {a.attribute: a for a in result.attributes}
    race = by_name[RACE_FEATURE].raw
    assert race.bias.low <= 0 <= race.bias.high and race.bias.estimate < 1e-3
    assert race.flip_share.estimate == 0 and race.top_rows == []
    assert [r.attribute for r in result.ranking] == ["sex", RACE_FEATURE]  # ranked, most first


async def test_the_served_stack_lowers_counterfactual_bias(
    key_prefix: str, race_url: str, race_model: MlpWeights, redis_client: object
) -> None:
    settings = settings_for(key_prefix, race_url)
    # A patch that is the black box itself at α = 0.5 halves every logit it serves, so every
    # counterfactual change in probability shrinks.
    blob = mlp_to_onnx(race_model.weights, race_model.biases, race_model.mean, race_model.std)
    async with open_context(settings, JobProgress(show_bars=False)) as ctx:
        await activate(ctx, blob, alpha=0.5)
    result = await audit(settings)
    [attribute] = result.attributes
    assert result.stack is not None and result.stack.patches[0]["alpha"] == 0.5
    assert attribute.served is not None and attribute.change is not None
    assert attribute.served.bias.estimate < attribute.raw.bias.estimate
    assert attribute.change.high < 0  # the whole interval says "lower"
    assert result.ranking[0].served == attribute.served.bias.estimate


async def activate(ctx: JobContext, blob: bytes, alpha: float) -> None:
    spec = PatchSpec(
        kind="custom", model="compas", classes=list(CLASSES), input_shape=[len(DATA.feature_names)]
    )
    manifest = await ctx.registry.register_version(
        "self", spec, blob, status=VersionStatus(status="approved")
    )
    entry = StackEntry(patch="self", version=manifest.version, alpha=alpha)
    await ctx.registry.set_stack("compas", [entry], expected_revision=0)
