"""The quality benchmark's counterfactual rows (issue 15, §3–4): counterfactual bias of answers
and of decisions, the counterfactual test inputs (flipped input column, recoloured digits),
``cf_average``, the FMD plan, summaries, targets and BENCHMARKS.md section."""

from __future__ import annotations

import numpy as np
import pytest

from bench.quality.client import calibration_file
from bench.quality.counterfactual import (
    calibration_pairs,
    counterfactual_bias,
    counterfactual_test,
    decision_cf_bias,
    flipped_inputs,
)
from bench.quality.counterfactual_markdown import counterfactual_section
from bench.quality.datasets import Table, colourise, compas_task, load_mnist
from bench.quality.peer_decisions import peer_decisions
from bench.quality.protocol import FmdRun, Run, plan_fmd
from bench.quality.results import aggregate, aggregate_fmd, fmd_targets, merge_rows
from blackbox.data import split
from patch_training.audit import row_changes
from service.calibration.intake import check_upload
from service.jobs.spec import TrainingJobSpec
from service.settings import ModelConfig, TrainingSettings
from tests.bench.test_quality_parts import _fake_mnist

# --- the measure ----------------------------------------------------------------------------


def test_counterfactual_bias_is_the_audits_mean_change_of_the_decided_class() -> None:
    p = np.array([[0.8, 0.2], [0.3, 0.7], [0.5, 0.5]])
    p_cf = np.array([[0.6, 0.4], [0.6, 0.4], [0.5, 0.5]])
    # ŷ = 0, 1, 0: changes |0.8 − 0.6|, |0.7 − 0.4|, 0
    expected = 100 * (0.2 + 0.3 + 0.0) / 3
    got = counterfactual_bias(np.log(p), np.log(p_cf)[:, None, :])
    assert got == pytest.approx(expected)
    assert got == pytest.approx(100 * row_changes(np.log(p), np.log(p_cf)[:, None]).change.mean())


def test_decision_cf_bias_of_deterministic_decisions_is_the_flip_rate() -> None:
    pred = np.array([0, 1, 1, 0, 1])
    pred_cf = np.array([0, 0, 1, 1, 1])  # rows 1 and 3 flip
    assert decision_cf_bias(pred, pred_cf) == pytest.approx(40.0)
    assert decision_cf_bias(pred, pred) == 0.0
    several = np.stack([pred_cf, np.array([1, 1, 1, 0, 1])], axis=1)  # [N, 2]: 2 + 1 flips
    assert decision_cf_bias(pred, several) == pytest.approx(100 * (2 + 1) / 10)


def test_coupled_randomised_decisions_measure_the_decision_probabilities() -> None:
    """A randomised threshold 1[u ≤ q(x)] with the same u for x and x̄ (common random numbers)
    flips with probability |q(x) − q(x̄)|: its flip rate estimates B of the decision
    probabilities; independent draws would add flips that have nothing to do with x̄."""
    rng = np.random.default_rng(0)
    n = 200_000
    q, q_cf = rng.uniform(0.2, 0.8, n), rng.uniform(0.2, 0.8, n)
    probs = np.stack([1 - q, q], axis=1)
    on_probs = counterfactual_bias(np.log(probs), np.log(np.stack([1 - q_cf, q_cf], 1))[:, None])
    assert on_probs == pytest.approx(100 * np.mean(np.abs(q - q_cf)))
    u = rng.random(n)
    coupled = decision_cf_bias((u <= q).astype(int), (u <= q_cf).astype(int))
    assert coupled == pytest.approx(on_probs, abs=0.5)
    independent = decision_cf_bias((u <= q).astype(int), (rng.random(n) <= q_cf).astype(int))
    assert independent > on_probs + 10


def test_peers_refitted_on_the_same_answers_decide_the_same_rows_alike() -> None:
    """The counterfactual rows are a second ``peer_decisions`` call with the same seed: on the
    same inputs it must reproduce the first call's decisions exactly (refit included)."""
    rng = np.random.default_rng(1)
    n = 400
    b = np.where(rng.random(n) < 0.4, "a", "b")
    y = (rng.random(n) < 0.3 + 0.3 * (b == "a")).astype(np.int64)
    score = np.clip(0.3 * y + 0.2 * (b == "a") + 0.3 * rng.random(n), 0.01, 0.99)
    probs = np.stack([1 - score, score], axis=1)
    x = np.stack([score, rng.random(n)], axis=1).astype(np.float32)
    calib, test = Table(x[:300], y[:300], b[:300]), Table(x[300:], y[300:], b[300:])
    first = peer_decisions(calib, probs[:300], test, probs[300:], seed=3)
    again = peer_decisions(calib, probs[:300], test, probs[300:], seed=3)
    assert set(first) == set(again) and len(first) == 5
    for peer in first:
        assert np.array_equal(first[peer], again[peer]), peer


# --- counterfactual inputs ------------------------------------------------------------------


def test_compas_counterfactuals_flip_the_race_input_and_the_group() -> None:
    task = compas_task(0)
    cf = counterfactual_test(task)
    n, j = len(task.test), task.feature_names.index("african_american")
    assert cf.attribute == "african_american" and cf.k == 2 and cf.index.shape == (n, 1)
    q = cf.queries
    assert np.array_equal(q.X[:, j], 1.0 - task.test.X[:, j])
    others = [i for i in range(q.X.shape[1]) if i != j]
    assert np.array_equal(q.X[:, others], task.test.X[:, others])
    assert set(zip(task.test.b, q.b, strict=True)) == {
        ("African-American", "Caucasian"),
        ("Caucasian", "African-American"),
    }
    pool = cf.pool(task.test)
    assert np.array_equal(pool.X[cf.index[:, 0]], q.X)
    # x and x̄ share one value set (the row under each value), so cf_average ignores race
    assert np.array_equal(np.sort(pool.X[cf.values[:n]], axis=1),
                          np.sort(pool.X[cf.values[cf.index[:, 0]]], axis=1))  # fmt: skip


def test_flipped_inputs_refuse_a_column_that_disagrees_with_the_bias_groups() -> None:
    task = compas_task(0)
    wrong = Table(task.test.X, task.test.y, task.test.b[::-1].copy())
    with pytest.raises(ValueError, match="disagrees"):
        flipped_inputs(task, wrong)


def test_cmnist_counterfactuals_are_the_same_digit_recoloured(tmp_path) -> None:
    from bench.quality.datasets import cmnist_task

    _fake_mnist(tmp_path / "mnist_5k.npz")
    task = cmnist_task(seed=0, data_dir=tmp_path)
    cf = counterfactual_test(task)
    n = len(task.test)
    digits = n // 10
    assert len(cf.queries) == 0 and cf.k == 10 and cf.index.shape == (n, 9)
    gray, y = load_mnist(tmp_path)
    test_gray = gray[split(len(y), seed=0, fractions=(0.8, 0.0, 0.2), strata=y).test]
    for row in (0, digits + 3, n - 1):
        digit, colour = row % digits, row // digits
        others = [c for c in range(10) if c != colour]
        expected = colourise(np.repeat(test_gray[digit : digit + 1], 9, axis=0), np.array(others))
        assert np.array_equal(task.test.X[cf.index[row]], expected)
        assert (task.test.y[cf.index[row]] == task.test.y[row]).all()


def test_cf_average_is_blind_to_the_attribute_and_costs_k_calls() -> None:
    task = compas_task(0)
    cf = counterfactual_test(task)
    pool = cf.pool(task.test)
    j = task.feature_names.index("african_american")
    logit = 2.0 * pool.X[:, j] + 0.1 * pool.X[:, 1] - 1.0  # a model that reads race
    probs = np.stack([1 / (1 + np.exp(logit)), 1 / (1 + np.exp(-logit))], axis=1)
    assert cf.bias(probs) > 10.0
    averaged = cf.averaged(probs)
    assert cf.bias(averaged) == 0.0
    n = len(task.test)
    expected = (probs[:n] + probs[cf.index[:, 0]]) / 2
    assert np.allclose(averaged[:n], expected)


# --- FMD runs, summaries, targets, markdown -------------------------------------------------


def test_fmd_runs_have_their_own_model_the_input_attribute_and_no_bias_column_upload() -> None:
    task = compas_task(0)
    runs = [Run("compas", v, c, 0, task) for v in ("vanilla", "unfair") for c in ("full", "small")]
    planned = plan_fmd(runs)
    assert len(planned) == 1 and isinstance(planned[0], FmdRun)
    run = planned[0]
    assert run.gateway_model == "compas-vanilla-s0-fmd" and run.model().upstream == run.deployed
    assert run.spec_fields() == {"method": "fmd", "bias": ["african_american"]}
    model = ModelConfig.model_validate(
        {
            "name": run.gateway_model,
            "classes": task.classes,
            "input": {"shape": list(task.input_shape), "features": task.feature_names},
            "upstream": {"url": "http://127.0.0.1:1/v2/models/x/infer", "input_name": "x"},
        }
    )
    spec = TrainingJobSpec(model=run.gateway_model, target=task.target_name,
                           **run.spec_fields())  # fmt: skip
    name, data = calibration_file(task, task.small_calib, bias_column=False)
    assert b"race" not in data.split(b"\n", 1)[0].replace(b"african_american", b"")
    _, meta = check_upload(data, name, model, spec, TrainingSettings())
    assert meta.rows == len(task.small_calib)


def _row(avg: float, eo: float, cf: float) -> dict:
    return {"avg": avg, "worst": avg - 10, "eo": eo, "accuracy": avg + 1, "cf_bias": cf,
            "eod_fairlearn": None, "dpd_fairlearn": None,
            "groups": {"0,a": avg, "0,b": avg - eo}}  # fmt: skip


def _eraser_record(seed: int) -> dict:
    return {"setting": "compas", "variant": "vanilla", "calibration": "full", "seed": seed,
            "alpha": 1.0, "status": "validated", "calibration_rows": 700,
            "rows": {"raw": _row(64.0, 20.0, 10.0), "eraser": _row(64.0, 4.0, 12.0),
                     "eraser_tuned": _row(64.0, 4.0 + seed, 12.0),
                     "cf_average": _row(63.5, 15.0, 0.0)
                     | {"upstream_calls_per_decision": 2}}}  # fmt: skip


def _fmd_record(seed: int, cf: float, avg: float, stacked_eo: float) -> dict:
    return {"setting": "compas", "variant": "vanilla", "calibration": "full", "seed": seed,
            "row": "fmd", "alpha": 1.0, "status": "validated", "calibration_rows": 700,
            "job_s": 9.0, "verdict_counterfactual_bias": {"raw": {"estimate": 9.0}},
            "rows": {"raw": _row(64.0, 20.0, 10.0), "fmd": _row(avg, 18.0, cf),
                     "fmd_candidate": _row(avg, 18.0, cf),
                     "eraser_candidate": _row(64.0, 4.0, 12.0),
                     "eraser+fmd": _row(63.0, stacked_eo, 3.0)}}  # fmt: skip


def test_fmd_rows_and_targets_over_seeds_with_values_per_seed() -> None:
    eraser = [_eraser_record(0), _eraser_record(1)]
    fmd = [_fmd_record(0, 2.0, 63.5, 3.0), _fmd_record(1, 4.0, 62.0, 6.0)]
    rows, details = aggregate_fmd(fmd)
    summary = merge_rows(aggregate(eraser), rows)
    compas = summary["compas"]
    assert list(compas)[-3:] == ["vanilla.cf_average", "vanilla.fmd", "vanilla.eraser+fmd"]
    assert compas["vanilla.fmd"]["cf_bias"] == 3.0 and compas["vanilla.fmd"]["cf_bias_std"] > 0
    assert compas["vanilla.cf_average"]["upstream_calls_per_decision"] == 2
    assert compas["vanilla.eraser+fmd"]["replayed"] is True
    assert details["compas"]["fmd_candidate"]["cf_bias"] == 3.0
    checks = fmd_targets(summary, fmd, eraser)["compas, fmd"]
    cut = checks["fmd cf_bias cut >= 70%"]
    assert (cut["value"], cut["met"], cut["per_seed"]) == (70.0, True, [80.0, 60.0])
    drop = checks["fmd avg drop <= 1"]
    assert (drop["value"], drop["met"], drop["per_seed"]) == (1.25, False, [0.5, 2.0])
    stack = checks["eraser+fmd eo <= min(eraser_tuned, fmd)"]
    # stack 4.5 against min(eraser 4.5, fmd 18); per seed 3 − 4 and 6 − 5
    assert (stack["value"], stack["met"], stack["per_seed"]) == (0.0, True, [-1.0, 1.0])
    assert fmd_targets(aggregate(eraser), [], eraser) == {}


def test_markdown_has_a_cf_column_dashes_for_old_results_and_the_fmd_table() -> None:
    from bench.quality.markdown import section

    eraser = [_eraser_record(0), _eraser_record(1)]
    fmd = [_fmd_record(0, 2.0, 63.5, 3.0), _fmd_record(1, 4.0, 62.0, 6.0)]
    rows, details = aggregate_fmd(fmd)
    summary = merge_rows(aggregate(eraser), rows)
    meta = {"date": "2026-01-01", "cores": 2, "seeds": [0, 1], "command": "x", "wall_s": 60.0,
            "phases_s": {}}  # fmt: skip
    res = {"compas": summary["compas"], "_targets": fmd_targets(summary, fmd, eraser),
           "_meta": meta, "_runs": [], "_fmd": {"settings": details, "runs": fmd}}  # fmt: skip
    text = section(res, {})
    assert "| cf bias |" in text
    assert "### Counterfactual bias, `cf_average` and the FMD patch" in text
    assert "| 3.00 ± 1.41 |" in text  # the served FMD row's cf bias over seeds
    assert "(per seed 80.00 / 60.00)" in text
    old = {k: {m: v for m, v in r.items() if not m.startswith("cf_bias")}
           for k, r in aggregate(eraser)["compas"].items()}  # fmt: skip
    text = section({"compas": old, "_targets": {}, "_meta": meta, "_runs": []}, {})
    raw_line = next(line for line in text.splitlines() if "| raw deployed model |" in line)
    assert raw_line.split(" | ")[-3] == "—"  # cf bias column: not measured by that run
    assert counterfactual_section({"compas": {}}, {"compas": "COMPAS"}) == []


# --- the audit of the deployed models -------------------------------------------------------


def _model(name: str, task) -> ModelConfig:
    entry = {
        "name": name,
        "classes": task.classes,
        "input": {"shape": list(task.input_shape)},
        "upstream": {"url": "http://127.0.0.1:1/v2/models/x/infer", "input_name": "x"},
    }
    if task.feature_names is not None:
        entry["input"]["features"] = task.feature_names
    return ModelConfig.model_validate(entry)


def test_audit_uploads_pass_the_gateways_audit_validation(tmp_path) -> None:
    from bench.quality.audit_rows import AuditRun, audit_upload, plan_audits
    from bench.quality.datasets import cmnist_task
    from service.calibration.audit_input import load_audit_set
    from service.jobs.audits import AuditSpec

    task = compas_task(0)
    runs = [Run("compas", "vanilla", c, s, task) for s in (0, 1) for c in ("full", "small")]
    planned = plan_audits(runs)
    assert [(a.setting, a.seed, a.gateway_model) for a in planned] == [
        ("compas", 0, "compas-vanilla-s0")
    ]
    spec, files = audit_upload(planned[0])
    found = load_audit_set(files["data"][1], _model(spec["model"], task), AuditSpec(**spec),
                           100_000, None, files["data"][0]).describe()  # fmt: skip
    assert found.rows == len(task.test)
    assert found.attributes == {"african_american": "input_column", "sex": "input_column"}

    _fake_mnist(tmp_path / "mnist_5k.npz")
    images = cmnist_task(seed=0, data_dir=tmp_path)
    spec, files = audit_upload(AuditRun("cmnist", 0, images))
    audit = load_audit_set(files["data"][1], _model(spec["model"], images), AuditSpec(**spec),
                           100_000, files["pairs"][1], files["data"][0])  # fmt: skip
    digits = len(images.test) // 10
    assert audit.describe().rows == digits and audit.describe().attributes == {"colour": "pairs"}
    assert set(audit.describe().groups["colour"].values()) == {digits // 10}  # 10 equal groups
    (colour,) = audit.attributes
    assert colour.x_cf.shape == (digits, 9, 3, 28, 28)


def test_audit_records_keep_the_raw_stage_and_render_a_table() -> None:
    from bench.quality.audit_rows import AuditRun, audit_record

    interval = {"estimate": 6.33, "low": 6.05, "high": 6.59}
    result = {"rows": 1055, "queried_rows": 2110, "cached_outputs": False,
              "rows_per_second": 31618.34, "timings_s": {"query": 0.1}, "confidence": 0.9,
              "attributes": [{"attribute": "african_american", "source": "input_column",
                              "counterfactuals_per_row": 1,
                              "raw": {"bias": interval, "flip_share": interval},
                              "served": None}]}  # fmt: skip
    record = audit_record(AuditRun("compas", 0, compas_task(0)), {"result": result})
    assert record["rows_per_second"] == 31618.3
    assert record["attributes"]["african_american"]["bias"] == interval
    text = "\n".join(counterfactual_section({"_audit": [record]}, {"compas": "COMPAS"}))
    row = "| COMPAS | 0 | `african_american` | input_column | 1 | 1055 | 6.33 [6.05, 6.59] |"
    assert row in text
    assert text.rstrip().endswith("| 2110 | 31618 |")


def test_cf_average_bias_reads_the_counterfactuals_from_the_second_pass() -> None:
    task = compas_task(0)
    cf = counterfactual_test(task)
    n, pool = len(task.test), len(task.test) * 2
    first = np.tile([0.3, 0.7], (pool, 1))
    second = first.copy()
    second[cf.index[:5, 0]] = [0.4, 0.6]  # a black box that answered five x̄ otherwise
    assert cf.bias(first, cf_pool=first) == 0.0
    assert cf.bias(first, cf_pool=second) == pytest.approx(100 * 5 * 0.1 / n)


def test_cmnist_fmd_job_uploads_each_calibration_digit_in_the_nine_other_colours(
    tmp_path,
) -> None:
    from bench.quality.datasets import cmnist_task
    from service.calibration.pairs import read_pairs
    from service.errors import InvalidCalibrationSet

    _fake_mnist(tmp_path / "mnist_5k.npz")
    task = cmnist_task(0, tmp_path, rho_train=0.9, rho_calib=0.1)
    [run] = plan_fmd([Run("cmnist_rho90", "vanilla", "full", 0, task)])
    assert run.uploads_pairs and run.spec_fields() == {"method": "fmd", "bias": ["colour"]}
    name, data = calibration_pairs(task)
    model = ModelConfig.model_validate(
        {
            "name": run.gateway_model,
            "classes": task.classes,
            "input": {"shape": list(task.input_shape)},
            "upstream": {"url": "http://127.0.0.1:1/v2/models/x/infer", "input_name": "x"},
        }
    )
    x_cf = read_pairs(data, task.calib.X, model, ["colour"], InvalidCalibrationSet)["colour"]
    n = len(task.calib)
    assert name.endswith(".npz") and x_cf.shape == (n, 9, 3, 28, 28)
    colours = np.asarray(task.notes["calib_colours"])
    for i in (0, n // 2, n - 1):
        others = (colours[i] + np.arange(1, 10)) % 10
        assert colours[i] not in others
        expected = colourise(np.repeat(task.notes["calib_gray"][i : i + 1], 9, axis=0), others)
        assert np.array_equal(x_cf[i], expected)
