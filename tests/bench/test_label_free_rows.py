"""The quality benchmark's label-free rows: the ``poisoner_retrain`` laboratory row's weights
and loss (Poisoner Sec. 3.3), the summaries and targets of the label-free jobs, and their
BENCHMARKS.md table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.quality.datasets import Table, Task
from bench.quality.label_free_markdown import PAPER_CMNIST, label_free_section
from bench.quality.markdown import section
from bench.quality.poisoner_retrain import (
    RetrainConfig,
    gifl_loss,
    group_weights,
    retrain,
    retrain_decisions,
    supported,
)
from bench.quality.protocol import LABEL_FREE_ROWS, LabelFreeRun, Run, plan_label_free
from bench.quality.results import aggregate, aggregate_label_free, label_free_targets, merge_rows
from patch_training.nets.poisoned import BiasedModelConfig

# --- the retraining: weights (Eq. 8) and the group-wise inverse focal loss (Eq. 10-11) ------


def test_group_weights_give_each_part_the_whole_set_and_lambda_more_to_the_conflicting() -> None:
    conflicting = np.array([1, 0, 0, 0, 1, 0, 0, 0], dtype=bool)  # |D| 8, |D_a| 6, |D_c| 2
    w = group_weights(conflicting, lam=1.25)
    assert w[~conflicting] == pytest.approx(8 / 6) and w[conflicting] == pytest.approx(1.25 * 4)
    assert w[~conflicting].sum() == pytest.approx(8) and w[conflicting].sum() == pytest.approx(10)
    assert np.array_equal(group_weights(np.zeros(5, bool), 1.25), np.ones(5))  # nothing found
    assert np.array_equal(group_weights(np.ones(3, bool), 1.25), np.ones(3))


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -torch.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)


def test_gifl_scales_aligned_rows_by_the_ratio_of_the_groups_misfit() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.5], [3.0, -1.0]])
    y = torch.tensor([0, 1, 1, 0])
    conflicting = torch.tensor([False, False, True, True])
    w = torch.tensor([0.5, 0.5, 3.0, 3.0])
    p_y = torch.exp(-_ce(logits, y))
    p_a, p_c = p_y[:2].mean(), p_y[2:].mean()
    gamma = 1.0
    # By hand, Eq. 10-11: aligned (1 - p̄_a)^-γ, conflicting (1 - p̄_c)^-γ, β = (1 - p̄_c)^γ.
    factor = torch.tensor([(1 - p_a) ** -gamma] * 2 + [(1 - p_c) ** -gamma] * 2)
    expected = (w * (1 - p_c) ** gamma * factor * _ce(logits, y)).mean()
    assert gifl_loss(logits, y, conflicting, w, gamma).item() == pytest.approx(expected.item())
    # So: a conflicting row costs w·CE; an aligned one w·((1 - p̄_c)/(1 - p̄_a))^γ·CE.
    ratio = ((1 - p_c) / (1 - p_a)).item()
    ce = _ce(logits, y)
    hand = (0.5 * ratio * (ce[0] + ce[1]) + 3.0 * (ce[2] + ce[3])) / 4
    assert gifl_loss(logits, y, conflicting, w, gamma).item() == pytest.approx(hand.item())


def test_gifl_batch_means_carry_no_gradient_and_a_batch_without_conflicts_is_weighted_ce() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.5]], requires_grad=True)
    y = torch.tensor([0, 1, 1])
    w = torch.tensor([1.0, 2.0, 1.0])
    none = torch.zeros(3, dtype=torch.bool)
    loss = gifl_loss(logits, y, none, w, 1.0)
    assert loss.item() == pytest.approx((w * _ce(logits, y)).mean().item())
    # Gradient equals that of the loss with the batch factors frozen as constants.
    conflicting = torch.tensor([False, True, False])
    gifl_loss(logits, y, conflicting, w, 1.0).backward()
    grad = logits.grad.clone()
    logits.grad = None
    with torch.no_grad():
        p_y = torch.exp(-_ce(logits, y))
        ratio = (1 - p_y[1]) / (1 - p_y[[0, 2]].mean())
        scale = torch.tensor([ratio, 1.0, ratio])
    ((w * scale * _ce(logits, y)).mean()).backward()
    assert torch.allclose(grad, logits.grad, atol=1e-6)


def _tiny_task(n: int = 400, seed: int = 0) -> Task:
    """Two features: a shortcut equal to y on 85 % of rows and a weak real signal; the shortcut
    is also the bias attribute (values "a"/"b")."""
    rng = np.random.default_rng(seed)

    def table(m: int, rho: float) -> Table:
        y = rng.integers(0, 2, m)
        shortcut = np.where(rng.random(m) < rho, y, 1 - y)
        x = np.stack([shortcut + 0.1 * rng.normal(size=m), y + 1.5 * rng.normal(size=m)], 1)
        return Table(x.astype(np.float32), y.astype(np.int64), np.array(["a", "b"])[shortcut])

    train, test = table(n, 0.85), table(200, 0.5)
    return Task("compas", train, train, train, test, ["no", "yes"], ["a", "b"], "y", "s",
                ["shortcut", "signal"], (2,))  # fmt: skip


def test_retrain_partitions_by_f_b_and_reports_the_weights_it_used(tmp_path) -> None:
    task = _tiny_task()
    config = RetrainConfig(biased=BiasedModelConfig(steps=60, batch_size=32))
    net, info = retrain(task, seed=0, config=config)
    share = info["conflicting_pct"] / 100
    assert 0 < share < 1 and info["training_rows"] == len(task.train)
    assert info["weights"]["aligned"] == pytest.approx(1 / (1 - share), rel=1e-3)
    assert info["weights"]["conflicting"] == pytest.approx(1.25 / share, rel=1e-3)
    assert set(info["bias_discovery"]) >= {"precision_pct", "recall_pct", "agreement_pct"}
    assert not net.training and supported(task)
    pred, first = retrain_decisions(task, 0, tmp_path, config)
    assert pred.shape == (len(task.test),) and set(np.unique(pred)) <= {0, 1}
    again, cached = retrain_decisions(task, 0, tmp_path, config)
    assert cached["cached"] and np.array_equal(pred, again)
    assert cached["weights"] == first["weights"]


# --- summaries and targets ------------------------------------------------------------------


def _row(avg: float, worst: float, eo: float, acc: float) -> dict:
    return {"avg": avg, "worst": worst, "eo": eo, "accuracy": acc, "eod_fairlearn": 1.0,
            "dpd_fairlearn": 1.0, "groups": {"0,a": worst, "0,b": avg}}  # fmt: skip


def _eraser_run(seed: int, worst: float) -> dict:
    return {"setting": "compas", "variant": "vanilla", "calibration": "full", "seed": seed,
            "alpha": 1.0, "status": "validated", "calibration_rows": 700,
            "rows": {"raw": _row(64.0, 40.0, 20.0, 66.0), "eraser": _row(64.0, worst, 8.0, 65.0),
                     "eraser_tuned": _row(64.0, worst, 8.0, 65.0)}}  # fmt: skip


def _lf_run(seed: int, row: str, worst: float, eo: float, acc: float, status: str) -> dict:
    discovery = {"rows": 500, "misclassified_pct": 30.0 + seed, "conflicting_pct": 44.0,
                 "precision_pct": 70.0 + seed, "recall_pct": 60.0, "agreement_pct": 75.0,
                 "agreement_of_y_pct": 55.0, "rule": "assignment"}  # fmt: skip
    return {"setting": "compas", "variant": "vanilla", "calibration": "full", "seed": seed,
            "row": row, "alpha": 0.5, "status": status, "calibration_rows": 700,
            "job_s": 12.0 + seed, "verdict": {"rows": 140, "eo_bias_change": [-5.0, -9.0, -1.0]},
            "bias_discovery": {"tuning_out_of_fold": discovery,
                               "verdict_served_ensemble": discovery},
            "rows": {"raw": _row(64.0, 40.0, 20.0, 66.0), row: _row(63.0, worst, eo, acc),
                     f"{row}_candidate": _row(62.0, worst - 1, eo, acc)}}  # fmt: skip


def _retrain_run(seed: int) -> dict:
    return {"setting": "compas", "variant": "vanilla", "calibration": "training split",
            "calibration_rows": None, "seed": seed, "row": "poisoner_retrain",
            "training_rows": 3519, "conflicting_pct": 35.0,
            "bias_discovery": {"rows": 3519, "precision_pct": 60.0, "recall_pct": 47.0},
            "without_gifl": {"avg": 60.0, "worst": 52.0, "eo": 3.0, "accuracy": 60.0},
            "rows": {"poisoner_retrain": _row(59.0, 50.0, 4.0, 59.0)
                     | {"laboratory": True}}}  # fmt: skip


def _measured() -> tuple[list[dict], list[dict], list[dict]]:
    eraser = [_eraser_run(0, 52.0), _eraser_run(1, 54.0)]
    label_free = [
        _lf_run(0, "poisoner", 51.0, 9.0, 65.0, "validated"),
        _lf_run(1, "poisoner", 53.0, 11.0, 58.0, "validated"),  # lost 8 accuracy points
        _lf_run(0, "poisoner_eraser", 45.0, 12.0, 66.0, "rejected"),
        _lf_run(1, "poisoner_eraser", 47.0, 10.0, 66.0, "validated"),
    ]
    return eraser, label_free, [_retrain_run(0), _retrain_run(1)]


def test_label_free_summaries_count_rejections_and_keep_bias_discovery() -> None:
    eraser, label_free, retrains = _measured()
    rows, details = aggregate_label_free(label_free, retrains)
    served = rows["compas"]["vanilla.poisoner_eraser"]
    assert (served["n"], served["worst"], served["rejected_by_gate"]) == (2, 46.0, 1)
    assert served["alpha"] == [0.5, 0.5] and served["label_free"] is True
    lab = rows["compas"]["vanilla.poisoner_retrain"]
    assert lab["laboratory"] is True and lab["training_rows"] == 3519
    assert "rejected_by_gate" not in lab and lab["worst"] == 50.0
    compas = details["compas"]
    assert compas["candidate"]["poisoner"]["worst"] == 51.0  # the replayed patch, 52 - 1
    assert compas["job_s"]["poisoner"] == [12.0, 13.0]
    discovery = compas["bias_discovery"]["poisoner"]
    assert (discovery["precision_pct"], discovery["precision_pct_std"]) == (70.5, 0.71)
    assert compas["bias_discovery"]["poisoner_retrain"]["recall_pct"] == 47.0
    merged = merge_rows(aggregate(eraser), rows)["compas"]
    keys = list(merged)
    assert keys[:3] == ["vanilla.raw", "vanilla.eraser", "vanilla.eraser_tuned"]
    assert keys[-3:] == ["vanilla.poisoner", "vanilla.poisoner_eraser", "vanilla.poisoner_retrain"]


def test_label_free_targets_judge_each_served_row_with_values_per_seed() -> None:
    eraser, label_free, retrains = _measured()
    rows, _ = aggregate_label_free(label_free, retrains)
    summary = merge_rows(aggregate(eraser), rows)
    checks = label_free_targets(summary, label_free, eraser)
    compas = checks["compas, label-free"]
    # poisoner worst 52 against the Eraser's 53: within 2 points; per seed 51-52, 53-54.
    assert compas["poisoner worst >= eraser_tuned - 2"] == {
        "value": -1.0, "met": True, "per_seed": [-1.0, -1.0]}  # fmt: skip
    assert compas["poisoner_eraser worst >= eraser_tuned - 2"]["met"] is False
    assert compas["poisoner eo reduced >= 50%"]["value"] == 50.0
    assert compas["poisoner eo reduced >= 50%"]["per_seed"] == [55.0, 45.0]
    every = checks["label-free, every setting"]["validated patches' largest accuracy drop <= 5"]
    assert (every["value"], every["met"], every["validated"]) == (8.0, False, 3)
    assert every["per_seed"] == [1.0, 8.0]  # the rejected patch's accuracy does not count
    assert "cmnist_rho90, label-free" not in checks


# --- plan and markdown ----------------------------------------------------------------------


def test_label_free_runs_get_their_own_gateway_model_and_spec() -> None:
    task = _tiny_task()
    runs = [Run("compas", v, c, 0, task) for v in ("vanilla", "unfair") for c in ("full", "small")]
    planned = plan_label_free(runs)
    assert [r.row for r in planned] == list(LABEL_FREE_ROWS)
    assert {r.variant for r in planned} == {"vanilla"} and {r.calibration for r in planned} == {
        "full"
    }
    names = {r.gateway_model for r in planned}
    assert names == {"compas-vanilla-s0-poisoner", "compas-vanilla-s0-poisoner-eraser",
                     "compas-vanilla-s0-gce"}  # fmt: skip
    gce = next(r for r in planned if r.row == "gce")
    knobs = {"candidates": ["poisoner-eraser"], "loss": "gce"}
    assert gce.spec_fields() == {"method": "poisoner", "poisoner": knobs}
    assert isinstance(gce, LabelFreeRun) and gce.deployed == "compas-vanilla-s0"
    assert gce.model().upstream == "compas-vanilla-s0"  # the same black box


def test_markdown_puts_label_free_rows_in_their_own_table_with_targets_and_discovery() -> None:
    eraser, label_free, retrains = _measured()
    rows, details = aggregate_label_free(label_free, retrains)
    summary = merge_rows(aggregate(eraser), rows)
    res = {
        "compas": summary["compas"],
        "_targets": label_free_targets(summary, label_free, eraser),
        "_meta": {
            "date": "2026-01-01",
            "cores": 2,
            "seeds": [0, 1],
            "command": "x",
            "wall_s": 60.0,
            "phases_s": {"jobs": 1.0},
        },
        "_runs": [],
        "_label_free": {"settings": details, "runs": label_free},
    }
    text = section(res, {})
    assert "#### Label-free patches (Poisoner)" in text
    served = summary["compas"]["vanilla.poisoner"]
    cells = " | ".join(f"{served[m]:.2f} ± {served[f'{m}_std']:.2f}"
                       for m in ("avg", "worst", "eo", "accuracy"))  # fmt: skip
    assert f"| {cells} |" in text
    assert text.count("`poisoner_retrain`") >= 1 and "†" in text
    assert ": -1.00 (per seed -1.00 / -1.00)" in text  # a label-free target, per seed
    assert "**rejected**" not in text  # that marks the Eraser's per-seed table only
    main_table = text.split("#### Label-free")[0]
    assert "tempered log f_B" not in main_table  # label-free rows stay out of the Eraser table
    assert "70.5 ± 0.7" in text  # f_B's precision, mean ± std
    assert "60.00 / 52.00 / 3.00 / 60.00, against 59.00 / 50.00 / 4.00 / 59.00" in text
    assert str(PAPER_CMNIST["Poisoner"][2]) not in text  # the paper's C-MNIST figure: C-MNIST only
    cmnist = label_free_section("cmnist", "C-MNIST", summary["compas"], details["compas"], [], {})
    assert "37.40" in "\n".join(cmnist) and "not a measurement of this benchmark" in "\n".join(
        cmnist
    )
    assert label_free_section("compas", "COMPAS", aggregate(eraser)["compas"], None, [], {}) == []


def test_an_earlier_label_free_run_fills_only_the_settings_not_measured_here(tmp_path) -> None:
    import orjson

    from bench.quality.__main__ import _join_label_free

    earlier = {
        "label_free": [
            {"setting": "cmnist", "row": "poisoner", "seed": 0},
            {"setting": "compas", "row": "poisoner", "seed": 0, "from": "earlier"},
        ],
        "retrain": [{"setting": "cmnist", "row": "poisoner_retrain", "seed": 0}],
    }
    path = tmp_path / "label_free_measured.json"
    path.write_bytes(orjson.dumps(earlier))
    measured = {"label_free": [{"setting": "compas", "row": "poisoner", "seed": 0}], "retrain": []}
    _join_label_free(measured, path, {"compas", "adult"})
    assert [r["setting"] for r in measured["label_free"]] == ["compas", "cmnist"]
    assert "from" not in measured["label_free"][0]
    assert [r["setting"] for r in measured["retrain"]] == ["cmnist"]


def test_a_run_carries_only_what_it_did_not_measure_with_the_earlier_date() -> None:
    from bench.quality.__main__ import _carry

    earlier = {
        "_meta": {"date": "2026-11-01", "command": "make bench-quality"},
        "compas": {"vanilla.raw": {"avg": 1.0}},
        "cmnist_aug": {"vanilla.raw": {"avg": 2.0}},
        "_outer_cv": {"compas": {}},
        "_stacked": {"adult": {}},
        "_runs": [{"setting": "compas", "seed": 0}, {"setting": "cmnist_aug", "seed": 0}],
    }
    res = {"compas": {"vanilla.raw": {"avg": 3.0}}, "_stacked": {"adult": {"new": 1}},
           "_runs": [{"setting": "compas", "seed": 0, "new": True}]}  # fmt: skip
    _carry(res, earlier)
    assert res["compas"] == {"vanilla.raw": {"avg": 3.0}}
    assert res["_stacked"] == {"adult": {"new": 1}}
    assert res["cmnist_aug"] == earlier["cmnist_aug"] and res["_outer_cv"] == earlier["_outer_cv"]
    assert [r["setting"] for r in res["_runs"]] == ["compas", "cmnist_aug"]
    assert res["_carried"] == {"sections": ["_outer_cv"], "settings": ["cmnist_aug"],
                               "date": "2026-11-01", "command": "make bench-quality"}  # fmt: skip
