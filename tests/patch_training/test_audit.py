"""Counterfactual bias, computed (``patch_training.audit``) and its inputs read
(``service.calibration.audit_input``); ``eraser audit``'s options."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from patch_training.audit import audit_attribute, resampled_means, row_changes
from patch_training.cli import _values, app
from service.calibration.audit_input import load_audit_set
from service.errors import InvalidAuditInput
from service.jobs.audits import AuditSpec
from service.settings import ModelConfig
from tests.conftest import REDIS_URL
from tests.patch_training.conftest import cli_environment

TAB = ModelConfig.model_validate(
    {
        "name": "tab",
        "classes": ["no", "yes"],
        "input": {"shape": [3], "features": ["a", "b", "g"]},
        "upstream": {"url": "http://127.0.0.1:9/v2/models/tab/infer", "protocol": "v2"},
    }
)
IMG = ModelConfig.model_validate(
    {
        "name": "img",
        "classes": ["0", "1"],
        "input": {"shape": [3, 4, 4]},
        "upstream": {"url": "http://127.0.0.1:9/v2/models/img/infer", "protocol": "v2"},
    }
)


def logp(p_yes: list[float]) -> np.ndarray:
    p = np.array(p_yes)
    return np.log(np.stack([1 - p, p], axis=1))


def spec(*attributes: str, **fields: object) -> AuditSpec:
    return AuditSpec.model_validate({"model": "tab", "attributes": list(attributes)} | fields)


def npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


CSV = b"a,b,g,label\n1,2,0,x\n3,4,1,y\n5,6,2,x\n7,8,0,y\n"


def test_b_is_the_mean_change_in_the_probability_of_the_original_decision() -> None:
    # Decisions: yes (0.8), no (0.3), yes (0.6); counterfactuals 0.55, 0.3, 0.4.
    changes = row_changes(logp([0.8, 0.3, 0.6]), logp([0.55, 0.3, 0.4])[:, None, :])
    assert changes.decision.tolist() == [1, 0, 1]
    np.testing.assert_allclose(changes.change, [0.25, 0.0, 0.2])
    assert changes.flipped.tolist() == [False, False, True]  # 0.4 < 0.5: "no"


def test_several_counterfactuals_per_row_are_averaged() -> None:
    cf = np.stack([logp([0.5]), logp([0.9])], axis=1)  # one row, two x̄
    np.testing.assert_allclose(row_changes(logp([0.7]), cf).change, [0.2])


def test_intervals_cover_the_estimate_and_raw_and_served_are_paired() -> None:
    rng = np.random.default_rng(0)
    raw_p = rng.uniform(0.05, 0.95, 500)
    raw = (logp(raw_p), logp(np.clip(raw_p + 0.1, 0, 0.99))[:, None, :])
    served = (logp(raw_p), logp(np.clip(raw_p + 0.02, 0, 0.99))[:, None, :])
    groups = np.where(np.arange(500) % 2 == 0, "u", "v")
    audit, per_row = audit_attribute(
        name="g", source="input_column", values=["0", "1"], groups=groups, classes=["no", "yes"],
        raw=raw, served=served, draws=300, confidence=0.9, top_rows=3, seed=0,
    )  # fmt: skip
    assert audit.raw.bias.low <= audit.raw.bias.estimate <= audit.raw.bias.high
    assert audit.change is not None and audit.change.high < 0
    assert set(audit.raw.groups) == {"u", "v"} and len(audit.raw.top_rows) == 3
    assert audit.served is not None and audit.served.bias.estimate < audit.raw.bias.estimate
    assert sum(audit.raw.histogram.counts) == 500 and set(per_row) == {"raw", "served"}


def test_resampling_is_chunked_and_reproducible() -> None:
    series = np.random.default_rng(1).random((2, 1000))
    a = resampled_means(series, 50, np.random.default_rng(3))
    b = resampled_means(series, 50, np.random.default_rng(3))
    assert a.shape == (50, 2) and np.array_equal(a, b)


def test_an_input_column_is_set_to_each_of_its_other_values() -> None:
    audit = load_audit_set(CSV, TAB, spec("g", "b", values={"b": [2, 4, 6, 8]}), 100)
    g, b = audit.attributes
    assert g.source == "input_column" and g.values == ["0", "1", "2"] and g.per_row == 2
    assert g.x_cf[0, :, 2].tolist() == [1, 2] and g.x_cf[1, :, 2].tolist() == [0, 2]
    assert (g.x_cf[:, :, :2] == audit.x[:, None, :2]).all()  # nothing else changes
    assert b.per_row == 3 and g.groups.tolist() == ["0", "1", "2", "0"]


def test_pairs_give_counterfactuals_of_attributes_that_are_not_inputs() -> None:
    x = np.array([[1, 2, 0], [3, 4, 1], [5, 6, 2], [7, 8, 0]], dtype=np.float32)
    pairs = npz(x=x, x_cf=np.stack([x + 1, x + 2], axis=1))
    audit = load_audit_set(CSV, TAB, spec("label"), 100, pairs=pairs)
    [label] = audit.attributes
    assert label.source == "pairs" and label.per_row == 2
    assert label.groups.tolist() == ["x", "y", "x", "y"]  # the data file's column
    with pytest.raises(InvalidAuditInput, match="not aligned"):
        load_audit_set(CSV, TAB, spec("label"), 100, pairs=npz(x=x + 1, x_cf=x))
    with pytest.raises(InvalidAuditInput, match="x_cf_label"):
        load_audit_set(CSV, TAB, spec("label"), 100, pairs=npz(x_cf_other=x))


def test_images_audit_from_an_npz_and_pairs() -> None:
    x = np.random.default_rng(0).random((6, 3, 4, 4)).astype(np.float32)
    colour = np.array(["red", "green"] * 3)
    audit = load_audit_set(
        npz(x=x, colour=colour), IMG, spec("colour"), 100, pairs=npz(x_cf=x[:, ::-1])
    )
    assert audit.attributes[0].x_cf.shape == (6, 1, 3, 4, 4)
    assert audit.describe().groups == {"colour": {"green": 3, "red": 3}}
    with pytest.raises(InvalidAuditInput, match=r"needs \[N, 3, 4, 4\] or \[N, M, 3, 4, 4\]"):
        load_audit_set(npz(x=x), IMG, spec("colour"), 100, pairs=npz(x_cf=x[:, :2]))
    with pytest.raises(InvalidAuditInput, match="unnamed tensor"):
        load_audit_set(npz(x=x), IMG, spec("colour"), 100)


@pytest.mark.parametrize(
    ("audit_spec", "message"),
    [
        (spec("g", values={"b": [1, 2]}), "not audited attributes"),
        (spec("label", values={"label": [1, 2]}), "not an input column"),
        (spec("g", values={"g": [0, 1]}), "row 3: value 2 is not one of"),
    ],
)
def test_values_that_cannot_be_used_are_refused(audit_spec: AuditSpec, message: str) -> None:
    with pytest.raises(InvalidAuditInput, match=message):
        load_audit_set(CSV, TAB, audit_spec, 100)


def test_a_column_with_a_single_value_has_nothing_to_flip_to() -> None:
    with pytest.raises(InvalidAuditInput, match="single value 0"):
        load_audit_set(b"a,b,g\n1,2,0\n3,4,0\n", TAB, spec("g"), 100)


def said(result: object) -> str:
    """A usage error's text, without the terminal box and its line breaks."""
    return re.sub(r"[│╭╮╰╯─\s]+", " ", result.output)  # type: ignore[attr-defined]


def test_values_options_parse_and_bad_ones_are_usage_errors() -> None:
    assert _values(["g=0,1", "b=2.5,3"]) == {"g": [0.0, 1.0], "b": [2.5, 3.0]}
    runner = CliRunner()
    bad = ["audit", "--model", "m", "--data", __file__, "--attribute", "g", "--values", "g"]
    result = runner.invoke(app, bad)
    assert result.exit_code == 2 and "COLUMN=v1,v2" in said(result)
    result = runner.invoke(app, ["audit", "--model", "m", "--data", __file__])
    assert result.exit_code == 2 and "--attribute" in said(result)
    twice = ["audit", "--model", "m", "--data", __file__, "--attribute", "g", "--attribute", "g"]
    result = runner.invoke(app, twice)
    assert result.exit_code == 2 and "more than once" in said(result)


def test_cli_refuses_an_unknown_model_and_bad_input_before_storing(
    tmp_path: Path, key_prefix: str, redis_client: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    models = [TAB.model_dump(mode="json")]
    queue = {"ERASER_TRAINING__QUEUE": key_prefix}  # a queue no worker listens on
    cli_environment(monkeypatch, tmp_path, models, key_prefix, **queue)
    data = tmp_path / "rows.csv"
    data.write_bytes(CSV)
    base = ["audit", "--data", str(data), "--attribute"]
    result = CliRunner().invoke(app, [*base, "g", "--model", "nope"])
    assert result.exit_code == 2 and "'nope'" in said(result)
    result = CliRunner().invoke(app, [*base, "label", "--model", "tab"])
    assert result.exit_code == 2 and "not an input column" in said(result)
    with redis.Redis.from_url(REDIS_URL) as client:
        assert list(client.scan_iter(match=f"{key_prefix}:*")) == []
    result = CliRunner().invoke(app, [*base, "g", "--model", "tab", "--enqueue"])
    assert result.exit_code == 0, result.output
    audit_id = json.loads(result.stdout)["audit_id"]
    with redis.Redis.from_url(REDIS_URL) as client:
        assert client.hget(f"{key_prefix}:audit:{audit_id}", "state") == b"queued"
        from rq import Queue
        from rq.serializers import JSONSerializer

        queue = Queue(key_prefix, connection=client, serializer=JSONSerializer)
        job = queue.fetch_job(audit_id)
        assert job is not None and job.func_name.endswith("run_audit_job")
        job.delete()
        client.delete(queue.key)
        client.srem("rq:queues", queue.key)


def test_cli_audits_the_stand_in_and_writes_the_plot(
    tmp_path: Path,
    blackbox_url: str,
    key_prefix: str,
    redis_client: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from blackbox.data import compas_calibration_csv, load_compas
    from deploy.local.processes import standin_model_config

    cli_environment(monkeypatch, tmp_path, [standin_model_config(blackbox_url)], key_prefix)
    data = tmp_path / "rows.csv"
    data.write_bytes(compas_calibration_csv(load_compas(), np.arange(200)))
    plot = tmp_path / "audit.png"
    args = ["audit", "--model", "compas", "--data", str(data), "--attribute", "sex"]
    result = CliRunner().invoke(app, [*args, "--draws", "200", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["audit_id"].startswith("audit-")
    assert answer["result"]["ranking"][0]["attribute"] == "sex"
    assert answer["result"]["attributes"][0]["raw"]["bias"]["estimate"] > 0
    assert plot.read_bytes().startswith(b"\x89PNG")
