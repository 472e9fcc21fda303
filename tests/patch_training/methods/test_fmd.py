"""FMD's maths against brute force, and the method on a synthetic black box that uses a column."""

from __future__ import annotations

import numpy as np
import pytest

from deploy.local.processes import standin_model_config
from patch_training.audit import row_changes
from patch_training.folds import plan_rows
from patch_training.methods import influence as inf
from patch_training.methods.base import Counterfactuals, MethodInput
from service.calibration.audit_input import flipped_counterfactuals
from service.eraser_math import fair_log_probs, log_softmax
from service.jobs.spec import TrainingJobSpec
from service.settings import ModelConfig

N, D, K, M, L2 = 40, 3, 3, 2, 1e-2


@pytest.fixture(scope="module")
def problem() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    h = rng.normal(size=(N, D))
    ht = inf.with_bias(h)
    ht_cf = inf.with_bias(h[:, None, :] + 0.5 * rng.normal(size=(N, M, D)))
    t = np.exp(rng.normal(size=(N, K)))
    t /= t.sum(axis=1, keepdims=True)
    w = inf.fit_top_layer(ht, t, L2)
    return ht, ht_cf, t, w


def _numeric_gradient(f, w: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    out = np.zeros(w.size)
    for j in range(w.size):
        e = np.zeros(w.size)
        e[j] = eps
        out[j] = (f(w + e.reshape(w.shape)) - f(w - e.reshape(w.shape))) / (2 * eps)
    return out


def _weighted_refit(ht: np.ndarray, t: np.ndarray, weights: np.ndarray, reg: float, w0):
    """Brute force: Newton on Σ weight_i KL(t_i ‖ p_i) + (reg/2)‖W‖², Hessian by Kronecker."""
    w = w0.copy()
    for _ in range(30):
        p = inf.probs(w, ht)
        g = ((p - t) * weights[:, None]).T @ ht + reg * w
        h = reg * np.eye(w.size)
        for i in range(len(ht)):
            a = (np.diag(p[i]) - np.outer(p[i], p[i])) * weights[i]
            h += np.kron(a, np.outer(ht[i], ht[i]))
        w = w - np.linalg.solve(h, g.ravel()).reshape(w.shape)
    return w


def test_the_top_layer_is_at_its_optimum_and_h_is_its_exact_hessian(problem) -> None:
    ht, _, t, w = problem
    assert np.abs(inf.gradient(w, ht, t, L2)).max() < 1e-9
    numeric = np.stack(
        [
            _numeric_gradient(lambda v, j=j: inf.gradient(v, ht, t, L2).ravel()[j], w)
            for j in range(w.size)
        ]
    )
    assert np.allclose(inf.hessian(w, ht, L2), numeric, atol=1e-6)


def test_the_bias_gradient_matches_finite_differences(problem) -> None:
    ht, ht_cf, _, w = problem
    decision = np.argmax(ht @ w.T, axis=1)
    numeric = _numeric_gradient(lambda v: inf.smooth_bias(v, ht, ht_cf, decision), w)
    assert np.allclose(inf.bias_gradient(w, ht, ht_cf, decision).ravel(), numeric, atol=1e-8)
    # the smooth B is the audit's B up to ε
    audit = row_changes(log_softmax(ht @ w.T), log_softmax(ht_cf @ w.T)).change.mean()
    assert abs(inf.smooth_bias(w, ht, ht_cf, decision) - audit) < inf.SMOOTH_EPS


def test_influence_predicts_a_leave_one_out_retrain(problem) -> None:
    """Removing a row changes B by ≈ −I(z) (the penalty kept at λ·n)."""
    ht, ht_cf, t, w = problem
    decision = np.argmax(ht @ w.T, axis=1)
    unlearning = inf.unlearn(w, ht, ht_cf, t, L2, [0])
    before = inf.smooth_bias(w, ht, ht_cf, decision)
    for z in unlearning.order[[0, 1, -1]]:
        keep = np.setdiff1d(np.arange(N), [z])
        w_loo = inf.fit_top_layer(ht[keep], t[keep], L2 * N / (N - 1), w)
        actual = inf.smooth_bias(w_loo, ht, ht_cf, decision) - before
        assert actual == pytest.approx(-unlearning.influence[z], rel=0.25, abs=2e-4)


def test_the_newton_step_matches_a_retrain_with_counterfactual_replacement(problem) -> None:
    ht, ht_cf, t, w = problem
    unlearning = inf.unlearn(w, ht, ht_cf, t, L2, [1, 3])
    for k, step in zip(unlearning.ks, unlearning.steps, strict=True):
        top = unlearning.order[:k]
        keep = np.setdiff1d(np.arange(N), top)
        rows = np.concatenate([ht[keep], ht_cf[top].reshape(-1, D + 1)])
        targets = np.concatenate([t[keep], np.repeat(t[top], M, axis=0)])
        weights = np.concatenate([np.ones(len(keep)), np.full(k * M, 1 / M)])
        retrained = _weighted_refit(rows, targets, weights, L2 * N, w)
        assert np.abs(retrained - w - step).max() < 0.15 * np.abs(retrained - w).max()
        assert np.sign(step.ravel()) @ np.sign((retrained - w).ravel()) > 0.8 * w.size


def test_k_is_capped_at_the_harmful_rows(problem) -> None:
    ht, ht_cf, t, w = problem
    unlearning = inf.unlearn(w, ht, ht_cf, t, L2, [0, N])
    assert unlearning.ks == [0, unlearning.harmful]
    assert np.all(unlearning.steps[0] == 0)
    assert (unlearning.influence > 0).sum() == unlearning.harmful


# --- the method on a black box that uses a column --------------------------------------------

FEATURES = ["f0", "f1", "a"]


def synthetic(n: int = 900, seed: int = 0):
    """y depends on f0; the attribute a correlates with y and the black box leans on it."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < 0.8, y, 1 - y).astype(np.float32)
    f0 = (y - 0.5) + rng.normal(scale=1.0, size=n)
    f1 = rng.normal(size=n)
    x = np.stack([f0, f1, a], axis=1).astype(np.float32)

    def black_box(x: np.ndarray) -> np.ndarray:
        eta = 1.2 * x[..., 0] + 0.3 * x[..., 1] + 1.8 * (x[..., 2] - 0.5)
        return log_softmax(np.stack([np.zeros_like(eta), eta], axis=-1).astype(np.float64))

    return x, y, black_box


def fmd_input(**fmd: object) -> tuple[MethodInput, np.ndarray, object]:
    x, y, black_box = synthetic()
    attribute = flipped_counterfactuals("a", x, 2)
    model = ModelConfig.model_validate(standin_model_config("http://bb", "m", FEATURES))
    spec = TrainingJobSpec.model_validate(
        {"method": "fmd", "model": "m", "target": "y", "bias": ["a"], "seed": 0,
         "fmd": {"hidden": [16], "epochs": 60} | fmd}
    )  # fmt: skip
    plan = plan_rows(y, attribute.groups, 0.3, 3, 0.25, 0)
    t = plan.tuning
    cf = Counterfactuals(attribute.x_cf, black_box(attribute.x_cf))
    data = MethodInput(
        x[t], black_box(x[t]), y[t], attribute.groups[t], plan.folds, model, spec, cf.rows(t)
    )
    return data, plan.verdict, (x, y, black_box, attribute)


@pytest.mark.slow  # about 6 s on one core (training and the first ONNX export)
def test_the_unlearning_step_lowers_counterfactual_bias_and_exports_faithfully() -> None:
    import torch

    from patch_training.export.torch_onnx import check_parity, export_patch
    from patch_training.methods.fmd import Fmd

    torch.set_num_threads(1)
    data, verdict, (x, _, black_box, attribute) = fmd_input()
    fitted = Fmd().fit(data)
    curve = fitted.curve
    assert curve[0]["k_fraction"] == 0 and fitted.chosen > 0
    assert curve[fitted.chosen]["served_cf_bias"] < 0.7 * curve[0]["served_cf_bias"]
    assert curve[fitted.chosen]["surrogate_cf_bias"] < curve[0]["surrogate_cf_bias"]
    # judged out of fold on every tuning row; influence reported per tuning row
    assert len(fitted.judged) == len(data.y) and fitted.influence.shape == (len(data.y),)
    # the served patch lowers B on rows no step of the method saw (the verdict rows)
    blob = export_patch(fitted.served, [3])
    assert check_parity(fitted.served, blob, x[verdict][:256]) < 1e-4
    from patch_training.nets import predict_log

    log_g = predict_log(fitted.served, x[verdict])
    log_g_cf = predict_log(fitted.served, attribute.x_cf[verdict].reshape(-1, 3)).reshape(-1, 1, 2)
    raw = row_changes(black_box(x[verdict]), black_box(attribute.x_cf[verdict])).change.mean()
    fair = row_changes(
        fair_log_probs(black_box(x[verdict]), [log_g], [1.0]),
        fair_log_probs(black_box(attribute.x_cf[verdict]), [log_g_cf], [1.0]),
    ).change.mean()
    assert fair < 0.7 * raw


def test_no_k_is_chosen_when_none_lowers_the_bias() -> None:
    from patch_training.methods.fmd import Fmd

    data, _, _ = fmd_input(epochs=5, max_avg_acc_drop_pp=0.0, k_grid=[1.0])
    fitted = Fmd().fit(data)
    if fitted.chosen == 0:  # K = 0: an identity patch (S' = S)
        assert np.allclose(fitted.out_of_fold[fitted.judged], np.log(0.5), atol=1e-5)
    else:
        assert fitted.curve[1]["served_cf_bias"] < fitted.curve[0]["served_cf_bias"]


def test_fmd_refuses_input_without_counterfactuals() -> None:
    import dataclasses

    from patch_training.methods.fmd import Fmd

    data, _, _ = fmd_input()
    with pytest.raises(ValueError, match="counterfactuals"):
        Fmd().fit(dataclasses.replace(data, counterfactual=None))
